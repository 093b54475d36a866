//! The end of a DT's life and the verbs over a whole hierarchy, against nats-server,
//! a `dtaas exec` node running real processes and the assets, lifecycle and graph
//! workers: `analyze` and `clean` over a three-level tree in their documented orders,
//! and `delete` (the id free again, snapshots gone, assets no longer pinned, usage
//! kept; refused for an executing DT and for a child alone), by request and by CLI.

mod exec_support;
mod lifecycle_support;

use futures::{StreamExt, TryStreamExt};
use lifecycle_support::{cli, cli_ok, put_sleeper, tree_until, Platform, WAIT};
use serde_json::{json, Value};
use tokio::time::timeout;

/// The message of an error reply, which must have `code`.
fn error_of(reply: &Value, code: &str) -> String {
    assert_eq!(reply["error"]["code"], code, "{reply}");
    reply["error"]["message"].as_str().unwrap().to_owned()
}

/// Puts `alice/layered`: a DTaaS-layout DT whose `analyze` and `clean` scripts append
/// `<dt> <phase> <work directory>` to `$ORDER_LOG`.
async fn put_layered(p: &Platform) {
    let script = |phase: &str| {
        format!("#!/bin/bash\necho \"$DTAAS_DT {phase} $PWD\" >> \"$ORDER_LOG\"\n").into_bytes()
    };
    let (analyze, clean) = (script("analyze"), script("clean"));
    p.put_asset(
        "alice",
        "layered",
        &[
            ("lifecycle/analyze", &analyze, 0o755),
            ("lifecycle/clean", &clean, 0o755),
        ],
        json!({}),
        json!({"lifecycle": {"analyze": "lifecycle/analyze", "clean": "lifecycle/clean"}}),
    )
    .await;
}

/// The lines of `log` appended since it had `from` lines, as (dt, phase, directory).
fn lines_since(log: &std::path::Path, from: usize) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .skip(from)
        .map(|l| {
            let mut parts = l.splitn(3, ' ').map(str::to_owned);
            let mut next = || parts.next().unwrap_or_default();
            (next(), next(), next())
        })
        .collect()
}

