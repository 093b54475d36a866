//! The lifecycle worker against real parts: nats-server, `dtaas exec` nodes running
//! real processes, the asset library and the historian, all as `dtaas` processes.

mod exec_support;
mod lifecycle_support;

use std::time::Duration;

use dtaas_schemas::codec::Encoding;
use dtaas_schemas::names::header;
use exec_support::{alive, eventually, group_members};
use futures::StreamExt;
use lifecycle_support::{
    cli, cli_ok, dtaas_as_alice, graph, pids, put_sleeper, run_sleeper, tree_until, Platform, WAIT,
};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio::time::timeout;

const DOUBLER: &[u8] = include_bytes!("lifecycle_support/doubler.py");
const COUNTER: &[u8] = include_bytes!("lifecycle_support/counter.py");

fn number_io() -> Value {
    json!({"inputs": [{"name": "x", "type": "number"}],
           "outputs": [{"name": "y", "type": "number"}],
           "params": [{"name": "factor", "type": "integer", "default": 2, "min": 1, "max": 10}]})
}

async fn put_doubler(p: &Platform) -> String {
    p.put_asset(
        "alice",
        "doubler",
        &[("doubler.py", DOUBLER, 0o644)],
        number_io(),
        json!({"command": ["python3", "doubler.py"]}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_stores_outputs_and_terminate_leaves_no_process() {
    let p = Platform::start(&["n1"], &["assets", "lifecycle", "historian"]).await;
    put_doubler(&p).await;
    let config = json!({"id": "dbl-1", "assets": [{"name": "doubler", "asset": "alice/doubler",
        "inputs": {"x": "dtaas.v1.tel.pt9.val"}, "params": {"factor": 3}}]});
    let created = p.ok("alice", "create", json!({"config": config})).await;
    assert_eq!(created["dt"]["state"], "created");
    assert_eq!(created["dt"]["resolved_assets"], json!(["alice/doubler@1"]));
    p.ok("alice", "execute", json!({"id": "dbl-1"})).await;
    let dt = p
        .until("alice", "dbl-1", "the doubler runs", |dt| {
            dt["state"] == "executing" && dt["processes"][0]["status"] == "running"
        })
        .await;
    let pid = pids(&dt)[0];
    until_output(&p, "pt9", "dbl-1", 21.0).await;
    let terminated = p.ok("alice", "terminate", json!({"id": "dbl-1"})).await;
    assert_eq!(terminated["dt"]["state"], "terminated");
    eventually("the doubler's process group is gone", || {
        group_members(pid).is_empty() && !alive(pid)
    })
    .await;
    let again = p.dt("alice", "terminate", json!({"id": "dbl-1"})).await;
    assert_eq!(again["error"]["code"], "conflict", "{again}");
    assert!(again["error"]["message"]
        .as_str()
        .unwrap()
        .contains("terminated"));
    let other = p.dt("bob", "get", json!({"id": "dbl-1"})).await;
    assert_eq!(other["error"]["code"], "not_found", "{other}");
}

/// The files of the Python package `package` as the test's `python3` imports it, as
/// `pip install --target <asset> <package>` would put them in an asset.
fn python_package(package: &str) -> Vec<(String, Vec<u8>)> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            &format!("import os, {package}; print(os.path.dirname({package}.__file__))"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "python3 cannot import {package}");
    let root = std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if entry.file_name() != "__pycache__" {
                    dirs.push(path);
                }
                continue;
            }
            let inside = path.strip_prefix(root.parent().unwrap()).unwrap();
            files.push((inside.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    files
}

/// The Python example as a new user runs it: exec, as root, runs DT processes as
/// `nobody`, who cannot import the packages of the Python under `/root`; the asset
/// carries nats-py and msgpack itself (docs/process-contract.md), and doubles PT
/// telemetry in MessagePack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_runs_as_nobody_with_the_packages_it_carries() {
    let nobody = nix::unistd::User::from_name("nobody").ok().flatten();
    let (true, Some(nobody)) = (nix::unistd::geteuid().is_root(), nobody) else {
        eprintln!("skipped: exec runs DT processes as nobody only when it runs as root");
        return;
    };
    let mut p = Platform::start(&[], &["assets", "lifecycle", "historian"]).await;
    p.spawn(
        "exec-n1",
        "exec",
        &[("DTAAS_EXEC_NODE", "n1"), ("DTAAS_EXEC_GRACE", "2s")],
    );
    p.wait_for_node("n1").await;
    let mut files = vec![("doubler.py".to_owned(), DOUBLER.to_vec())];
    files.extend(python_package("nats"));
    files.extend(python_package("msgpack"));
    let files: Vec<(&str, &[u8], u32)> = files
        .iter()
        .map(|(path, content)| (path.as_str(), content.as_slice(), 0o644))
        .collect();
    p.put_asset(
        "alice",
        "doubler",
        &files,
        number_io(),
        json!({"command": ["python3", "doubler.py"]}),
    )
    .await;
    let config = json!({"id": "dbl-nobody", "assets": [{"name": "doubler",
        "asset": "alice/doubler", "inputs": {"x": "dtaas.v1.tel.pt6.val"},
        "params": {"factor": 3}}]});
    p.ok("alice", "create", json!({"config": config})).await;
    p.ok("alice", "execute", json!({"id": "dbl-nobody"})).await;
    let dt = p
        .until("alice", "dbl-nobody", "the doubler runs", |dt| {
            dt["processes"][0]["status"] == "running"
        })
        .await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", pids(&dt)[0])).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .unwrap();
    assert_eq!(uid, nobody.uid.to_string(), "{status}");
    until_output(&p, "pt6", "dbl-nobody", 21.0).await;
    p.ok("alice", "terminate", json!({"id": "dbl-nobody"}))
        .await;
}

/// Publishes `x = 7` on `dtaas.v1.tel.<pt>.val` until the historian has output `y`
/// of DT `dt` equal to `expected` (a process subscribes a moment after it started).
/// The record goes as the bridge sends PT telemetry: MessagePack, with its
/// `Content-Type`.
async fn until_output(p: &Platform, pt: &str, dt: &str, expected: f64) {
    let js = async_nats::jetstream::new(p.client.clone());
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut latest = Value::Null;
    while tokio::time::Instant::now() < deadline {
        let record = json!({"pt": pt, "measurement": "val", "ts": dtaas_schemas::time::now_ns(),
                            "fields": {"val": 7.0}});
        let body = Encoding::MsgPack.encode(&record).unwrap();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, Encoding::MsgPack.content_type());
        timeout(WAIT, async {
            js.publish_with_headers(format!("dtaas.v1.tel.{pt}.val"), headers, body)
                .await
                .unwrap()
                .await
                .unwrap()
        })
        .await
        .unwrap();
        let reply = timeout(
            WAIT,
            p.client.request(
                "dtaas.v1.alice.ts.latest",
                json!({ "pt": dt }).to_string().into(),
            ),
        )
        .await
        .unwrap();
        // The historian may not serve yet (no responders): asked again below.
        if let Ok(reply) = reply {
            latest = serde_json::from_slice(&reply.payload).unwrap();
        }
        if latest["latest"].as_array().is_some_and(|l| {
            l.iter()
                .any(|r| r["measurement"] == "y" && r["value"] == expected)
        }) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("no output y = {expected} of {dt}: {latest}\n{}", p.logs());
}

/// Builds `examples/doubler.rs` (the process contract's Rust example) and answers
/// its binary, stripped when `strip` is there (an asset file need not carry debug info).
fn rust_doubler() -> Vec<u8> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo.args([
        "build",
        "--offline",
        "--example",
        "doubler",
        "--manifest-path",
        manifest,
    ]);
    // Without the variables cargo set for this test (CARGO_PKG_NAME, OUT_DIR, …): build
    // scripts that watch them would otherwise be rebuilt here and again by the next
    // `cargo test`.
    let kept = ["CARGO_HOME", "CARGO_TARGET_DIR"];
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo = name.starts_with("CARGO_")
            && !kept.contains(&name.as_ref())
            && !name.starts_with("CARGO_BUILD_")
            && !name.starts_with("CARGO_NET_")
            && !name.starts_with("CARGO_REGISTRIES_");
        if set_by_cargo || name == "OUT_DIR" {
            cargo.env_remove(name.as_ref());
        }
    }
    let built = cargo.status().expect("cargo runs");
    assert!(built.success(), "cargo build --example doubler failed");
    // target/<profile>/deps/lifecycle-… → target/<profile>/examples/doubler
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/doubler");
    let stripped = tempfile::NamedTempFile::new().unwrap();
    let ok = std::process::Command::new("strip")
        .arg("-o")
        .arg(stripped.path())
        .arg(&binary)
        .status()
        .is_ok_and(|s| s.success());
    std::fs::read(if ok { stripped.path() } else { &binary }).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_example_runs_as_a_dt_process() {
    let binary = tokio::task::spawn_blocking(rust_doubler).await.unwrap();
    let p = Platform::start(&["n1"], &["assets", "lifecycle", "historian"]).await;
    p.put_asset(
        "alice",
        "rust-doubler",
        &[("doubler", &binary, 0o755)],
        number_io(),
        json!({"command": ["./doubler"]}),
    )
    .await;
    let config = json!({"id": "rdbl", "assets": [{"name": "doubler", "asset": "rust-doubler",
        "inputs": {"x": "dtaas.v1.tel.pt8.val"}, "params": {"factor": 3}}]});
    p.ok("alice", "create", json!({"config": config})).await;
    p.ok("alice", "execute", json!({"id": "rdbl"})).await;
    until_output(&p, "pt8", "rdbl", 21.0).await;
    // Subscribed, it answers the ready request a replay asks, naming its role.
    let ready = p
        .client
        .request("dtaas.v1.dt.rdbl.ctl.ready", "{}".into())
        .await
        .unwrap();
    let role = ready.headers.as_ref().and_then(|h| h.get(header::ROLE));
    assert_eq!(role.map(|r| r.as_str()), Some("doubler"), "{ready:?}");
    // Its state (inputs seen) answers a save.
    let saved = p.ok("alice", "save", json!({"id": "rdbl"})).await;
    let snapshot = saved["dt"]["snapshots"][0].clone();
    assert_eq!(snapshot["roles"], json!(["doubler"]), "{saved}");
    let js = async_nats::jetstream::new(p.client.clone());
    let store = js.get_object_store("dtaas-snapshots").await.unwrap();
    let name = snapshot["name"].as_str().unwrap();
    let mut object = store.get(format!("rdbl/{name}/doubler")).await.unwrap();
    let mut text = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut object, &mut text)
        .await
        .unwrap();
    assert!(
        text.trim().parse::<u64>().unwrap() >= 1,
        "inputs seen: {text:?}"
    );
    let logs = p
        .ok("alice", "logs", json!({"id": "rdbl", "lines": 10}))
        .await;
    assert!(
        logs.to_string().contains("doubler ready, factor 3"),
        "{logs}"
    );
    p.ok("alice", "terminate", json!({"id": "rdbl"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_executes_start_once() {
    let p = Platform::start(&["n1"], &["assets", "lifecycle"]).await;
    put_sleeper(&p).await;
    let config = json!({"id": "c-1", "assets": [{"name": "s", "asset": "sleeper"}]});
    p.ok("alice", "create", json!({"config": config})).await;
    let mut started = p
        .client
        .subscribe("dtaas.v1.evt.proc.c-1.started")
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        p.dt("alice", "execute", json!({"id": "c-1"})),
        p.dt("alice", "execute", json!({"id": "c-1"}))
    );
    let errors: Vec<&Value> = [&a, &b]
        .into_iter()
        .filter(|r| r.get("error").is_some())
        .collect();
    assert_eq!(errors.len(), 1, "one wins, one is refused: {a}\n{b}");
    assert_eq!(errors[0]["error"]["code"], "conflict", "{}", errors[0]);
    timeout(WAIT, started.next())
        .await
        .expect("one start event");
    let more = timeout(Duration::from_secs(2), started.next()).await;
    assert!(more.is_err(), "a second process was started: {more:?}");
    let list: Value = p
        .client
        .request(
            "dtaas.v1.exec.n1.list",
            json!({"dt": "c-1"}).to_string().into(),
        )
        .await
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .unwrap();
    assert_eq!(list["processes"].as_array().unwrap().len(), 1, "{list}");
    p.ok("alice", "terminate", json!({"id": "c-1"})).await;
}

/// The DT ids in the order their `<state>` events came, until `count` arrived.
async fn order(events: &mut async_nats::Subscriber, state: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.len() < count {
        let message = timeout(WAIT, events.next()).await.unwrap().unwrap();
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        if event["to"] == state {
            ids.push(event["dt"].as_str().unwrap().to_owned());
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_level_hierarchy_starts_bottom_up_and_stops_top_down() {
    let p = Platform::start(&["n1", "n2"], &["assets", "lifecycle"]).await;
    put_sleeper(&p).await;
    let level = |id: &str| json!({"id": id, "assets": [{"name": "s", "asset": "sleeper"}]});
    let mut robot = level("robot");
    let mut line = level("line");
    let mut factory = level("factory");
    robot["pt"] = json!([{"id": "robot1", "signals": ["joints"]}]);
    line["children"] = json!([robot]);
    factory["children"] = json!([line]);
    p.ok("alice", "create", json!({"config": factory})).await;
    let list = p.ok("alice", "list", json!({})).await;
    assert_eq!(list["dts"].as_array().unwrap().len(), 3, "{list}");
    let mut events = p.client.subscribe("dtaas.v1.evt.dt.*.*").await.unwrap();
    p.ok("alice", "execute", json!({"id": "factory"})).await;
    assert_eq!(
        order(&mut events, "executing", 3).await,
        ["robot", "line", "factory"]
    );
    let mut all_pids = Vec::new();
    for id in ["robot", "line", "factory"] {
        let dt = p
            .until("alice", id, "its process runs", |dt| {
                dt["processes"][0]["status"] == "running"
            })
            .await;
        all_pids.extend(pids(&dt));
    }
    // Saving the parent saves its children under the same snapshot name.
    let saved = p.ok("alice", "save", json!({"id": "factory"})).await;
    let name = saved["dt"]["snapshots"][0]["name"].clone();
    assert!(name.is_string(), "{saved}");
    for id in ["line", "robot"] {
        let child = p.ok("alice", "get", json!({ "id": id })).await;
        assert_eq!(child["dt"]["snapshots"][0]["name"], name, "{child}");
    }
    let refused = p.dt("alice", "terminate", json!({"id": "line"})).await;
    assert_eq!(refused["error"]["code"], "conflict", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("factory"),
        "{refused}"
    );
    p.ok("alice", "terminate", json!({"id": "factory"})).await;
    assert_eq!(
        order(&mut events, "terminated", 3).await,
        ["factory", "line", "robot"]
    );
    for pid in all_pids {
        eventually("every process of the tree is gone", || !alive(pid)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_then_restore_keeps_a_counters_state() {
    let p = Platform::start(&["n1"], &["assets", "lifecycle"]).await;
    p.put_asset(
        "alice",
        "counter",
        &[("counter.py", COUNTER, 0o644)],
        json!({}),
        json!({"command": ["python3", "counter.py"]}),
    )
    .await;
    let config = json!({"id": "cnt", "assets": [{"name": "counter", "asset": "counter"}]});
    p.ok("alice", "create", json!({"config": config})).await;
    p.ok("alice", "execute", json!({"id": "cnt"})).await;
    let saved_count = |p: &Platform, reply: Value| {
        let js = async_nats::jetstream::new(p.client.clone());
        async move {
            let snapshot = reply["dt"]["snapshots"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()
                .clone();
            assert_eq!(snapshot["roles"], json!(["counter"]), "{reply}");
            let name = snapshot["name"].as_str().unwrap().to_owned();
            let store = js.get_object_store("dtaas-snapshots").await.unwrap();
            let mut object = store.get(format!("cnt/{name}/counter")).await.unwrap();
            let mut text = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut object, &mut text)
                .await
                .unwrap();
            text.trim()
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("state {text:?} of {name}: {e}; {reply}"))
        }
    };
    // Saves until the counter is well past what a fresh one reaches in a few seconds.
    let mut first = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while first < 100 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let reply = p.dt("alice", "save", json!({"id": "cnt"})).await;
        let last = reply["dt"]["snapshots"]
            .as_array()
            .and_then(|s| s.last().cloned());
        if last.is_some_and(|s| s["roles"] == json!(["counter"])) {
            first = timeout(WAIT, saved_count(&p, reply)).await.unwrap();
        }
    }
    assert!(
        first >= 100,
        "the counter never answered a save\n{}",
        p.logs()
    );
    p.ok("alice", "terminate", json!({"id": "cnt"})).await;
    let restored = p.ok("alice", "restore", json!({"id": "cnt"})).await;
    assert_eq!(restored["dt"]["state"], "executing", "{restored}");
    let mut second = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while second == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let reply = p.dt("alice", "save", json!({"id": "cnt"})).await;
        let last = reply["dt"]["snapshots"]
            .as_array()
            .and_then(|s| s.last().cloned());
        if last.is_some_and(|s| s["roles"] == json!(["counter"])) {
            second = timeout(WAIT, saved_count(&p, reply)).await.unwrap();
        }
    }
    assert!(
        second >= first,
        "restored counter {second} < saved {first}\n{}",
        p.logs()
    );
    p.ok("alice", "terminate", json!({"id": "cnt"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_evolve_changes_nothing_and_a_valid_one_restarts_only_what_changed() {
    let p = Platform::start(&["n1"], &["assets", "lifecycle"]).await;
    put_doubler(&p).await;
    put_sleeper(&p).await;
    let config = |factor: Value, extra: Value| {
        json!({"id": "evo", "assets": [
            {"name": "dbl", "asset": "doubler", "inputs": {"x": "dtaas.v1.tel.pt9.val"},
             "params": {"factor": factor}},
            {"name": "idle", "asset": "sleeper", "params": extra}]})
    };
    p.ok(
        "alice",
        "create",
        json!({"config": config(json!(2), json!({}))}),
    )
    .await;
    p.ok("alice", "execute", json!({"id": "evo"})).await;
    let before = p
        .until("alice", "evo", "both run", |dt| {
            dt["processes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["status"] == "running")
        })
        .await;
    let bad = p
        .dt(
            "alice",
            "evolve",
            json!({"id": "evo", "config": config(json!(50), json!({"speed": 1}))}),
        )
        .await;
    assert_eq!(bad["error"]["code"], "bad_request", "{bad}");
    let message = bad["error"]["message"].as_str().unwrap();
    assert!(message.contains("assets[0].params.factor"), "{message}");
    assert!(message.contains("assets[1].params.speed"), "{message}");
    let unchanged = p.ok("alice", "get", json!({"id": "evo"})).await;
    assert_eq!(unchanged["dt"]["config_version"], 1);
    assert_eq!(pids(&unchanged["dt"]), pids(&before));
    assert!(
        pids(&before).iter().all(|&pid| alive(pid)),
        "the old processes still run"
    );

    p.ok(
        "alice",
        "evolve",
        json!({"id": "evo", "config": config(json!(4), json!({}))}),
    )
    .await;
    let after = p
        .until("alice", "evo", "the changed role runs again", |dt| {
            dt["config_version"] == 2
                && dt["processes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|p| p["status"] == "running")
        })
        .await;
    let pid_of = |dt: &Value, role: &str| {
        dt["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["role"] == role)
            .unwrap()["pid"]
            .clone()
    };
    assert_ne!(
        pid_of(&after, "dbl"),
        pid_of(&before, "dbl"),
        "the changed role restarted"
    );
    assert_eq!(
        pid_of(&after, "idle"),
        pid_of(&before, "idle"),
        "the unchanged one kept running"
    );
    p.ok("alice", "terminate", json!({"id": "evo"})).await;
}

/// The `(dt, to)` of lifecycle events until `last` arrived.
async fn events_until(
    events: &mut async_nats::Subscriber,
    last: (&str, &str),
) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    loop {
        let message = timeout(WAIT, events.next())
            .await
            .unwrap_or_else(|_| panic!("no {last:?} event; seen {seen:?}"))
            .unwrap();
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        let pair = (
            event["dt"].as_str().unwrap().to_owned(),
            event["to"].as_str().unwrap().to_owned(),
        );
        let done = pair.0 == last.0 && pair.1 == last.1;
        seen.push(pair);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evolve_adds_and_removes_children_in_order() {
    let p = Platform::start(&["n1"], &["assets", "lifecycle", "graph"]).await;
    put_sleeper(&p).await;
    let kid = |id: &str| json!({"id": id, "assets": [{"name": "k", "asset": "sleeper"}]});
    let family = |children: Value| json!({"id": "fam", "assets": [{"name": "s", "asset": "sleeper"}], "children": children});
    p.ok(
        "alice",
        "create",
        json!({"config": family(json!([kid("old-kid")]))}),
    )
    .await;
    // A child of another DT: its id cannot be taken in (a top-level one could be).
    let holder = json!({"id": "holder", "children": [kid("other")]});
    p.ok("alice", "create", json!({"config": holder})).await;
    p.ok("alice", "execute", json!({"id": "fam"})).await;
    let running = |dt: &Value| dt["processes"][0]["status"] == "running";
    let parent = p.until("alice", "fam", "the parent runs", running).await;
    let old_kid = p
        .until("alice", "old-kid", "the old child runs", running)
        .await;

    // Invalid: a cycle and a child id another DT has; nothing changes.
    let mut looped = kid("fam");
    looped["assets"][0]["name"] = json!("x");
    let bad = p
        .dt(
            "alice",
            "evolve",
            json!({"id": "fam", "config": family(json!([looped, kid("other")]))}),
        )
        .await;
    assert_eq!(bad["error"]["code"], "bad_request", "{bad}");
    let message = bad["error"]["message"].as_str().unwrap();
    assert!(message.contains("children[0].id"), "{message}");
    assert!(message.contains("includes itself"), "{message}");
    assert!(message.contains("children[1].id"), "{message}");
    assert!(message.contains("child of DT holder"), "{message}");
    let unchanged = p.ok("alice", "get", json!({"id": "fam"})).await;
    assert_eq!(unchanged["dt"]["config_version"], 1, "{unchanged}");
    assert_eq!(
        unchanged["dt"]["config"]["children"][0]["id"], "old-kid",
        "{unchanged}"
    );

    // Valid: old-kid out, new-kid in.
    let mut events = p.client.subscribe("dtaas.v1.evt.dt.*.*").await.unwrap();
    let evolved = p
        .ok(
            "alice",
            "evolve",
            json!({"id": "fam", "config": family(json!([kid("new-kid")]))}),
        )
        .await;
    assert_eq!(evolved["dt"]["config_version"], 2, "{evolved}");
    let seen = events_until(&mut events, ("old-kid", "terminated")).await;
    let position = |dt: &str, to: &str| {
        seen.iter()
            .position(|(d, t)| d == dt && t == to)
            .unwrap_or_else(|| panic!("no {dt} {to} in {seen:?}"))
    };
    assert!(
        position("new-kid", "created") < position("new-kid", "executing")
            && position("new-kid", "executing") < position("fam", "evolving"),
        "the added child runs before the parent evolves: {seen:?}"
    );
    assert!(
        position("fam", "evolving") < position("old-kid", "terminated"),
        "the removed child stops after: {seen:?}"
    );
    let new_kid = p
        .until("alice", "new-kid", "the new child runs", running)
        .await;
    assert_eq!(new_kid["parent"], "fam", "{new_kid}");
    let gone = p.ok("alice", "get", json!({"id": "old-kid"})).await;
    assert_eq!(gone["dt"]["state"], "terminated", "{gone}");
    assert!(
        gone["dt"].get("parent").is_none_or(Value::is_null),
        "detached: {gone}"
    );
    eventually("the removed child's process is gone", || {
        !alive(pids(&old_kid)[0])
    })
    .await;
    // The graph follows: the new child (and its process) under the parent, the old
    // one no longer.
    tree_until(&p, "fam", "the evolved hierarchy", |t| {
        t["children"].as_array().is_some_and(|c| c.len() == 1)
            && t["children"][0]["id"] == "new-kid"
            && t["children"][0]["processes"][0]["status"] == "running"
    })
    .await;
    let after = p.ok("alice", "get", json!({"id": "fam"})).await;
    assert_eq!(
        pids(&after["dt"]),
        pids(&parent),
        "the parent's own process did not change, so it kept running"
    );
    p.ok("alice", "terminate", json!({"id": "fam"})).await;
    let new_kid = p.ok("alice", "get", json!({"id": "new-kid"})).await;
    assert_eq!(new_kid["dt"]["state"], "terminated", "{new_kid}");
}

/// Every verb whose DTaaS `lifecycle/` script a DT runs.
use dtaas_schemas::asset::LIFECYCLE_PHASES as PHASES;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dtaas_layout_dts_scripts_run_in_order() {
    let p = Platform::start(&["n1"], &["assets", "lifecycle"]).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("order.log");
    // The execute script ends (a completed step) unless LONG is set: then it runs on.
    let step = |phase: &str| {
        let tail = if phase == "execute" {
            "if [ -n \"$LONG\" ]; then exec sleep 600; fi\n"
        } else {
            ""
        };
        format!("#!/bin/bash\necho {phase} >> \"$ORDER_LOG\"\n{tail}")
    };
    let scripts: Vec<(String, Vec<u8>)> = PHASES
        .iter()
        .map(|phase| (format!("lifecycle/{phase}"), step(phase).into_bytes()))
        .collect();
    let files: Vec<(&str, &[u8], u32)> = scripts
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice(), 0o755))
        .collect();
    let lifecycle: Value = PHASES
        .iter()
        .map(|phase| (phase.to_string(), json!(format!("lifecycle/{phase}"))))
        .collect::<serde_json::Map<_, _>>()
        .into();
    p.put_asset(
        "alice",
        "incubator-dt",
        &files,
        json!({}),
        json!({"lifecycle": lifecycle}),
    )
    .await;
    let config = |long: bool| {
        let mut env = json!({"ORDER_LOG": log.display().to_string()});
        if long {
            env["LONG"] = json!("1");
        }
        json!({"id": "layout", "assets": [{"name": "twin", "asset": "incubator-dt"}],
               "infrastructure": {"env": env}})
    };
    let mut events = p
        .client
        .subscribe("dtaas.v1.evt.dt.layout.*")
        .await
        .unwrap();
    p.ok("alice", "create", json!({"config": config(false)}))
        .await;
    p.ok("alice", "execute", json!({"id": "layout"})).await;
    // The execute script ends: a completed step.
    p.until("alice", "layout", "the DT completed", |dt| {
        dt["state"] == "completed"
    })
    .await;
    let analyzed = p.ok("alice", "analyze", json!({"id": "layout"})).await;
    assert_eq!(analyzed["dt"]["state"], "completed", "{analyzed}");
    p.ok(
        "alice",
        "evolve",
        json!({"id": "layout", "config": config(true)}),
    )
    .await;
    p.ok("alice", "execute", json!({"id": "layout"})).await;
    p.until("alice", "layout", "the long execute script runs", |dt| {
        dt["state"] == "executing" && dt["processes"][0]["status"] == "running"
    })
    .await;
    p.ok("alice", "save", json!({"id": "layout"})).await;
    let refused = p.dt("alice", "clean", json!({"id": "layout"})).await;
    assert_eq!(refused["error"]["code"], "conflict", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("executing"),
        "{refused}"
    );
    p.ok("alice", "terminate", json!({"id": "layout"})).await;
    let cleaned = p.ok("alice", "clean", json!({"id": "layout"})).await;
    assert_eq!(cleaned["dt"]["state"], "terminated", "{cleaned}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "create",
            "execute",
            "analyze",
            "evolve",
            "execute",
            "save",
            "terminate",
            "clean"
        ]
    );
    // analyze and clean are recorded transitions that return to the state.
    let mut seen = Vec::new();
    while !seen.ends_with(&["cleaned".to_owned(), "terminated".to_owned()]) {
        let message = timeout(WAIT, events.next()).await.unwrap().unwrap();
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        seen.push(event["to"].as_str().unwrap().to_owned());
    }
    let position = |state: &str| seen.iter().position(|s| s == state).unwrap();
    assert!(position("analysing") < position("evolving"), "{seen:?}");
    assert_eq!(seen[position("analysing") + 1], "completed", "{seen:?}");

    // A DT without the script: a bad_request naming it.
    put_sleeper(&p).await;
    let plain = json!({"id": "plain", "assets": [{"name": "s", "asset": "sleeper"}]});
    p.ok("alice", "create", json!({"config": plain})).await;
    let none = p.dt("alice", "analyze", json!({"id": "plain"})).await;
    assert_eq!(none["error"]["code"], "bad_request", "{none}");
    assert!(
        none["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lifecycle/analyze"),
        "{none}"
    );
}

/// How soon a lost node's processes run elsewhere (docs/lifecycle.md, "Nodes"): 10 s
/// without a heartbeat, up to 2 s until the next check, then the start.
const REPLACED_WITHIN: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_of_a_killed_exec_node_move_to_another_node() {
    let mut p = Platform::start(&["n1", "n2"], &["assets", "lifecycle"]).await;
    put_sleeper(&p).await;
    let before = run_sleeper(&p, "mover").await;
    let node = before["processes"][0]["node"].as_str().unwrap().to_owned();
    let orphan = pids(&before)[0];
    let mut events = p
        .client
        .subscribe("dtaas.v1.evt.dt.mover.executing")
        .await
        .unwrap();
    p.process(&format!("exec-{node}")).kill();
    let killed = std::time::Instant::now();
    let after = p
        .until(
            "alice",
            "mover",
            "the process runs on the other node",
            |dt| {
                dt["processes"][0]["node"] != node.as_str()
                    && dt["processes"][0]["status"] == "running"
            },
        )
        .await;
    let took = killed.elapsed();
    eprintln!("re-placed {took:?} after the node was killed");
    assert!(
        took < REPLACED_WITHIN,
        "re-placed after {took:?}, not within {REPLACED_WITHIN:?}\n{}",
        p.logs()
    );
    let event: Value =
        serde_json::from_slice(&timeout(WAIT, events.next()).await.unwrap().unwrap().payload)
            .unwrap();
    assert!(
        event["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("from node {node}")),
        "{event}"
    );
    assert_eq!(after["state"], "executing");
    // The killed node could not stop its child; this test does.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(orphan as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    p.ok("alice", "terminate", json!({"id": "mover"})).await;
}

/// A single machine's node stopped cleanly and started again (Ctrl-C of `dtaas up`,
/// then `dtaas up`), and one SIGKILLed and started again before it went stale: the
/// DT's process runs again on it each time, the `executing` event saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dt_runs_again_when_its_only_node_comes_back() {
    let mut p = Platform::start(&["n1"], &["assets", "lifecycle"]).await;
    put_sleeper(&p).await;
    let first = pids(&run_sleeper(&p, "back").await)[0];
    let running = |dt: &Value| dt["processes"][0]["status"] == "running";
    let mut moves = p
        .client
        .subscribe("dtaas.v1.evt.dt.back.executing")
        .await
        .unwrap();

    assert_eq!(p.process("exec-n1").stop(), Some(0), "{}", p.logs());
    let stopped = p
        .until("alice", "back", "the process is interrupted", |dt| {
            dt["processes"][0]["status"] == "interrupted"
        })
        .await;
    assert_eq!(stopped["state"], "executing", "{stopped}");
    assert!(!alive(first), "the node stopped its process");
    p.process("exec-n1").start().unwrap();
    let second = p
        .until("alice", "back", "the process runs again", |dt| {
            running(dt) && pids(dt)[0] != first
        })
        .await;
    let event: Value =
        serde_json::from_slice(&timeout(WAIT, moves.next()).await.unwrap().unwrap().payload)
            .unwrap();
    let detail = event["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("interrupted when it shut down"), "{event}");

    // Killed and back within the stale time: never seen lost, yet a new life.
    let pid = pids(&second)[0];
    p.process("exec-n1").kill();
    p.process("exec-n1").start().unwrap();
    p.until(
        "alice",
        "back",
        "the process runs in the node's new life",
        |dt| running(dt) && pids(dt)[0] != pid,
    )
    .await;
    let event: Value =
        serde_json::from_slice(&timeout(WAIT, moves.next()).await.unwrap().unwrap().payload)
            .unwrap();
    let detail = event["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("started again"), "{event}");
    p.ok("alice", "terminate", json!({"id": "back"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_refuses_before_anything_starts() {
    let mut p = Platform::start(&["n1"], &["assets"]).await;
    p.spawn(
        "lifecycle",
        "lifecycle",
        &[("DTAAS_QUOTA_MAX_EXECUTING", "1")],
    );
    p.wait_for("lifecycle", "dt", "list", "dts").await;
    put_sleeper(&p).await;
    for id in ["q1", "q2"] {
        let config = json!({"id": id, "assets": [{"name": "s", "asset": "sleeper"}]});
        p.ok("alice", "create", json!({"config": config})).await;
    }
    p.ok("alice", "execute", json!({"id": "q1"})).await;
    let refused = p.dt("alice", "execute", json!({"id": "q2"})).await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 1"),
        "{refused}"
    );
    let q2 = p.ok("alice", "get", json!({"id": "q2"})).await;
    assert_eq!(q2["dt"]["state"], "created");
    assert!(
        q2["dt"]["processes"].as_array().unwrap().is_empty(),
        "nothing started: {q2}"
    );
    p.ok("alice", "terminate", json!({"id": "q1"})).await;
    p.ok("alice", "execute", json!({"id": "q2"})).await;
    p.ok("alice", "terminate", json!({"id": "q2"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_shows_a_dts_processes_from_execute_to_terminate() {
    let p = Platform::start(&["n1"], &["assets", "lifecycle", "graph"]).await;
    put_sleeper(&p).await;
    let config = json!({"id": "g-1", "assets": [{"name": "s", "asset": "sleeper"}],
        "external": {"event_sinks": ["alerts.g-1"]},
        "children": [{"id": "g-kid", "assets": [{"name": "k", "asset": "sleeper"}]}]});
    let mut sink = p.client.subscribe("alerts.g-1").await.unwrap();
    p.ok("alice", "create", json!({"config": config})).await;
    p.ok("alice", "execute", json!({"id": "g-1"})).await;
    // C_e: the event sink gets a copy of the DT's own lifecycle events.
    for state in ["created", "executing"] {
        let copy = timeout(WAIT, sink.next()).await.unwrap().unwrap();
        let event: Value = serde_json::from_slice(&copy.payload).unwrap();
        assert_eq!(
            (&event["dt"], &event["to"]),
            (&json!("g-1"), &json!(state)),
            "{event}"
        );
    }
    let running = |dt: &Value| dt["processes"][0]["status"] == "running";
    let parent = p.until("alice", "g-1", "its process runs", running).await;
    let child = p.until("alice", "g-kid", "its process runs", running).await;
    let tree = tree_until(&p, "g-1", "both processes running", |t| {
        t["state"] == "executing"
            && t["processes"][0]["status"] == "running"
            && t["children"][0]["processes"][0]["status"] == "running"
    })
    .await;
    let shown = &tree["processes"][0];
    assert_eq!(shown["role"], "s", "{tree}");
    assert_eq!(shown["node"], "n1", "{tree}");
    assert_eq!(shown["pid"], parent["processes"][0]["pid"], "{tree}");
    assert_eq!(shown["restarts"], 0, "{tree}");
    assert_eq!(tree["assets"][0]["id"], "alice/sleeper", "{tree}");
    assert_eq!(
        tree["children"][0]["processes"][0]["pid"], child["processes"][0]["pid"],
        "{tree}"
    );
    let on_n1 = graph(&p, "processes", json!({"node": "n1"})).await;
    let listed: Vec<(&str, &str)> = on_n1["processes"]
        .as_array()
        .unwrap_or_else(|| panic!("{on_n1}"))
        .iter()
        .map(|p| (p["dt"].as_str().unwrap(), p["role"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("g-1", "s"), ("g-kid", "k")], "{on_n1}");

    p.ok("alice", "terminate", json!({"id": "g-1"})).await;
    let tree = tree_until(&p, "g-1", "both processes killed", |t| {
        t["state"] == "terminated"
            && t["processes"][0]["status"] == "killed"
            && t["children"][0]["state"] == "terminated"
            && t["children"][0]["processes"][0]["status"] == "killed"
    })
    .await;
    assert_eq!(tree["processes"][0]["pid"], shown["pid"], "{tree}");
}

/// A platform whose lifecycle allows 1.5 CPU seconds a day (with `env` besides), and
/// alice's asset `name`: `script` run by python3.
async fn cpu_quota_platform(env: &[(&str, &str)], name: &str, script: &[u8]) -> Platform {
    let mut p = Platform::start(&["n1"], &["assets"]).await;
    let mut env = env.to_vec();
    env.push(("DTAAS_QUOTA_CPU_SECONDS", "1.5"));
    p.spawn("lifecycle", "lifecycle", &env);
    p.wait_for("lifecycle", "dt", "list", "dts").await;
    let file = format!("{name}.py");
    p.put_asset(
        "alice",
        name,
        &[(file.as_str(), script, 0o644)],
        json!({}),
        json!({"command": ["python3", file]}),
    )
    .await;
    p
}

/// `usage.get` of `user` over the last 24 hours.
async fn usage_today(p: &Platform, user: &str) -> Value {
    let reply = timeout(
        WAIT,
        p.client.request(
            format!("dtaas.v1.{user}.usage.get"),
            json!({"from": "-24h"}).to_string().into(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    serde_json::from_slice(&reply.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_quota_refuses_once_the_days_cpu_seconds_are_used() {
    // Spins until it used 2 CPU seconds (whatever the machine's load), then ends.
    let busy = b"import time\nwhile time.process_time() < 2.0:\n    pass\nprint('done')\n";
    let p = cpu_quota_platform(&[], "busy", busy).await;
    for id in ["cpu-1", "cpu-2"] {
        let config = json!({"id": id, "assets": [{"name": "b", "asset": "busy"}]});
        p.ok("alice", "create", json!({"config": config})).await;
    }
    p.ok("alice", "execute", json!({"id": "cpu-1"})).await;
    p.until("alice", "cpu-1", "the busy DT completed", |dt| {
        dt["state"] == "completed"
    })
    .await;
    // Its final usage sample is stored when it ended; usage.get shows it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut usage = Value::Null;
    while tokio::time::Instant::now() < deadline {
        usage = usage_today(&p, "alice").await;
        if usage["total"]["cpu_seconds"].as_f64().unwrap_or(0.0) >= 1.9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let used = usage["total"]["cpu_seconds"].as_f64().unwrap_or(0.0);
    assert!((1.9..3.0).contains(&used), "usage of the busy DT: {usage}");
    assert_eq!(usage["dts"][0]["dt"], "cpu-1", "{usage}");

    let refused = p.dt("alice", "execute", json!({"id": "cpu-2"})).await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("CPU seconds") && message.contains("limit is 1.5"),
        "{message}"
    );
    let second = p.ok("alice", "get", json!({"id": "cpu-2"})).await;
    assert_eq!(second["dt"]["state"], "created");
    assert!(
        second["dt"]["processes"].as_array().unwrap().is_empty(),
        "nothing started: {second}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dt_running_past_the_cpu_quota_is_terminated_with_the_reason() {
    // Spins for good: only the quota stops it.
    let spin = b"while True:\n    pass\n";
    let p = cpu_quota_platform(&[("DTAAS_QUOTA_CHECK_INTERVAL", "1s")], "spin", spin).await;
    let config = json!({"id": "spin-1", "assets": [{"name": "s", "asset": "spin"}]});
    p.ok("alice", "create", json!({"config": config})).await;
    let mut terminated = p
        .client
        .subscribe("dtaas.v1.evt.dt.spin-1.terminated")
        .await
        .unwrap();
    p.ok("alice", "execute", json!({"id": "spin-1"})).await;
    let running = p
        .until("alice", "spin-1", "the spinning process runs", |dt| {
            dt["processes"][0]["status"] == "running"
        })
        .await;
    let pid = pids(&running)[0];
    let dt = p
        .until("alice", "spin-1", "the quota terminated the DT", |dt| {
            dt["state"] == "terminated"
        })
        .await;
    let reason = dt["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("CPU seconds") && reason.contains("the limit is 1.5"),
        "{dt}"
    );
    let event: Value = serde_json::from_slice(
        &timeout(WAIT, terminated.next())
            .await
            .unwrap()
            .unwrap()
            .payload,
    )
    .unwrap();
    assert_eq!(event["detail"].as_str(), Some(reason), "{event}");
    assert!(!alive(pid), "the spinning process {pid} still runs");
    // What accounting counted is what the user sees, and it is past the limit.
    let usage = usage_today(&p, "alice").await;
    assert!(
        usage["total"]["cpu_seconds"].as_f64().unwrap_or(0.0) >= 1.5,
        "{usage}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_processes_restart_per_their_policy_with_an_event() {
    let p = Platform::start(&["n1"], &["assets", "lifecycle"]).await;
    put_sleeper(&p).await;
    p.put_asset(
        "alice",
        "blink",
        &[("run.sh", b"#!/bin/sh\necho blink\nsleep 0.2\n", 0o755)],
        json!({}),
        json!({"command": ["./run.sh"]}),
    )
    .await;
    let config = json!({"id": "pol", "assets": [
        {"name": "again", "asset": "sleeper"},
        {"name": "once", "asset": "sleeper", "restart": "never"},
        {"name": "loop", "asset": "blink", "restart": "always"}]});
    p.ok("alice", "create", json!({"config": config})).await;
    let mut events = p.client.subscribe("dtaas.v1.evt.proc.pol.*").await.unwrap();
    p.ok("alice", "execute", json!({"id": "pol"})).await;
    let process = |dt: &Value, role: &str| {
        dt["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["role"] == role)
            .unwrap()
            .clone()
    };
    let before = p
        .until("alice", "pol", "the sleepers run", |dt| {
            ["again", "once"].iter().all(|r| {
                let p = process(dt, r);
                p["status"] == "running" && p["pid"].is_u64()
            })
        })
        .await;
    let pid_of = |dt: &Value, role: &str| process(dt, role)["pid"].as_u64().unwrap() as i32;
    for role in ["again", "once"] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid_of(&before, role)),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    // on-failure (the default): a new run, a `restarted` event naming the signal.
    let deadline = tokio::time::Instant::now() + WAIT;
    let restarted = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = timeout(left, events.next()).await.unwrap().unwrap();
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        if event["role"] == "again" && event["status"] == "restarted" {
            break event;
        }
    };
    assert_eq!(restarted["signal"], 9, "{restarted}");
    let after = p
        .until("alice", "pol", "each policy took effect", |dt| {
            let again = process(dt, "again");
            again["status"] == "running"
                && again["restarts"] == 1
                && process(dt, "once")["status"] == "failed"
                && process(dt, "loop")["restarts"].as_u64() >= Some(2)
        })
        .await;
    assert_ne!(pid_of(&after, "again"), pid_of(&before, "again"));
    assert_eq!(
        process(&after, "once")["restarts"],
        0,
        "never: not restarted"
    );
    assert_eq!(after["state"], "executing", "the others still run: {after}");
    // Every run's output is in the DT's log history, oldest first. The third run's
    // line may still be on its way when its `restarted` event was taken.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (logs, lines) = loop {
        let logs = p
            .ok("alice", "logs", json!({"id": "pol", "lines": 50}))
            .await;
        let lines: Vec<String> = logs["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["line"].as_str().map(str::to_owned))
            .collect();
        if lines.iter().filter(|l| *l == "blink").count() >= 3 {
            break (logs, lines);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than 3 blinks: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(lines.iter().any(|l| l == "sleeping"), "{logs}");
    p.ok("alice", "terminate", json!({"id": "pol"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_people_cli_runs_a_dt_through_its_lifecycle() {
    let p = Platform::start(&["n1"], &["assets", "lifecycle"]).await;
    put_doubler(&p).await;
    let dir = tempfile::tempdir().unwrap();
    // The minimal configuration of the issue, as a person writes it.
    let yaml = dir.path().join("cli.yaml");
    std::fs::write(
        &yaml,
        "id: cli-1\nassets:\n  - name: doubler\n    asset: alice/doubler\n    \
         inputs: {x: dtaas.v1.tel.pt9.val}\n    params: {factor: 3}\n",
    )
    .unwrap();
    let toml = dir.path().join("cli-v2.toml");
    std::fs::write(
        &toml,
        "id = \"cli-1\"\n[[assets]]\nname = \"doubler\"\nasset = \"alice/doubler\"\n\
         inputs = { x = \"dtaas.v1.tel.pt9.val\" }\nparams = { factor = 4 }\n",
    )
    .unwrap();
    let yaml = yaml.to_str().unwrap();
    let out = cli_ok(&p, &["dt", "create", "-f", yaml]).await;
    assert!(out.contains("DT cli-1 of alice: created"), "{out}");
    assert!(out.contains("asset doubler: alice/doubler@1"), "{out}");
    let out = cli_ok(&p, &["dt", "execute", "cli-1"]).await;
    assert!(out.contains("executing"), "{out}");
    p.until("alice", "cli-1", "the doubler runs", |dt| {
        dt["processes"][0]["status"] == "running"
    })
    .await;
    // get --json: the registry entry with the last log lines.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Value::Null;
    while tokio::time::Instant::now() < deadline {
        got = serde_json::from_str(&cli_ok(&p, &["dt", "get", "cli-1", "--json"]).await).unwrap();
        if got.to_string().contains("doubler ready") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(got["dt"]["processes"][0]["node"], "n1", "{got}");
    assert!(got["logs"].to_string().contains("doubler ready"), "{got}");
    let out = cli_ok(&p, &["dt", "get", "cli-1"]).await;
    assert!(out.contains("ROLE") && out.contains("running"), "{out}");
    let out = cli_ok(&p, &["dt", "list"]).await;
    assert!(
        out.lines()
            .any(|l| l.starts_with("cli-1") && l.contains("executing")),
        "{out}"
    );
    let out = cli_ok(&p, &["dt", "logs", "cli-1", "-n", "5"]).await;
    assert!(out.contains("doubler ready, factor 3"), "{out}");
    let out = cli_ok(&p, &["dt", "save", "cli-1"]).await;
    assert!(out.contains("snapshot s-"), "{out}");
    // logs -f follows: the line of the process evolve restarts arrives while it runs.
    let mut follow = dtaas_as_alice(&p, &["dt", "logs", "cli-1", "-f"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut followed = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    // The first line (history) is printed after the follow subscribed.
    let history = timeout(WAIT, followed.next_line()).await.unwrap().unwrap();
    assert!(history.is_some(), "logs -f printed the history");
    let out = cli_ok(&p, &["dt", "evolve", "-f", toml.to_str().unwrap()]).await;
    assert!(out.contains("configuration v2"), "{out}");
    let evolved = async {
        while let Some(line) = followed.next_line().await.unwrap() {
            if line.contains("doubler ready, factor 4") {
                return line;
            }
        }
        panic!("dtaas dt logs -f ended");
    };
    timeout(WAIT, evolved)
        .await
        .expect("logs -f shows the evolved process");
    follow.kill().await.unwrap();
    let out = cli_ok(&p, &["dt", "terminate", "cli-1"]).await;
    assert!(out.contains("terminated"), "{out}");
    // restore: the snapshot's configuration (factor 3) runs again.
    let out = cli_ok(&p, &["dt", "restore", "cli-1"]).await;
    assert!(out.contains("executing"), "{out}");
    p.until("alice", "cli-1", "the restored doubler runs", |dt| {
        dt["processes"][0]["status"] == "running"
    })
    .await;
    let out = cli_ok(&p, &["dt", "terminate", "cli-1"]).await;
    assert!(out.contains("terminated"), "{out}");
    let out = cli_ok(&p, &["usage", "--json"]).await;
    let usage: Value = serde_json::from_str(&out).unwrap();
    assert!(usage["total"].is_object(), "{usage}");
    // Errors: a clear message and a failing exit status.
    let (ok, _, err) = cli(&p, &["dt", "execute", "nope"]).await;
    assert!(!ok && err.contains("nope"), "{err}");
    let (ok, _, err) = cli(&p, &["dt", "terminate", "cli-1"]).await;
    assert!(!ok && err.contains("terminated"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dt_whose_process_fails_for_good_is_failed_and_can_run_again() {
    let p = Platform::start(&["n1"], &["assets", "lifecycle"]).await;
    let run = b"#!/bin/sh\necho giving up >&2\nexit 3\n";
    p.put_asset(
        "alice",
        "quitter",
        &[("run.sh", run, 0o755)],
        json!({}),
        json!({"command": ["./run.sh"]}),
    )
    .await;
    let config =
        json!({"id": "fails", "assets": [{"name": "q", "asset": "quitter", "restart": "never"}]});
    p.ok("alice", "create", json!({"config": config})).await;
    p.ok("alice", "execute", json!({"id": "fails"})).await;
    let dt = p
        .until("alice", "fails", "the DT failed", |dt| {
            dt["state"] == "failed"
        })
        .await;
    assert_eq!(dt["processes"][0]["status"], "failed", "{dt}");
    assert_eq!(dt["processes"][0]["exit_code"], 3, "{dt}");
    assert!(
        dt["reason"].as_str().unwrap().contains("process q failed"),
        "{dt}"
    );
    // save needs an executing DT: a conflict naming the state.
    let refused = p.dt("alice", "save", json!({"id": "fails"})).await;
    assert_eq!(refused["error"]["code"], "conflict", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("failed"),
        "{refused}"
    );
    // A failed DT may be executed again: a new run, failing again.
    let first = dt["processes"][0]["pid"].clone();
    p.ok("alice", "execute", json!({"id": "fails"})).await;
    p.until("alice", "fails", "a second run failed", |dt| {
        dt["state"] == "failed" && dt["processes"][0]["pid"] != first
    })
    .await;
}

/// A process event that cannot be decoded goes to the DLQ with its reason and changes
/// nothing; the events after it are still taken (the DT terminates as usual).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_process_event_is_dead_lettered() {
    use dtaas_schemas::names::{header, STREAM_DLQ};
    use dtaas_schemas::subject;
    let p = Platform::start(&["n1"], &["assets", "lifecycle"]).await;
    put_sleeper(&p).await;
    // Running means the process-event consumer is taking events.
    run_sleeper(&p, "dlq-1").await;
    let js = async_nats::jetstream::new(p.client.clone());
    let forged = subject::event("proc", "dlq-1", "failed").unwrap();
    js.publish(forged, "not an event".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let stream = js.get_stream(STREAM_DLQ).await.unwrap();
    let dlq = subject::dlq("lifecycle").unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let entry = loop {
        if let Ok(entry) = stream.get_last_raw_message_by_subject(&dlq).await {
            break entry;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no DLQ entry\n{}",
            p.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let reason = entry.headers.get(header::DLQ_REASON).unwrap().to_string();
    assert!(!reason.is_empty(), "{entry:?}");
    assert_eq!(&entry.payload[..], b"not an event");
    // The consumer's counters are lifecycle's stats.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = timeout(
            WAIT,
            p.client.request("$SRV.STATS.dtaas-lifecycle", "".into()),
        )
        .await
        .unwrap()
        .unwrap();
        let stats: Value = serde_json::from_slice(&stats.payload).unwrap();
        let data = &stats["endpoints"][0]["data"];
        if data["dead_lettered"] == 1 {
            assert!(data["messages"].as_u64() >= Some(1), "{stats}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dt = p.ok("alice", "get", json!({"id": "dlq-1"})).await;
    assert_eq!(
        dt["dt"]["state"], "executing",
        "the forged event changed nothing: {dt}"
    );
    p.ok("alice", "terminate", json!({"id": "dlq-1"})).await;
    p.until("alice", "dlq-1", "terminated", |dt| {
        dt["state"] == "terminated"
    })
    .await;
}

/// A lifecycle deployment with a durable of its own starts at the next process event
/// (docs/lifecycle.md): an event published before the durable existed is not taken,
/// one published after it is. Lifecycle also stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_lifecycle_durable_takes_only_events_published_after_it() {
    use dtaas_schemas::exec::{ProcessEvent, ProcessEventKind};
    use dtaas_schemas::names::STREAM_EVENTS;
    let mut p = Platform::start(&["n1"], &["assets", "lifecycle"]).await;
    put_sleeper(&p).await;
    let running = run_sleeper(&p, "fresh-1").await;
    // Events of the running process itself, as exec would publish them.
    let event = |status, restarts| ProcessEvent {
        dt: "fresh-1".into(),
        role: running["processes"][0]["role"].as_str().unwrap().into(),
        node: running["processes"][0]["node"].as_str().unwrap().into(),
        pid: pids(&running)[0],
        status,
        exit_code: Some(0),
        signal: None,
        restarts,
        at: dtaas_schemas::time::now_ns(),
        detail: None,
    };
    let js = async_nats::jetstream::new(p.client.clone());
    let publish = |event: ProcessEvent| {
        let js = js.clone();
        async move {
            let subject = event.subject().unwrap();
            let body = serde_json::to_vec(&event).unwrap();
            timeout(WAIT, async {
                js.publish(subject, body.into())
                    .await
                    .unwrap()
                    .await
                    .unwrap()
            })
            .await
            .unwrap();
        }
    };
    let stopped = p.process("lifecycle").stop();
    assert_eq!(stopped, Some(0), "lifecycle stops cleanly\n{}", p.logs());
    // Taken, this would complete the DT (its only process exited).
    publish(event(ProcessEventKind::Exited, 0)).await;
    let stream = js.get_stream(STREAM_EVENTS).await.unwrap();
    let old = stream.consumer_info("lifecycle").await.unwrap();
    assert_eq!(old.num_pending, 1, "the old durable has the event: {old:?}");

    p.spawn(
        "lifecycle-new",
        "lifecycle",
        &[("DTAAS_LIFECYCLE_DURABLE", "lifecycle-new")],
    );
    p.wait_for("lifecycle-new", "dt", "list", "dts").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while stream.consumer_info("lifecycle-new").await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no durable lifecycle-new\n{}",
            p.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publish(event(ProcessEventKind::Restarted, 1)).await;
    let after = p
        .until("alice", "fresh-1", "the later event is taken", |dt| {
            dt["processes"][0]["restarts"] == 1
        })
        .await;
    assert_eq!(
        after["state"], "executing",
        "the event from before the durable existed was not taken: {after}"
    );
    assert_eq!(after["processes"][0]["status"], "running", "{after}");
    p.ok("alice", "terminate", json!({"id": "fresh-1"})).await;
    p.until("alice", "fresh-1", "terminated", |dt| {
        dt["state"] == "terminated"
    })
    .await;
}
