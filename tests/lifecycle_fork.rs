//! What-if forks fed by recorded data, against real parts (nats-server, a `dtaas
//! exec` node running Python DT processes, the asset library, lifecycle, the
//! historian and the graph as `dtaas` processes): a fork of a doubler with another
//! factor, replayed the telemetry the historian recorded, produces an output for
//! every recorded record and never sees live data. The replay starts when the fork's
//! processes answered `ctl.ready`, or `replay_delay` after a process that does not.

mod exec_support;
mod lifecycle_support;

use std::time::Duration;

use dtaas_schemas::time::{format_rfc3339, now_ns};
use futures::StreamExt;
use lifecycle_support::{cli_ok, tree_until, Platform, WAIT};
use serde_json::{json, Value};
use tokio::time::timeout;

const DOUBLER: &[u8] = include_bytes!("lifecycle_support/doubler.py");
/// Subscribes 2 s after it started and never answers `ctl.ready`.
const LATE: &[u8] = include_bytes!("lifecycle_support/late.py");

/// Records the test puts into the historian before forking.
const RECORDED: i64 = 50;

/// A value no recorded record has: published live while the fork runs.
const LIVE: f64 = 1000.0;

/// Puts `alice/doubler`: output `y` = `factor` × input `x`, factor within 1..=10.
async fn put_doubler(p: &Platform) {
    p.put_asset(
        "alice",
        "doubler",
        &[("doubler.py", DOUBLER, 0o644)],
        json!({"inputs": [{"name": "x", "type": "number"}],
               "outputs": [{"name": "y", "type": "number"}],
               "params": [{"name": "factor", "type": "integer", "default": 2,
                           "min": 1, "max": 10}]}),
        json!({"command": ["python3", "doubler.py"]}),
    )
    .await;
}

/// Publishes `val = value` of PT `pt-f` at `ts` (ns), as a PT would.
async fn publish_val(p: &Platform, ts: i64, value: f64) {
    let record = json!({"pt": "pt-f", "measurement": "val", "ts": ts, "fields": {"val": value}});
    p.client
        .publish("dtaas.v1.tel.pt-f.val", record.to_string().into())
        .await
        .unwrap();
}