/// What a `dt.analyze`/`dt.clean` reply says ran: (dt, scripts) in order.
fn ran(reply: &Value) -> Vec<(String, Vec<String>)> {
    reply["ran"]
        .as_array()
        .unwrap_or_else(|| panic!("{reply}"))
        .iter()
        .map(|r| {
            let scripts = r["scripts"].as_array().unwrap().iter();
            let scripts = scripts.map(|s| s.as_str().unwrap().to_owned()).collect();
            (r["id"].as_str().unwrap().to_owned(), scripts)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_runs_children_first_and_clean_parents_first_over_a_tree() {
    let p = Platform::start(&["n1"], &["assets", "lifecycle"]).await;
    put_layered(&p).await;
    put_sleeper(&p).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("order.log");
    let env = json!({"ORDER_LOG": log.display().to_string()});
    let layered = |id: &str, children: Value| {
        json!({"id": id, "assets": [{"name": "twin", "asset": "layered"}],
               "infrastructure": {"env": env}, "children": children})
    };
    // factory ─┬─ line ── robot      (all three DTaaS-layout)
    //          └─ plain              (no scripts: skipped)
    let plain = json!({"id": "plain", "assets": [{"name": "s", "asset": "sleeper"}]});
    let robot = layered("robot", json!([]));
    let line = layered("line", json!([robot]));
    let factory = layered("factory", json!([line, plain]));
    p.ok("alice", "create", json!({"config": factory})).await;
    let mut events = p.client.subscribe("dtaas.v1.evt.dt.*.*").await.unwrap();

    let analyzed = p.ok("alice", "analyze", json!({"id": "factory"})).await;
    let script = |phase: &str| vec![format!("twin-{phase}")];
    assert_eq!(
        ran(&analyzed),
        [
            ("plain".to_owned(), vec![]),
            ("robot".to_owned(), script("analyze")),
            ("line".to_owned(), script("analyze")),
            ("factory".to_owned(), script("analyze")),
        ],
        "{analyzed}"
    );
    assert_eq!(analyzed["dt"]["state"], "created", "{analyzed}");
    let lines = lines_since(&log, 0);
    let order: Vec<&str> = lines.iter().map(|(dt, _, _)| dt.as_str()).collect();
    assert_eq!(order, ["robot", "line", "factory"], "{lines:?}");
    for (dt, phase, pwd) in &lines {
        assert_eq!(phase, "analyze");
        // Each DT's script runs in its own work directory.
        assert!(pwd.ends_with(&format!("/work/{dt}/twin-analyze")), "{pwd}");
    }
    // Each DT that ran its script went through `analysing` and back.
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let message = timeout(WAIT, events.next()).await.unwrap().unwrap();
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        seen.push(format!("{} {}", event["dt"], event["to"]).replace('"', ""));
    }
    assert_eq!(
        seen,
        [
            "robot analysing",
            "robot created",
            "line analysing",
            "line created",
            "factory analysing",
            "factory created"
        ]
    );

    let cleaned = p.ok("alice", "clean", json!({"id": "factory"})).await;
    assert_eq!(
        ran(&cleaned),
        [
            ("factory".to_owned(), script("clean")),
            ("line".to_owned(), script("clean")),
            ("robot".to_owned(), script("clean")),
            ("plain".to_owned(), vec![]),
        ],
        "{cleaned}"
    );
    let lines = lines_since(&log, 3);
    let order: Vec<(&str, &str)> = lines
        .iter()
        .map(|(dt, phase, _)| (dt.as_str(), phase.as_str()))
        .collect();
    assert_eq!(
        order,
        [("factory", "clean"), ("line", "clean"), ("robot", "clean")]
    );

    // A subtree alone: analyze of line runs robot's, then line's.
    let analyzed = p.ok("alice", "analyze", json!({"id": "line"})).await;
    let ids: Vec<String> = ran(&analyzed).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["robot", "line"], "{analyzed}");

    // clean is refused while a DT of the tree executes, and then nothing runs.
    p.ok("alice", "execute", json!({"id": "factory"})).await;
    let before = lines_since(&log, 0).len();
    let refused = p.dt("alice", "clean", json!({"id": "factory"})).await;
    let message = error_of(&refused, "conflict");
    assert!(message.contains("executing"), "{message}");
    assert_eq!(lines_since(&log, before), [], "nothing ran");
    p.ok("alice", "terminate", json!({"id": "factory"})).await;

    // A tree where no DT has the script: a bad_request that says so.
    let none = json!({"id": "bare", "assets": [{"name": "s", "asset": "sleeper"}],
                      "children": [{"id": "bare-kid", "assets": [{"name": "s", "asset": "sleeper"}]}]});
    p.ok("alice", "create", json!({"config": none})).await;
    let refused = p.dt("alice", "analyze", json!({"id": "bare"})).await;
    let message = error_of(&refused, "bad_request");
    assert!(message.contains("nor any of its children"), "{message}");
}

/// The names in object store `dtaas-snapshots` that start with `prefix`.
async fn snapshot_objects(p: &Platform, prefix: &str) -> Vec<String> {
    let js = async_nats::jetstream::new(p.client.clone());
    let store = js.get_object_store("dtaas-snapshots").await.unwrap();
    let list = timeout(WAIT, store.list()).await.unwrap().unwrap();
    let objects: Vec<_> = timeout(WAIT, list.try_collect::<Vec<_>>())
        .await
        .unwrap()
        .unwrap();
    objects
        .into_iter()
        .map(|o| o.name)
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// A JSON request of alice to `<service>.<verb>`; the JSON reply (errors too).
async fn ask(p: &Platform, service: &str, verb: &str, body: Value) -> Value {
    let subject = dtaas_schemas::subject::request("alice", service, verb).unwrap();
    let reply = timeout(WAIT, p.client.request(subject, body.to_string().into()))
        .await
        .unwrap()
        .unwrap();
    serde_json::from_slice(&reply.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_frees_the_id_and_the_assets_and_removes_snapshots_but_keeps_usage() {
    let p = Platform::start(&["n1"], &["assets", "lifecycle", "graph"]).await;
    // `nats micro info dtaas-lifecycle` lists the verb.
    let info = timeout(
        WAIT,
        p.client.request("$SRV.INFO.dtaas-lifecycle", "".into()),
    )
    .await
    .unwrap()
    .unwrap();
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    let subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("{info}"))
        .iter()
        .filter_map(|e| e["subject"].as_str())
        .collect();
    assert!(subjects.contains(&"dtaas.v1.*.dt.delete"), "{subjects:?}");
    put_sleeper(&p).await;
    let plant = json!({"id": "plant", "assets": [{"name": "s", "asset": "sleeper"}],
        "children": [{"id": "pump", "assets": [{"name": "k", "asset": "sleeper"}]}]});
    p.ok("alice", "create", json!({"config": plant})).await;
    p.ok("alice", "execute", json!({"id": "plant"})).await;
    let running = |dt: &Value| dt["processes"][0]["status"] == "running";
    p.until("alice", "pump", "the child runs", running).await;
    p.until("alice", "plant", "the parent runs", running).await;
    p.ok("alice", "save", json!({"id": "plant"})).await;
    assert!(!snapshot_objects(&p, "plant/").await.is_empty());
    assert!(!snapshot_objects(&p, "pump/").await.is_empty());

    // Executing: a conflict naming the state; a child alone: told to evolve the parent.
    let refused = p.dt("alice", "delete", json!({"id": "plant"})).await;
    let message = error_of(&refused, "conflict");
    assert!(
        message.contains("executing") && message.contains("terminate"),
        "{message}"
    );
    let refused = p.dt("alice", "delete", json!({"id": "pump"})).await;
    let message = error_of(&refused, "conflict");
    assert!(
        message.contains("child of plant") && message.contains("evolve plant"),
        "{message}"
    );

    // An evolve that adds a child whose id another DT's child has names that DT.
    p.ok(
        "alice",
        "create",
        json!({"config": {"id": "tank", "assets": [{"name": "s", "asset": "sleeper"}]}}),
    )
    .await;
    let grab = json!({"id": "tank", "assets": [{"name": "s", "asset": "sleeper"}],
                      "children": [{"id": "pump", "assets": [{"name": "k", "asset": "sleeper"}]}]});
    let refused = p
        .dt("alice", "evolve", json!({"id": "tank", "config": grab}))
        .await;
    let message = error_of(&refused, "bad_request");
    assert!(
        message.contains("children[0].id") && message.contains("child of DT plant"),
        "{message}"
    );
    assert!(message.contains("evolve plant without pump"), "{message}");

    // A DT that is not terminated pins its assets; tank is `created`.
    let refused = ask(&p, "asset", "delete", json!({"name": "sleeper"})).await;
    assert_eq!(refused["error"]["code"], "conflict", "{refused}");

    p.ok("alice", "terminate", json!({"id": "plant"})).await;
    let mut deleted_events = p
        .client
        .subscribe("dtaas.v1.evt.dt.*.deleted")
        .await
        .unwrap();
    let deleted = p.ok("alice", "delete", json!({"id": "plant"})).await;
    let gone: Vec<(&str, &str)> = deleted["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap(), d["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        gone,
        [("plant", "terminated"), ("pump", "terminated")],
        "{deleted}"
    );
    assert!(
        deleted["deleted"][0]["snapshot_objects"].as_u64().unwrap() >= 1,
        "{deleted}"
    );
    // Children go first; each event closes that DT's history.
    for expected in ["pump", "plant"] {
        let message = timeout(WAIT, deleted_events.next()).await.unwrap().unwrap();
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(
            (event["dt"].as_str(), event["from"].as_str()),
            (Some(expected), Some("terminated")),
            "{event}"
        );
    }
    for id in ["plant", "pump"] {
        let get = p.dt("alice", "get", json!({ "id": id })).await;
        assert_eq!(get["error"]["code"], "not_found", "{get}");
    }
    assert_eq!(snapshot_objects(&p, "plant/").await, Vec::<String>::new());
    assert_eq!(snapshot_objects(&p, "pump/").await, Vec::<String>::new());
    // The graph keeps the DT's node and history, marked deleted, without its child edge.
    tree_until(&p, "plant", "plant deleted", |t| {
        t["state"] == "deleted" && t["children"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    // Accounting keeps what the deleted DTs used.
    let usage = ask(&p, "usage", "get", json!({"from": "-1h"})).await;
    for id in ["plant", "pump"] {
        let used = usage["dts"]
            .as_array()
            .unwrap_or_else(|| panic!("{usage}"))
            .iter()
            .find(|d| d["dt"] == id)
            .unwrap_or_else(|| panic!("no usage of {id}: {usage}"));
        assert!(used["runs"].as_u64().unwrap() >= 1, "{usage}");
    }

    // The id is free: the same configuration creates the DT anew.
    let again = p.ok("alice", "create", json!({"config": plant})).await;
    assert_eq!(
        (&again["dt"]["state"], &again["dt"]["config_version"]),
        (&json!("created"), &json!(1)),
        "{again}"
    );
    assert_eq!(again["dt"]["snapshots"], json!([]), "{again}");
    tree_until(&p, "plant", "plant created again", |t| {
        t["state"] == "created" && t["children"][0]["id"] == "pump"
    })
    .await;

    // By CLI: a created DT with its child, and then tank, which pins sleeper no more.
    let out = cli_ok(&p, &["dt", "delete", "plant"]).await;
    assert!(out.contains("deleted DT plant (was created"), "{out}");
    assert!(out.contains("deleted DT pump"), "{out}");
    let out = cli_ok(&p, &["dt", "delete", "tank", "--json"]).await;
    let reply: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reply["deleted"][0]["id"], "tank", "{out}");
    let (ok, _, err) = cli(&p, &["dt", "delete", "tank"]).await;
    assert!(!ok && err.contains("tank"), "{err}");
    let freed = ask(&p, "asset", "delete", json!({"name": "sleeper"})).await;
    assert_eq!(freed["deleted"], json!(["alice/sleeper@1"]), "{freed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evolve_takes_an_existing_top_level_dt_in_as_a_child() {
    let p = Platform::start(&["n1"], &["assets", "lifecycle"]).await;
    put_sleeper(&p).await;
    let dt = |id: &str, children: Value| json!({"id": id, "assets": [{"name": "s", "asset": "sleeper"}], "children": children});
    let mut valve_v2 = dt("valve", json!([]));
    valve_v2["infrastructure"] = json!({"env": {"MODE": "child"}});
    for id in ["tank", "valve", "pipe"] {
        p.ok("alice", "create", json!({"config": dt(id, json!([]))}))
            .await;
    }
    let running =
        |dt: &Value| dt["state"] == "executing" && dt["processes"][0]["status"] == "running";
    p.ok("alice", "execute", json!({"id": "valve"})).await;
    p.until("alice", "valve", "valve runs", running).await;
    p.ok("alice", "save", json!({"id": "valve"})).await;

    // An executing DT is not taken in: nothing changes.
    let evolve = |config: Value| json!({"id": config["id"], "config": config});
    let refused = p
        .dt("alice", "evolve", evolve(dt("tank", json!([valve_v2]))))
        .await;
    let message = error_of(&refused, "bad_request");
    assert!(
        message.contains("children[0].id") && message.contains("terminate valve first"),
        "{message}"
    );
    p.ok("alice", "terminate", json!({"id": "valve"})).await;

    // Terminated, it is taken in by an executing parent and started with its new part.
    p.ok("alice", "execute", json!({"id": "tank"})).await;
    let evolved = p
        .ok("alice", "evolve", evolve(dt("tank", json!([valve_v2]))))
        .await;
    assert_eq!(evolved["dt"]["config"]["children"][0]["id"], "valve");
    let valve = p
        .until("alice", "valve", "valve runs as a child", running)
        .await;
    assert_eq!(valve["parent"], "tank", "{valve}");
    assert_eq!(valve["config_version"], 2, "{valve}");
    assert_eq!(valve["config"]["infrastructure"]["env"]["MODE"], "child");
    assert_eq!(
        valve["snapshots"].as_array().unwrap().len(),
        1,
        "it keeps its snapshots: {valve}"
    );
    let refused = p.dt("alice", "terminate", json!({"id": "valve"})).await;
    assert_eq!(
        refused["error"]["code"], "conflict",
        "a child now: {refused}"
    );

    // Moving it: out of tank (it becomes a DT of its own), into pipe.
    let refused = p
        .dt("alice", "evolve", evolve(dt("pipe", json!([valve_v2]))))
        .await;
    let message = error_of(&refused, "bad_request");
    assert!(message.contains("child of DT tank"), "{message}");
    p.ok("alice", "evolve", evolve(dt("tank", json!([])))).await;
    p.until("alice", "valve", "valve detached and terminated", |dt| {
        dt["state"] == "terminated" && dt["parent"].is_null()
    })
    .await;
    p.ok("alice", "evolve", evolve(dt("pipe", json!([valve_v2]))))
        .await;
    let valve = p.ok("alice", "get", json!({"id": "valve"})).await;
    assert_eq!(valve["dt"]["parent"], "pipe", "{valve}");

    // A DT cannot take in the top of its own tree.
    let mut looped = valve_v2.clone();
    looped["children"] = json!([dt("pipe", json!([]))]);
    let refused = p.dt("alice", "evolve", evolve(looped)).await;
    let message = error_of(&refused, "bad_request");
    assert!(message.contains("top of this tree"), "{message}");

    // Deleting pipe deletes the DT it took in.
    p.ok("alice", "terminate", json!({"id": "tank"})).await;
    let deleted = p.ok("alice", "delete", json!({"id": "pipe"})).await;
    let ids: Vec<&str> = deleted["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["pipe", "valve"], "{deleted}");
}
