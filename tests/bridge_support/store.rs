//! The embedded historian next to the bridge, and the points it stores, counted through
//! the public `ts.query` (what a user gets back, not what a worker says it wrote).

use std::collections::BTreeSet;
use std::time::Duration;

use dtaas_schemas::subject;
use dtaas_schemas::telemetry::{FieldValue, TelemetryRecord};
use dtaas_test_harness::worker::spawn_worker;
use dtaas_test_harness::Process;

use super::{Setup, STEP};

impl Setup {
    /// Starts `dtaas historian` (embedded store) on the test's NATS and data directory.
    pub fn start_historian(&self) -> Process {
        spawn_worker(env!("CARGO_BIN_EXE_dtaas").as_ref(), "historian", &self.env)
            .expect("dtaas historian")
    }

    /// The stored points of `field` of `pt`/`measurement` from the last day on, in time
    /// order, or `None` while the historian does not answer.
    pub async fn stored(
        &self,
        pt: &str,
        measurement: &str,
        field: &str,
    ) -> Option<Vec<(i64, FieldValue)>> {
        let subject = subject::request("test", "ts", "query").unwrap();
        let body = serde_json::json!({"pt": pt, "measurement": measurement,
            "fields": [field], "from": "-1d", "to": "2100-01-01T00:00:00Z",
            "limit": 1_000_000});
        let request = self
            .client
            .request(subject, serde_json::to_vec(&body).unwrap().into());
        let reply = tokio::time::timeout(STEP, request).await.ok()?.ok()?;
        let reply: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
        let points = match reply["series"].as_array()?.first() {
            Some(series) => series["points"].clone(),
            None => return Some(Vec::new()),
        };
        serde_json::from_value(points).ok()
    }

    /// Waits until the historian answers `ts.query`.
    pub async fn wait_historian(&self) {
        let ready = async {
            while self.stored("ready", "ready", "v").await.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        super::within(Duration::from_secs(60), "the historian answers", ready).await;
    }

    /// Polls `stored` until it holds at least `count` points, for at most `limit`;
    /// returns what is stored then.
    pub async fn wait_stored(
        &self,
        pt: &str,
        measurement: &str,
        field: &str,
        count: usize,
        limit: Duration,
    ) -> Vec<(i64, FieldValue)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let points = self.stored(pt, measurement, field).await;
            let points = points.unwrap_or_default();
            if points.len() >= count || tokio::time::Instant::now() >= deadline {
                return points;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The integer values of `points`, in their (time) order.
pub fn int_values(points: &[(i64, FieldValue)]) -> Vec<i64> {
    points
        .iter()
        .map(|(_, v)| match v {
            FieldValue::I64(i) => *i,
            FieldValue::F64(f) => *f as i64,
            other => panic!("not a number: {other:?}"),
        })
        .collect()
}

/// Asserts that the historian stored every distinct record of `pt`'s
/// `publish_sequence` that reached `DTAAS_TEL` as a point of its own, and that every
/// sequence number 0..count is among them. A message the broker delivered again is a
/// new record with its own arrival stamp; a publish the bridge retried is the same
/// record again (same stamp), which the store keeps once.
pub async fn assert_sequence_stored(
    setup: &Setup,
    js: &async_nats::jetstream::Context,
    pt: &str,
    count: u64,
) {
    let filter = subject::telemetry(pt, "seq").unwrap();
    let mut records = BTreeSet::new();
    for message in super::read_all(js, "DTAAS_TEL", &filter).await {
        let record: TelemetryRecord = dtaas_schemas::codec::decode(None, &message.payload).unwrap();
        records.insert((
            record.ts,
            record.fields["seq"].clone().as_f64().unwrap() as i64,
        ));
    }
    let points = setup
        .wait_stored(pt, "seq", "seq", records.len(), Duration::from_secs(120))
        .await;
    let stored: BTreeSet<(i64, i64)> = points
        .iter()
        .map(|(ts, _)| *ts)
        .zip(int_values(&points))
        .collect();
    assert_eq!(points.len(), stored.len());
    assert_eq!(
        stored.len(),
        records.len(),
        "every distinct record in DTAAS_TEL is a stored point of its own"
    );
    assert!(
        stored == records,
        "the stored points are the records in DTAAS_TEL"
    );
    let seqs: BTreeSet<i64> = stored.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(
        seqs,
        (0..count as i64).collect(),
        "every sequence number stored"
    );
}

/// After a hostile input: 20 separate QoS 1 sentinel messages on `pt` are all stored
/// (counted through `ts.query`), and the bridge answers `$SRV.PING`.
pub async fn assert_still_serving(setup: &Setup, pt: &str) {
    let topic = format!("dtaas/pt/{pt}/tel/sentinel");
    let sentinels: Vec<String> = (0..20).map(|i| format!(r#"{{"s":{i}}}"#)).collect();
    tokio::task::block_in_place(|| {
        super::mosquitto_pub_lines(setup.broker.port(), &["-q", "1"], &topic, &sentinels)
    });
    let points = setup
        .wait_stored(pt, "sentinel", "s", 20, Duration::from_secs(120))
        .await;
    assert_eq!(
        int_values(&points),
        (0..20).collect::<Vec<_>>(),
        "sentinels stored after the hostile input; bridge log:\n{}",
        setup.bridge.log_tail()
    );
    let ping = setup.client.request("$SRV.PING.dtaas-bridge", "".into());
    let reply = super::within(STEP, "$SRV.PING.dtaas-bridge", ping)
        .await
        .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["name"], "dtaas-bridge", "{reply}");
}