/// The points of `pt`/`measurement` over the last hour (the historian's public query),
/// `[]` while the historian does not answer.
async fn points(p: &Platform, pt: &str, measurement: &str, from: &str, to: &str) -> Vec<Value> {
    let request = json!({"pt": pt, "measurement": measurement, "from": from, "to": to});
    let Ok(Ok(reply)) = timeout(
        Duration::from_secs(5),
        p.client
            .request("dtaas.v1.alice.ts.query", request.to_string().into()),
    )
    .await
    else {
        return Vec::new();
    };
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    reply["series"][0]["points"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Polls `points` until `check` accepts them.
async fn points_until(
    p: &Platform,
    pt: &str,
    (from, to): (&str, &str),
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let measurement = if pt == "pt-f" { "val" } else { "y" };
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = Vec::new();
    while tokio::time::Instant::now() < deadline {
        last = points(p, pt, measurement, from, to).await;
        if check(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("{what} within {WAIT:?}; last: {last:?}\n{}", p.logs());
}

/// The values of points, sorted.
fn values(points: &[Value]) -> Vec<f64> {
    let mut values: Vec<f64> = points.iter().map(|p| p[1].as_f64().unwrap()).collect();
    values.sort_by(f64::total_cmp);
    values
}

/// The message of a refused request, which must have `code`.
fn refusal(reply: &Value, code: &str) -> String {
    assert_eq!(reply["error"]["code"], code, "{reply}");
    reply["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_replays_recorded_telemetry_with_other_parameters_and_never_sees_live_data() {
    let mut p = Platform::start(&["n1"], &["assets", "historian", "graph"]).await;
    // No delay: the doubler answers `ctl.ready` once subscribed, and the replay waits
    // for that; without the answer, records published while Python imports are lost.
    // Pages of 7 points: the 50 records come in 8 `ts.query` pages.
    let env = [("DTAAS_REPLAY_DELAY", "0s"), ("DTAAS_REPLAY_PAGE", "7")];
    p.spawn("lifecycle", "lifecycle", &env);
    p.wait_for("lifecycle", "dt", "list", "dts").await;
    put_doubler(&p).await;

    // The source: factor 2 on PT pt-f's live `val`.
    let source = json!({"id": "dbl-src", "assets": [{"name": "doubler", "asset": "doubler",
        "inputs": {"x": "dtaas.v1.tel.pt-f.val"}}], "pt": [{"id": "pt-f", "signals": ["val"]}]});
    p.ok("alice", "create", json!({ "config": source })).await;
    p.ok("alice", "execute", json!({"id": "dbl-src"})).await;
    // It subscribes a moment after it started: live values until it answers.
    let now = || format_rfc3339(now_ns());
    let since = now();
    let mut probe = 0.0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while points(&p, "dbl-src", "y", &since, "now").await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "{}", p.logs());
        probe += 1.0;
        publish_val(&p, now_ns(), LIVE + probe).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Telemetry recorded ten minutes ago: 1, 2, …, 50, 10 ms apart.
    let base = (now_ns() - 600_000_000_000) / 1_000_000_000 * 1_000_000_000;
    let last = base + (RECORDED - 1) * 10_000_000;
    for i in 0..RECORDED {
        publish_val(&p, base + i * 10_000_000, (i + 1) as f64).await;
    }
    let (from, to) = (format_rfc3339(base), format_rfc3339(last));
    let window = (from.as_str(), to.as_str());
    points_until(&p, "pt-f", window, "50 recorded values", |v| {
        v.len() == RECORDED as usize
    })
    .await;
    let expected =
        |factor: f64| -> Vec<f64> { (1..=RECORDED).map(|i| factor * i as f64).collect() };
    // The source doubled them as they came.
    let source_y = points_until(&p, "dbl-src", ("-1h", "now"), "the source's 2x", |v| {
        expected(2.0).iter().all(|x| values(v).contains(x))
    })
    .await;
    assert!(
        values(&source_y).iter().any(|&y| y > 2.0 * LIVE),
        "{source_y:?}"
    );

    // Refusals: a parameter out of range (with its path), an unknown role, a bad
    // window, a DT with children, another user's DT; nothing registered.
    let bad = json!({"id": "dbl-src", "as": "dbl-bad",
        "params": {"doubler": {"factor": 30}, "nope": {"a": 1}},
        "replay": {"from": "yesterday", "to": &to}});
    let message = refusal(&p.dt("alice", "fork", bad).await, "bad_request");
    for problem in [
        "params.doubler.factor: 30 is not within 1..=10",
        "params.nope: the DT has no role \"nope\" (there are: doubler)",
        "replay.from: ",
    ] {
        assert!(message.contains(problem), "{problem} in {message}");
    }
    let gone = p.dt("alice", "get", json!({"id": "dbl-bad"})).await;
    assert_eq!(gone["error"]["code"], "not_found", "{gone}");
    let tree = json!({"id": "fork-tree", "children": [{"id": "fork-tree-kid"}]});
    p.ok("alice", "create", json!({ "config": tree })).await;
    let whole = json!({"id": "fork-tree", "as": "tree-copy"});
    let message = refusal(&p.dt("alice", "fork", whole).await, "bad_request");
    assert!(
        message.contains("has children (fork-tree-kid)"),
        "{message}"
    );
    let theirs = json!({"id": "dbl-src", "as": "bobs-copy"});
    let message = refusal(&p.dt("bob", "fork", theirs).await, "not_found");
    assert!(
        message.contains("no DT \"dbl-src\" of user bob"),
        "{message}"
    );

    // The fork: factor 5, fed the recorded window; its `created` event names the source.
    let mut events = p
        .client
        .subscribe("dtaas.v1.evt.dt.dbl-x5.*")
        .await
        .unwrap();
    let fork = json!({"id": "dbl-src", "as": "dbl-x5", "params": {"doubler": {"factor": 5}},
        "replay": {"from": &from, "to": &to}});
    let forked = p.ok("alice", "fork", fork).await["dt"].clone();
    assert_eq!(forked["fork_of"], "dbl-src");
    assert_eq!(forked["state"], "created");
    assert_eq!(
        forked["config"]["assets"][0]["inputs"]["x"],
        "dtaas.v1.dt.dbl-x5.replay.pt-f.val"
    );
    assert_eq!(forked["config"]["assets"][0]["params"]["factor"], 5);
    assert_eq!(forked["replay"]["from"], base);
    let created: Value = next_event(&mut events).await;
    let named = (created["to"].as_str(), created["fork_of"].as_str());
    assert_eq!(named, (Some("created"), Some("dbl-src")), "{created}");
    tree_until(&p, "dbl-x5", "the fork of dbl-src", |t| {
        t["fork_of"] == "dbl-src"
    })
    .await;

    // A fork of the fork reads its own replay of the same window.
    let again = json!({"id": "dbl-x5", "as": "dbl-x7", "params": {"doubler": {"factor": 7}}});
    let again = p.ok("alice", "fork", again).await["dt"].clone();
    assert_eq!(
        (
            &again["fork_of"],
            &again["replay"]["from"],
            &again["replay"]["to"]
        ),
        (&json!("dbl-x5"), &json!(base), &json!(last)),
        "{again}"
    );
    assert_eq!(
        again["config"]["assets"][0]["inputs"]["x"],
        "dtaas.v1.dt.dbl-x7.replay.pt-f.val"
    );

    // Executed, it is replayed the window while live values keep coming.
    p.ok("alice", "execute", json!({"id": "dbl-x5"})).await;
    let fed = replayed_with_live_data(&p, "dbl-x5").await;
    let progress = &fed["replay"]["progress"];
    let counts = (progress["replayed"].as_i64(), progress["total"].as_i64());
    assert_eq!(counts, (Some(RECORDED), Some(RECORDED)), "{fed}");
    assert!(progress.get("error").is_none(), "{fed}");
    assert_eq!(progress["ready"], json!({"doubler": "answered"}), "{fed}");
    points_until(&p, "dbl-x5", ("-1h", "now"), "the fork's 5x", |v| {
        v.len() >= RECORDED as usize
    })
    .await;
    // Every recorded record once, none lost, and nothing live (the historian writes
    // in batches: a moment for any straggler).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fork_y = points(&p, "dbl-x5", "y", "-1h", "now").await;
    assert_eq!(values(&fork_y), expected(5.0), "{fork_y:?}");
    let mut replayed = None;
    while let Ok(Some(message)) = timeout(Duration::from_secs(5), events.next()).await {
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        if event["to"] == "replayed" {
            replayed = Some(event);
            break;
        }
    }
    let replayed = replayed.expect("a replayed event");
    assert!(
        replayed["detail"]
            .as_str()
            .unwrap()
            .starts_with("replayed 50 of 50 recorded record(s) of pt-f/val"),
        "{replayed}"
    );

    // People see it: `dt get` readable and JSON.
    let text = cli_ok(&p, &["dt", "get", "dbl-x5"]).await;
    assert!(text.contains("fork of dbl-src"), "{text}");
    assert!(
        text.contains("50 of 50 records, done (ready: doubler answered)"),
        "{text}"
    );
    let listed = cli_ok(&p, &["dt", "get", "dbl-x5", "--json"]).await;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["dt"]["fork_of"], "dbl-src");

    // `dt.replay` replays the window again: every record a second time.
    p.ok("alice", "replay", json!({"id": "dbl-x5"})).await;
    points_until(&p, "dbl-x5", ("-1h", "now"), "the second replay", |v| {
        v.len() == 2 * RECORDED as usize
    })
    .await;
    p.ok("alice", "terminate", json!({"id": "dbl-x5"})).await;
    let message = refusal(
        &p.dt("alice", "replay", json!({"id": "dbl-x5"})).await,
        "conflict",
    );
    assert!(message.contains("terminated"), "{message}");
    let message = refusal(
        &p.dt("alice", "replay", json!({"id": "dbl-src"})).await,
        "bad_request",
    );
    assert!(message.contains("not fed by recorded data"), "{message}");

    // A fork by CLI, without a replay: live data, another factor.
    let text = cli_ok(
        &p,
        &[
            "dt",
            "fork",
            "dbl-src",
            "--as",
            "dbl-x3",
            "--param",
            "doubler.factor=3",
        ],
    )
    .await;
    assert!(text.contains("DT dbl-x3 of alice: created"), "{text}");
    assert!(text.contains("fork of dbl-src"), "{text}");
    let list = cli_ok(&p, &["dt", "list"]).await;
    assert!(
        list.lines()
            .any(|l| l.starts_with("dbl-x3") && l.split_whitespace().last() == Some("dbl-src")),
        "the FORK OF column: {list}"
    );
    p.ok("alice", "terminate", json!({"id": "dbl-src"})).await;
}

/// Polls `dt.get` of fork `id` until its replay is done, publishing a live value on
/// its source's PT every 200 ms meanwhile; answers the DT as it was then.
async fn replayed_with_live_data(p: &Platform, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = Value::Null;
    while tokio::time::Instant::now() < deadline {
        publish_val(p, now_ns(), LIVE).await;
        last = p.dt("alice", "get", json!({ "id": id })).await;
        if last["dt"]["replay"]["progress"]["done"] == true {
            return last["dt"].clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the replay of {id} did not end; last: {last}\n{}", p.logs());
}

/// The next lifecycle event on `events`.
async fn next_event(events: &mut async_nats::Subscriber) -> Value {
    let message = timeout(WAIT, events.next()).await.unwrap().unwrap();
    serde_json::from_slice(&message.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_replay_keeps_the_recorded_spacing_and_terminate_stops_it() {
    let mut p = Platform::start(&["n1"], &["assets", "historian"]).await;
    p.spawn("lifecycle", "lifecycle", &[("DTAAS_REPLAY_DELAY", "0s")]);
    p.wait_for("lifecycle", "dt", "list", "dts").await;
    put_doubler(&p).await;
    let source = json!({"id": "slow-src", "assets": [{"name": "doubler", "asset": "doubler",
        "inputs": {"x": "dtaas.v1.tel.pt-f.val"}}]});
    p.ok("alice", "create", json!({ "config": source })).await;
    // 50 records 10 ms apart, an hour ago; no DT needs to run while they are recorded.
    let (from, to) = record_window(&p).await;

    // At speed 0.05 the records go out 200 ms apart: about 10 s for all of them.
    let fork = json!({"id": "slow-src", "as": "slow-fork",
        "replay": {"from": &from, "to": &to, "speed": 0.05}});
    p.ok("alice", "fork", fork).await;
    p.ok("alice", "execute", json!({"id": "slow-fork"})).await;
    let outputs = points_until(&p, "slow-fork", ("-1h", "now"), "8 paced outputs", |v| {
        v.len() >= 8
    })
    .await;
    // The processes stamp outputs when they compute them: the spacing is the pace.
    let stamps: Vec<i64> = outputs.iter().map(|p| p[0].as_i64().unwrap()).collect();
    let span = stamps.last().unwrap() - stamps.first().unwrap();
    let paced = (stamps.len() as i64 - 1) * 200_000_000;
    assert!(
        span >= paced * 8 / 10,
        "{} outputs within {span} ns, paced {paced} ns",
        stamps.len()
    );
    assert_eq!(values(&outputs)[..3], [2.0, 4.0, 6.0]);

    // Terminate stops the replay within about a second, and says so.
    p.ok("alice", "terminate", json!({"id": "slow-fork"})).await;
    let ended = p
        .until("alice", "slow-fork", "the replay's end", |dt| {
            dt["replay"]["progress"]["done"] == true
        })
        .await;
    let progress = &ended["replay"]["progress"];
    let error = progress["error"].as_str().unwrap_or_default();
    assert!(error.contains("DT slow-fork is terminated"), "{ended}");
    assert!(progress["replayed"].as_i64().unwrap() < RECORDED, "{ended}");
    let text = cli_ok(&p, &["dt", "get", "slow-fork"]).await;
    assert!(
        text.contains("at 0.05x") && text.contains("stopped: "),
        "{text}"
    );
}

/// Records a window of 50 values of `pt-f`/`val` an hour ago; answers (from, to).
async fn record_window(p: &Platform) -> (String, String) {
    let base = (now_ns() - 3_600_000_000_000) / 1_000_000_000 * 1_000_000_000;
    for i in 0..RECORDED {
        publish_val(p, base + i * 10_000_000, (i + 1) as f64).await;
    }
    let (from, to) = (format_rfc3339(base), format_rfc3339(base + 490_000_000));
    points_until(p, "pt-f", (&from, &to), "50 recorded values", |v| {
        v.len() == RECORDED as usize
    })
    .await;
    (from, to)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_does_not_answer_ready_gets_the_delay_after_it_ran() {
    let mut p = Platform::start(&["n1"], &["assets", "historian"]).await;
    // Asked for 1 s, `late` does not answer; it subscribes 2 s after it started,
    // well within the 5 s delay.
    let env = [
        ("DTAAS_REPLAY_DELAY", "5s"),
        ("DTAAS_REPLAY_READY_TIMEOUT", "1s"),
    ];
    p.spawn("lifecycle", "lifecycle", &env);
    p.wait_for("lifecycle", "dt", "list", "dts").await;
    put_doubler(&p).await;
    p.put_asset(
        "alice",
        "late",
        &[("late.py", LATE, 0o644)],
        json!({"inputs": [{"name": "x", "type": "number"}],
               "outputs": [{"name": "z", "type": "number"}]}),
        json!({"command": ["python3", "late.py"]}),
    )
    .await;
    let source = json!({"id": "mixed-src", "assets": [
        {"name": "doubler", "asset": "doubler", "inputs": {"x": "dtaas.v1.tel.pt-f.val"}},
        {"name": "late", "asset": "late", "inputs": {"x": "dtaas.v1.tel.pt-f.val"}}]});
    p.ok("alice", "create", json!({ "config": source })).await;
    let (from, to) = record_window(&p).await;

    let fork = json!({"id": "mixed-src", "as": "mixed-fork",
        "replay": {"from": &from, "to": &to}});
    p.ok("alice", "fork", fork).await;
    p.ok("alice", "execute", json!({"id": "mixed-fork"})).await;
    let fed = replayed_with_live_data(&p, "mixed-fork").await;
    let progress = &fed["replay"]["progress"];
    assert_eq!(
        progress["ready"],
        json!({"doubler": "answered", "late": "by delay"}),
        "{fed}"
    );
    assert_eq!(progress["replayed"].as_i64(), Some(RECORDED), "{fed}");
    // The late subscriber got every record: the replay waited the delay for it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = Vec::new();
    while tokio::time::Instant::now() < deadline && last.len() < RECORDED as usize {
        tokio::time::sleep(Duration::from_millis(300)).await;
        last = points(&p, "mixed-fork", "z", "-1h", "now").await;
    }
    let recorded: Vec<f64> = (1..=RECORDED).map(|i| i as f64).collect();
    assert_eq!(values(&last), recorded, "{}", p.logs());
    points_until(&p, "mixed-fork", ("-1h", "now"), "the doubler's 2x", |v| {
        v.len() == RECORDED as usize
    })
    .await;
    p.ok("alice", "terminate", json!({"id": "mixed-fork"}))
        .await;
}
