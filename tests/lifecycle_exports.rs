//! `C_e` exports and dashboards against real parts (nats-server, a `dtaas exec` node
//! running Python DT processes, the asset library, lifecycle and the graph as `dtaas`
//! processes): one user's DT reads another user's exported output and nothing else.

mod exec_support;
mod lifecycle_support;

use std::time::Duration;

use futures::StreamExt;
use lifecycle_support::{pids, Platform, WAIT};
use serde_json::{json, Value};
use tokio::time::timeout;

const DOUBLER: &[u8] = include_bytes!("lifecycle_support/doubler.py");

/// Puts `<user>/doubler`: output `y` = `factor` × input `x`.
async fn put_doubler(p: &Platform, user: &str) {
    p.put_asset(
        user,
        "doubler",
        &[("doubler.py", DOUBLER, 0o644)],
        json!({"inputs": [{"name": "x", "type": "number"}],
               "outputs": [{"name": "y", "type": "number"}],
               "params": [{"name": "factor", "type": "integer", "default": 2}]}),
        json!({"command": ["python3", "doubler.py"]}),
    )
    .await;
}

/// Alice's DT: `d` doubles telemetry `pt-x.val` into output `y`; `d2` doubles that
/// again into output `internal`. `exports` says which of them others may read.
fn alices(exports: Value) -> Value {
    json!({"id": "alice-dbl", "assets": [
        {"name": "d", "asset": "doubler", "inputs": {"x": "dtaas.v1.tel.pt-x.val"}},
        {"name": "d2", "asset": "doubler", "inputs": {"x": "d.y"}, "outputs": {"y": "internal"}}],
      "external": {"exports": exports,
                   "dashboards": ["https://grafana.example.com/d/alice-dbl"]}})
}

/// Bob's DT `id`: his doubler, times `factor`, reading `source`.
fn bobs(id: &str, source: &str, factor: u32) -> Value {
    json!({"id": id, "assets": [{"name": "b", "asset": "doubler",
        "inputs": {"x": source}, "params": {"factor": factor}}]})
}

/// The message of a refused request, which must be a `bad_request`.
fn refusal(reply: &Value) -> String {
    assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    reply["error"]["message"].as_str().unwrap().to_owned()
}

/// Publishes `val = 7` on PT `pt-x` until `subject` carries a record whose `y` is
/// `expected` (processes subscribe a moment after they started).
async fn until_value(p: &Platform, subject: &str, expected: f64) {
    let mut outputs = p.client.subscribe(subject.to_owned()).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    while tokio::time::Instant::now() < deadline {
        let record = json!({"pt": "pt-x", "measurement": "val",
            "ts": dtaas_schemas::time::now_ns(), "fields": {"val": 7.0}});
        p.client
            .publish("dtaas.v1.tel.pt-x.val", record.to_string().into())
            .await
            .unwrap();
        while let Ok(Some(message)) = timeout(Duration::from_millis(300), outputs.next()).await {
            let value: Value = serde_json::from_slice(&message.payload).unwrap();
            if value["fields"]["y"] == expected {
                return;
            }
            seen.push(value);
        }
    }
    panic!(
        "no y = {expected} on {subject}; seen {seen:?}\n{}",
        p.logs()
    );
}

