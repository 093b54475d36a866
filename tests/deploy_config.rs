//! The example configuration in `deploy/` is valid for every worker, so a user can
//! start from it, and the cluster and Kubernetes configurations give the seeds and the
//! login as the workers read them.

use std::path::Path;

use dtaas_runtime::Config;

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
    // The ConfigMap as a worker's environment, with the Secret's password: it loads,
    // with the seeds, the login and three replicas.
    let data: std::collections::HashMap<String, String> = manifests
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("DTAAS_"))
        .filter_map(|line| line.split_once(": "))
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.split('#')
                    .next()
                    .unwrap()
                    .trim()
                    .trim_matches('"')
                    .to_owned(),
            )
        })
        .collect();
    let with_password = |name: &str| match name {
        "DTAAS_NATS_PASSWORD" => Some("from-the-secret".to_owned()),
        other => data.get(other).cloned(),
    };
    let config = Config::from_toml("", "deploy/k8s/workers.yaml", &with_password).unwrap();
    assert_eq!(config.nats_url.servers().len(), 3);
    assert_eq!(config.replicas, 3);
    assert!(config.nats_auth.user.is_some());
    // A user without a password cannot log in, so no Deployment may start without it.
    assert!(
        !manifests.contains("optional: true"),
        "DTAAS_NATS_USER needs the password: the Secret must not be optional"
    );
}

/// Each worker of the platform runs from the Kubernetes manifests, with the ConfigMap
/// and the Secret's password, and exec nodes from the image target that has python3.
#[test]
fn kubernetes_manifests_run_every_worker() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifests = std::fs::read_to_string(root.join("deploy/k8s/workers.yaml")).unwrap();
    for document in manifests.split("\n---\n").filter(|d| d.contains("args: [")) {
        assert!(
            document.contains("configMapRef: { name: dtaas }"),
            "{document}"
        );
        assert!(document.contains("key: nats-password"), "{document}");
    }
    // Every configuration section but `accounting` (exec meters) is a worker.
    let workers = dtaas_runtime::config::SECTIONS
        .iter()
        .filter(|s| **s != "accounting");
    for worker in workers {
        let args = format!("args: [\"{worker}\"]");
        assert!(
            manifests.contains(&args),
            "no manifest runs `dtaas {worker}`"
        );
    }
    assert!(manifests.contains("image: dtaas-exec:latest"));
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    assert!(dockerfile.contains("AS exec") && dockerfile.contains("python3"));
}

/// Every `deploy/nats/cluster-*.conf` names, in its comment, the seeds workers take: the
/// client port (`listen`) of every node its routes name, as one comma-separated list.
#[test]
fn cluster_configurations_state_the_seeds_of_their_nodes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats");
    for node in 1..=3 {
        let text = std::fs::read_to_string(dir.join(format!("cluster-{node}.conf"))).unwrap();
        let comment: String = text
            .lines()
            .filter_map(|line| line.strip_prefix('#'))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("");
        let seeds = comment
            .split("DTAAS_NATS_URL=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the comment states DTAAS_NATS_URL");
        let urls: dtaas_runtime::config::NatsUrls = seeds.parse().unwrap();
        let port = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("listen: 0.0.0.0:"))
            .expect("a client listen line");
        let hosts: Vec<&str> = text
            .lines()
            .filter_map(|line| line.trim().strip_prefix("nats://"))
            .filter_map(|route| route.split(':').next())
            .collect();
        let expected: Vec<String> = hosts
            .iter()
            .map(|host| format!("nats://{host}:{port}"))
            .collect();
        assert_eq!(urls.to_string(), expected.join(","), "cluster-{node}.conf");
    }
}
