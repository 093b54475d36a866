//! The example configuration in `deploy/` is valid for every worker, so a user can
//! start from it.

use std::path::Path;

#[test]
fn deploy_example_config_is_valid_for_every_worker() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/dtaas.toml");
    let config = dtaas_runtime::Config::load(Some(&path)).unwrap();
    dtaas_bridge::config::BridgeConfig::load(&config).unwrap();
    dtaas_historian::HistorianConfig::load(&config).unwrap();
    dtaas_graph::config::GraphConfig::load(&config).unwrap();
    dtaas_exec::config::ExecConfig::load(&config).unwrap();
}

#[test]
fn kubernetes_manifests_give_seeds_as_the_workers_read_them() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s/workers.yaml");
    let manifests = std::fs::read_to_string(path).unwrap();
    let seeds = manifests
        .lines()
        .find_map(|line| line.trim().strip_prefix("DTAAS_NATS_URL:"))
        .expect("the ConfigMap sets DTAAS_NATS_URL");
    let urls: dtaas_runtime::config::NatsUrls = seeds.trim().trim_matches('"').parse().unwrap();
    assert_eq!(urls.servers().len(), 3, "{seeds}");
}