/// Polls `user`'s `graph.tree` of `dt` until `check` accepts the whole reply.
async fn graph_until(
    p: &Platform,
    user: &str,
    dt: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) {
    let subject = dtaas_schemas::subject::request(user, "graph", "tree").unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = Value::Null;
    while tokio::time::Instant::now() < deadline {
        let body = json!({ "dt": dt }).to_string();
        if let Ok(Ok(reply)) = timeout(
            Duration::from_secs(5),
            p.client.request(subject.clone(), body.into()),
        )
        .await
        {
            last = serde_json::from_slice(&reply.payload).unwrap();
            if check(&last) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what} not in the graph; last: {last}\n{}", p.logs());
}

/// `dtaas dt get <id>` as `user`, readable; its stdout.
async fn cli_get(p: &Platform, user: &str, id: &str) -> String {
    let output = timeout(
        WAIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_dtaas"))
            .args(["dt", "get", id])
            .env("DTAAS_NATS_URL", p.nats.url())
            .env("DTAAS_USER", user)
            .env_remove("DTAAS_CONFIG")
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "dtaas dt get {id}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_reads_alices_exported_output_and_nothing_else() {
    let p = Platform::start(&["n1"], &["assets", "lifecycle", "graph"]).await;
    put_doubler(&p, "alice").await;
    put_doubler(&p, "bob").await;

    // Exports and dashboards are checked like the rest, every problem with its path.
    let bad = json!({"id": "alice-bad", "children": [{
        "id": "alice-bad-kid",
        "assets": [{"name": "d", "asset": "doubler", "inputs": {"x": "dtaas.v1.tel.pt-x.val"}}],
        "external": {"exports": ["y", "nope"], "dashboards": ["grafana:3000/d/x"]}}]});
    let message = refusal(&p.dt("alice", "create", json!({"config": bad})).await);
    assert!(
        message.contains(
            "children[0].external.exports[1]: no role of DT \"alice-bad-kid\" publishes \
             an output \"nope\" (there are: y)"
        ),
        "{message}"
    );
    assert!(
        message.contains("children[0].external.dashboards[0]: \"grafana:3000/d/x\""),
        "{message}"
    );
    assert!(message.contains("has 2 problem(s)"), "{message}");
    let nothing = p.dt("alice", "get", json!({"id": "alice-bad"})).await;
    assert_eq!(
        nothing["error"]["code"], "not_found",
        "nothing registered: {nothing}"
    );

    let created = p
        .ok("alice", "create", json!({"config": alices(json!(["y"]))}))
        .await;
    assert_eq!(
        created["exports"],
        json!(["dtaas.v1.dt.alice-dbl.out.y"]),
        "{created}"
    );
    p.ok("alice", "execute", json!({"id": "alice-dbl"})).await;
    let shown = cli_get(&p, "alice", "alice-dbl").await;
    assert!(
        shown.contains("exports dtaas.v1.dt.alice-dbl.out.y")
            && shown.contains("dashboard https://grafana.example.com/d/alice-dbl"),
        "{shown}"
    );

    // Bob may not read what alice does not export, and learns nothing from trying:
    // a DT of hers exporting nothing reads like no DT at all.
    p.ok(
        "alice",
        "create",
        json!({"config": {"id": "alice-quiet", "assets": [{"name": "d", "asset": "doubler",
            "inputs": {"x": "dtaas.v1.tel.pt-x.val"}}]}}),
    )
    .await;
    let internal = refusal(
        &p.dt(
            "bob",
            "create",
            json!({"config": bobs("bob-peek", "dtaas.v1.dt.alice-dbl.out.internal", 5)}),
        )
        .await,
    );
    assert!(
        internal.contains(
            "assets[0].inputs.x: no DT \"alice-dbl\" of yours, and no DT exports \
             dtaas.v1.dt.alice-dbl.out.internal (DT alice-dbl exports: y)"
        ),
        "{internal}"
    );
    let quiet = refusal(
        &p.dt(
            "bob",
            "create",
            json!({"config": bobs("bob-peek", "dtaas.v1.dt.alice-quiet.out.y", 5)}),
        )
        .await,
    );
    let ghost = refusal(
        &p.dt(
            "bob",
            "create",
            json!({"config": bobs("bob-peek", "dtaas.v1.dt.ghost.out.y", 5)}),
        )
        .await,
    );
    assert_eq!(quiet.replace("alice-quiet", "ghost"), ghost);
    assert!(
        ghost.contains("no DT \"ghost\" of yours, and no DT exports dtaas.v1.dt.ghost.out.y"),
        "{ghost}"
    );

    // Bob reads her exported output: 7 × 2 (alice) × 5 (bob).
    p.ok(
        "bob",
        "create",
        json!({"config": bobs("bob-dbl", "dtaas.v1.dt.alice-dbl.out.y", 5)}),
    )
    .await;
    p.ok("bob", "execute", json!({"id": "bob-dbl"})).await;
    let running = |dt: &Value| {
        dt["processes"]
            .as_array()
            .is_some_and(|ps| !ps.is_empty() && ps.iter().all(|p| p["status"] == "running"))
    };
    let alice_before = p
        .until("alice", "alice-dbl", "alice's DT runs", running)
        .await;
    p.until("bob", "bob-dbl", "bob's DT runs", running).await;
    until_value(&p, "dtaas.v1.dt.bob-dbl.out.y", 70.0).await;
    graph_until(&p, "bob", "bob-dbl", "bob's DT reading alice's", |r| {
        r["tree"]["reads"] == json!([{"dt": "alice-dbl", "output": "y"}])
    })
    .await;
    graph_until(&p, "alice", "alice-dbl", "alice's export", |r| {
        r["tree"]["exports"] == json!(["dtaas.v1.dt.alice-dbl.out.y"])
    })
    .await;
    // Each sees only their own DT in the graph, though one reads the other's export.
    let not_found = |r: &Value| r["error"]["code"] == "not_found";
    graph_until(&p, "bob", "alice-dbl", "not_found for bob", not_found).await;
    graph_until(&p, "alice", "bob-dbl", "not_found for alice", not_found).await;

    // Alice may drop the export while bob reads it: her processes keep running, and
    // so does bob's (his wiring was checked when he made it), but his next evolve
    // must wire to something he may read.
    let evolved = p
        .ok(
            "alice",
            "evolve",
            json!({"id": "alice-dbl", "config": alices(json!([]))}),
        )
        .await;
    assert!(evolved.get("exports").is_none(), "{evolved}");
    let alice_after = p.ok("alice", "get", json!({"id": "alice-dbl"})).await;
    assert_eq!(alice_after["dt"]["config_version"], 2);
    assert_eq!(pids(&alice_after["dt"]), pids(&alice_before));
    until_value(&p, "dtaas.v1.dt.bob-dbl.out.y", 70.0).await;
    graph_until(&p, "alice", "alice-dbl", "the export dropped", |r| {
        r["tree"]["state"] == "executing" && r["tree"].get("exports").is_none()
    })
    .await;
    let evolve = refusal(
        &p.dt(
            "bob",
            "evolve",
            json!({"id": "bob-dbl", "config": bobs("bob-dbl", "dtaas.v1.dt.alice-dbl.out.y", 6)}),
        )
        .await,
    );
    assert!(
        evolve.contains(
            "assets[0].inputs.x: no DT \"alice-dbl\" of yours, and no DT exports \
             dtaas.v1.dt.alice-dbl.out.y"
        ),
        "{evolve}"
    );
    p.ok("bob", "terminate", json!({"id": "bob-dbl"})).await;
    p.ok("alice", "terminate", json!({"id": "alice-dbl"})).await;
}
