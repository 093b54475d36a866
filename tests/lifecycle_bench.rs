//! Figures of the lifecycle worker for docs/lifecycle.md (ignored by default; run with
//! `cargo test --release --test lifecycle_bench -- --ignored --nocapture`):
//! `dt.get` / `dt.list` latency percentiles, `execute` until the first process runs,
//! and 100 DTs created, executed and terminated with the process and file-descriptor
//! counts of lifecycle and exec before and after; how fast a burst of process events
//! is taken into the registry.

mod exec_support;
mod lifecycle_support;

use std::time::{Duration, Instant};

use exec_support::fds_and_children;
use futures::StreamExt;
use lifecycle_support::{put_sleeper, run_sleeper, Platform, WAIT};
use serde_json::json;
use tokio::time::timeout;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn counts(p: &mut Platform, name: &str) -> (usize, usize, usize) {
    let pid = p.process(name).pid().expect("running");
    fds_and_children(pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand for the figures in docs/lifecycle.md"]
async fn lifecycle_figures() {
    let mut p = Platform::start(&["n1"], &["assets", "lifecycle"]).await;
    put_sleeper(&p).await;
    let config =
        |id: &str| json!({"config": {"id": id, "assets": [{"name": "s", "asset": "sleeper"}]}});
    for i in 0..100 {
        p.ok("alice", "create", config(&format!("idle-{i}"))).await;
    }
    for verb in ["get", "list"] {
        let mut times = Vec::new();
        for i in 0..300 {
            let started = Instant::now();
            let body = match verb {
                "get" => json!({"id": format!("idle-{}", i % 100)}),
                _ => json!({}),
            };
            p.ok("alice", verb, body).await;
            times.push(started.elapsed());
        }
        times.sort();
        println!(
            "dt.{verb} with 100 DTs registered: p50 {:?}, p99 {:?}",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
    let before_lifecycle = counts(&mut p, "lifecycle");
    let before_exec = counts(&mut p, "exec-n1");
    let mut first_process = Vec::new();
    let loop_started = Instant::now();
    for i in 0..100 {
        let id = format!("loop-{i}");
        p.ok("alice", "create", config(&id)).await;
        let mut started = p
            .client
            .subscribe(format!("dtaas.v1.evt.proc.{id}.started"))
            .await
            .unwrap();
        let t = Instant::now();
        p.ok("alice", "execute", json!({"id": id})).await;
        timeout(WAIT, started.next()).await.unwrap();
        first_process.push(t.elapsed());
        p.ok("alice", "terminate", json!({"id": id})).await;
    }
    let loop_time = loop_started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_lifecycle = counts(&mut p, "lifecycle");
    let after_exec = counts(&mut p, "exec-n1");
    first_process.sort();
    println!(
        "execute until the first process runs: p50 {:?}, p99 {:?}",
        percentile(&first_process, 0.5),
        percentile(&first_process, 0.99)
    );
    println!("100 × create + execute + terminate: {loop_time:?}");
    println!(
        "lifecycle (fds, threads, children) before {before_lifecycle:?} after {after_lifecycle:?}"
    );
    println!("exec (fds, threads, children) before {before_exec:?} after {after_exec:?}");
    assert_eq!(after_exec.2, before_exec.2, "exec keeps no child process");
    assert!(
        after_lifecycle.0 <= before_lifecycle.0 + 5,
        "lifecycle's fds grew"
    );
}

/// Process events published in one burst by the throughput figure.
const BURST: u32 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand for the figures in docs/lifecycle.md"]
async fn process_event_throughput() {
    use dtaas_schemas::exec::{ProcessEvent, ProcessEventKind};
    let p = Platform::start(&["n1"], &["assets", "lifecycle"]).await;
    put_sleeper(&p).await;
    let running = run_sleeper(&p, "burst").await;
    let process = &running["processes"][0];
    let js = async_nats::jetstream::new(p.client.clone());
    let started = Instant::now();
    let mut acks = Vec::new();
    // `restarted` events of the running process, as exec would publish them; the
    // registry shows the last one's count once every one was taken, in order.
    for restarts in 1..=BURST {
        let event = ProcessEvent {
            dt: "burst".into(),
            role: process["role"].as_str().unwrap().into(),
            node: process["node"].as_str().unwrap().into(),
            pid: process["pid"].as_u64().unwrap() as u32,
            status: ProcessEventKind::Restarted,
            exit_code: Some(0),
            signal: None,
            restarts,
            at: dtaas_schemas::time::now_ns(),
            detail: None,
        };
        let body = serde_json::to_vec(&event).unwrap();
        acks.push(
            js.publish(event.subject().unwrap(), body.into())
                .await
                .unwrap(),
        );
    }
    for ack in acks {
        timeout(WAIT, ack).await.unwrap().unwrap();
    }
    let published = started.elapsed();
    p.until("alice", "burst", "every event is taken", |dt| {
        dt["processes"][0]["restarts"] == BURST
    })
    .await;
    let taken = started.elapsed();
    println!(
        "{BURST} process events: published in {published:?}, taken in {taken:?} ({:.0}/s)",
        f64::from(BURST) / taken.as_secs_f64()
    );
    p.ok("alice", "terminate", json!({"id": "burst"})).await;
}
