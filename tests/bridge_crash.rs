//! The bridge is killed with SIGKILL while a QoS 1 publisher sends 3,000 numbered
//! messages without timestamps; after a restart every number is in `DTAAS_TEL`, and
//! every record there is a point of its own in the embedded historian.

mod bridge_support;

use std::time::Duration;

use bridge_support::*;

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_publishing_loses_nothing() {
    let mut setup = Setup::start(&[]).await;
    let _historian = setup.start_historian();
    let port = setup.broker.port();
    const COUNT: u64 = 3000;
    let bridge = &mut setup.bridge;
    publish_sequence(port, "crash", COUNT, |i| {
        if i == 1000 {
            bridge.kill();
        }
        if i == 2000 {
            bridge.start().expect("bridge restarts");
        }
    })
    .await;
    let seqs = poll_until(
        Duration::from_secs(120),
        || sequences(&setup.js, "crash"),
        |s| s.len() as u64 == COUNT,
    )
    .await;
    let missing: Vec<i64> = (0..COUNT as i64).filter(|i| !seqs.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{} sequence numbers missing, first {:?}; stats {}; bridge log:\n{}",
        missing.len(),
        &missing[..missing.len().min(20)],
        setup.stats().await,
        setup.bridge.log_tail()
    );
    assert_sequence_stored(&setup, &setup.js, "crash", COUNT).await;
}
