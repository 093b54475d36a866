//! A bridge task that panics ends `dtaas bridge` with a non-zero exit and the panic in
//! its log, instead of a bridge that runs on without its uplink (or downlink).
//! The panic is injected with `DTAAS_TEST_PANIC_TASK` (debug builds only).

mod bridge_support;

use std::time::Duration;

use bridge_support::*;

/// Generous: the machine is small and shared.
const EXIT_WITHIN: Duration = Duration::from_secs(60);

async fn exits_non_zero_when(task: &str) {
    let mut setup = Setup::spawn(
        Broker::mosquitto(),
        &[("DTAAS_TEST_PANIC_TASK", task)],
        None,
    )
    .await;
    let code = setup.bridge.wait(EXIT_WITHIN).expect("the bridge exits");
    let log = setup.bridge.log();
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit code {code:?}:\n{log}"
    );
    assert!(
        log.contains("injected panic") && log.contains(&format!("task=\"{task}\"")),
        "{log}"
    );
    assert!(log.contains("bridge worker failed"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_uplink_ends_the_bridge_with_a_non_zero_exit() {
    exits_non_zero_when("uplink").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_downlink_ends_the_bridge_with_a_non_zero_exit() {
    exits_non_zero_when("downlink").await;
}
