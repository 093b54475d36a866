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
}
