//! End-to-end fuzzing: mutated MQTT payloads on mutated topics, and mutated requests
//! to every endpoint, thrown at running `dtaas bridge`, `historian` and `graph` on real
//! mosquitto and nats-server, with sentinel readings sent alongside. Afterwards every
//! request has been answered (never a timeout), every worker answers `$SRV.PING`, and
//! every sentinel is stored (counted through `ts.query`).
//!
//! `DTAAS_FUZZ_CASES` sets how many inputs of each kind (300 by default, for CI);
//! `DTAAS_FUZZ_SEED` the seed (printed, so a failing run can be repeated).

mod bridge_support;

use std::time::Duration;

use bridge_support::*;
use dtaas_schemas::subject;
use dtaas_test_harness::mutate;
use dtaas_test_harness::worker::spawn_worker;
use rumqttc::{AsyncClient, MqttOptions, QoS};

/// A small deterministic generator (xorshift64*), so a seed repeats a run exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `seed` with a few random edits (`dtaas_test_harness::mutate`).
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let edits: Vec<mutate::Edit> = (0..self.below(6))
            .map(|_| (self.next() as usize, self.next() as u8, self.next() as u8))
            .collect();
        mutate::apply(seed, &edits)
    }
}

const PAYLOADS: &[&str] = &[
    r#"{"temp":21.5,"heater":{"on":true},"ts":1700000000123}"#,
    r#"[{"v":1},{"v":2,"ts":1700000000},3,"x",true]"#,
    "weather,room=lab temp=19.5,count=3i 1700000000000000000\nhum rh=55.5",
    "42",
    "",
];

const TOPICS: &[&str] = &[
    "dtaas/pt/fz1/tel/env",
    "dtaas/pt/fz2/tel/lp",
    "dtaas/pt/fz1/cmd/heater/ack",
    "dtaas/pt//tel/x",
    "dtaas/pt/a.b/tel/c",
];

/// (service, verb, body) seeds for requests.
const REQUESTS: &[(&str, &str, &str)] = &[
    (
        "ts",
        "query",
        r#"{"pt":"fz1","measurement":"env","from":"-1h","every":"10s","agg":"mean","limit":10}"#,
    ),
    ("ts", "latest", r#"{"pt":"fz1"}"#),
    (
        "cmd",
        "send",
        r#"{"pt":"fz1","command":"heater","payload":{"on":true},"ttl_ms":1000}"#,
    ),
    ("cmd", "status", r#"{"id":"0193abc"}"#),
    ("bridge", "stats", "{}"),
    ("graph", "tree", r#"{"dt":"factory"}"#),
    ("graph", "commands", r#"{"pt":"fz1","from":"-1h"}"#),
];

fn cases() -> usize {
    std::env::var("DTAAS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_survive_mutated_payloads_and_requests() {
    let setup = Setup::start(&[]).await;
    let _historian = setup.start_historian();
    let _graph = spawn_worker(env!("CARGO_BIN_EXE_dtaas").as_ref(), "graph", &setup.env)
        .expect("dtaas graph");
    setup.wait_historian().await;
    let seed = std::env::var("DTAAS_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f00d_u64);
    println!("DTAAS_FUZZ_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let cases = cases();

    // MQTT: mutated payloads on mutated topics, a numbered sentinel after every tenth.
    let mut options = MqttOptions::new("fuzzer", "127.0.0.1", setup.broker.port());
    options
        .set_max_packet_size(1 << 24, 1 << 24)
        .set_inflight(50);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let poller = tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    // The sentinels have a well-behaved client of their own: the fuzzer's may be
    // disconnected by the broker for what it sends.
    let mut options = MqttOptions::new("sentinel", "127.0.0.1", setup.broker.port());
    options.set_clean_session(false);
    let (sentinel, mut eventloop) = AsyncClient::new(options, 100);
    let sentinel_poller = tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let mut sentinels = 0;
    for i in 0..cases {
        let seed = TOPICS[rng.below(TOPICS.len())];
        let topic = rng.mutate(seed.as_bytes());
        // Only topics a broker takes reach the bridge: no wildcards, no control
        // characters (mosquitto disconnects a client that sends them), valid UTF-8.
        let topic: String = String::from_utf8_lossy(&topic)
            .chars()
            .map(|c| match c {
                '+' | '#' => '_',
                c if c.is_control() => '_',
                c => c,
            })
            .collect();
        // MQTT topics have at most 65,535 bytes.
        let mut topic = topic;
        while topic.len() > 60_000 {
            topic.pop();
        }
        let topic = if topic.is_empty() {
            "empty".to_owned()
        } else {
            topic
        };
        let seed = PAYLOADS[rng.below(PAYLOADS.len())];
        let body = rng.mutate(seed.as_bytes());
        let publish = client.publish(topic, QoS::AtLeastOnce, false, body);
        within(STEP, "fuzz publish", publish).await.unwrap();
        if i % 10 == 0 {
            let body = format!(r#"{{"s":{sentinels}}}"#);
            let publish =
                sentinel.publish("dtaas/pt/sentinel/tel/fz", QoS::AtLeastOnce, false, body);
            within(STEP, "sentinel publish", publish).await.unwrap();
            sentinels += 1;
        }
    }

    // Requests: every one is answered, with a reply or an error reply, in time.
    for _ in 0..cases {
        let (service, verb, body) = REQUESTS[rng.below(REQUESTS.len())];
        let body = rng.mutate(body.as_bytes());
        let subject = subject::request("fuzz", service, verb).unwrap();
        let request = setup.client.request(subject.clone(), body.clone().into());
        let reply = within(STEP, &format!("a reply on {subject}"), request).await;
        assert!(
            reply.is_ok(),
            "{subject} {:?}: {reply:?}\nbridge log:\n{}",
            String::from_utf8_lossy(&body),
            setup.bridge.log_tail()
        );
    }

    let points = setup
        .wait_stored("sentinel", "fz", "s", sentinels, Duration::from_secs(180))
        .await;
    assert_eq!(
        int_values(&points),
        (0..sentinels as i64).collect::<Vec<_>>(),
        "every sentinel stored; bridge log:\n{}",
        setup.bridge.log_tail()
    );
    for worker in ["dtaas-bridge", "dtaas-historian", "dtaas-graph"] {
        let ping = setup
            .client
            .request(format!("$SRV.PING.{worker}"), "".into());
        within(STEP, worker, ping).await.unwrap();
    }
    poller.abort();
    sentinel_poller.abort();
}
