//! The graph worker with the embedded SQLite backend against a real nats-server:
//! a known three-level composition, every query, replays, the DLQ, and a locked store
//! that builds a backlog and then catches up with nothing lost.

mod graph_common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use dtaas_runtime::{Config, Context};
use dtaas_schemas::asset::{AssetKind, AssetMeta};
use dtaas_schemas::codec::Encoding;
use dtaas_schemas::command::{CommandStatus, CommandStatusEvent};
use dtaas_schemas::names::{header, KV_ASSETS, STREAM_DLQ};
use dtaas_schemas::{subject, time::now_ns};
use dtaas_test_harness::NatsServer;
use graph_common::*;
use serde_json::{json, Value};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(30);

/// A graph worker running in this process against `nats`, storing under `data`.
struct Worker {
    ctx: Context,
    task: tokio::task::JoinHandle<Result<(), dtaas_graph::RunError>>,
}

impl Worker {
    async fn start(nats: &NatsServer, data: &Path) -> Worker {
        let env = |name: &str| match name {
            "DTAAS_NATS_URL" => Some(nats.url()),
            "DTAAS_DATA_DIR" => Some(data.display().to_string()),
            _ => None,
        };
        let text = format!(
            "[graph]\nmax_delay = \"20ms\"\nsqlite_busy = \"200ms\"\nadmins = [\"{ADMIN}\"]\n"
        );
        let config = Config::from_toml(&text, "test", &env).unwrap();
        let ctx = timeout(
            T,
            Context::connect(Arc::new(config), "graph", CancellationToken::new()),
        )
        .await
        .unwrap()
        .unwrap();
        let task = tokio::spawn(dtaas_graph::run(ctx.clone()));
        let worker = Worker { ctx, task };
        // Ready once the service answers.
        let ready = poll(|| async {
            request(&worker.ctx, "history", json!({"dt": "x"}))
                .await
                .is_some()
        })
        .await;
        assert!(ready, "graph worker did not start answering");
        worker
    }

    async fn stop(self) {
        self.ctx.shutdown.cancel();
        timeout(T, self.task).await.unwrap().unwrap().unwrap();
    }
}

/// Polls `check` every 100 ms for up to 30 s.
async fn poll<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + T;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A JSON request as alice; `None` when nobody answered.
async fn request(ctx: &Context, verb: &str, body: Value) -> Option<Value> {
    request_as(ctx, "alice", verb, body).await
}

/// A JSON request as `user`; `None` when nobody answered.
async fn request_as(ctx: &Context, user: &str, verb: &str, body: Value) -> Option<Value> {
    let subject = subject::request(user, "graph", verb).unwrap();
    let reply = timeout(
        Duration::from_secs(5),
        ctx.nats.request(subject, body.to_string().into()),
    )
    .await
    .ok()?
    .ok()?;
    Some(serde_json::from_slice(&reply.payload).unwrap())
}

async fn ask(ctx: &Context, verb: &str, body: Value) -> Value {
    request(ctx, verb, body).await.expect("graph answers")
}

async fn ask_as(ctx: &Context, user: &str, verb: &str, body: Value) -> Value {
    request_as(ctx, user, verb, body)
        .await
        .expect("graph answers")
}

async fn publish(js: &jetstream::Context, subject: String, encoding: Encoding, body: bytes::Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, encoding.content_type());
    timeout(T, async {
        js.publish_with_headers(subject, headers, body)
            .await
            .unwrap()
            .await
            .unwrap()
    })
    .await
    .unwrap();
}

/// Publishes the fixture: lifecycle as JSON, commands as MessagePack.
async fn publish_fixture(js: &jetstream::Context, recent_at: i64) {
    for event in lifecycle_events() {
        let body = Encoding::Json.encode(&event).unwrap();
        publish(js, event.subject().unwrap(), Encoding::Json, body).await;
    }
    for event in command_events(recent_at) {
        let body = Encoding::MsgPack.encode(&event).unwrap();
        publish(js, event.subject().unwrap(), Encoding::MsgPack, body).await;
    }
    for event in process_events() {
        let body = Encoding::Json.encode(&event).unwrap();
        publish(js, event.subject().unwrap(), Encoding::Json, body).await;
    }
    let event = solo_terminated();
    let body = Encoding::Json.encode(&event).unwrap();
    publish(js, event.subject().unwrap(), Encoding::Json, body).await;
    for event in bob_events() {
        let body = Encoding::Json.encode(&event).unwrap();
        publish(js, event.subject().unwrap(), Encoding::Json, body).await;
    }
    for event in bob_process_events() {
        let body = Encoding::Json.encode(&event).unwrap();
        publish(js, event.subject().unwrap(), Encoding::Json, body).await;
    }
}

/// Registers the asset kinds the asset library knows.
async fn register_kinds(js: &jetstream::Context) {
    let kv = timeout(T, js.get_key_value(KV_ASSETS))
        .await
        .unwrap()
        .unwrap();
    for (id, version, kind) in KNOWN_KINDS {
        let meta = AssetMeta {
            name: id.into(),
            owner: "alice".into(),
            version: 1,
            kind: match kind {
                "tool" => AssetKind::Tool,
                _ => AssetKind::Function,
            },
            shared: true,
            description: String::new(),
            tags: vec![],
            created: T0,
            files: vec![],
            interface: Default::default(),
            run: None,
            original_name: None,
            digest: String::new(),
        };
        let body = Encoding::Json.encode(&meta).unwrap();
        timeout(T, kv.put(format!("{id}.{version}"), body))
            .await
            .unwrap()
            .unwrap();
    }
}

/// Every query answer the fixture determines, as one JSON value.
async fn answers(ctx: &Context) -> Value {
    json!({
        "tree": ask(ctx, "tree", json!({"dt": "factory"})).await,
        "subtree": ask(ctx, "tree", json!({"dt": "robot-2"})).await,
        "pid": ask(ctx, "impact", json!({"asset": "pid"})).await,
        "pid-1.3.0": ask(ctx, "impact", json!({"asset": "pid", "version": "1.3.0"})).await,
        "grip": ask(ctx, "impact", json!({"asset": "grip", "version": "1.0"})).await,
        "history": ask(ctx, "history", json!({"dt": "factory"})).await,
        "window": ask(ctx, "commands", json!({"pt": "robot1", "from": rfc3339(15), "to": rfc3339(25)})).await,
        "all-robot1": ask(ctx, "commands", json!({"pt": "robot1"})).await,
        "n1": ask(ctx, "processes", json!({"node": "n1"})).await,
        "robot-1-on-n2": ask(ctx, "processes", json!({"dt": "robot-1", "node": "n2"})).await,
        "n3": ask(ctx, "processes", json!({"node": "n3"})).await,
        "bob-tree": ask_as(ctx, "bob", "tree", json!({"dt": "bob-line"})).await,
        "bob-pid": ask_as(ctx, "bob", "impact", json!({"asset": "pid"})).await,
        "bob-n1": ask_as(ctx, "bob", "processes", json!({"node": "n1"})).await,
    })
}

async fn fixture_complete(ctx: &Context) -> bool {
    let history = ask(ctx, "history", json!({"dt": "factory"})).await;
    let robot2 = ask(ctx, "commands", json!({"pt": "robot2"})).await;
    let vision = ask(ctx, "processes", json!({"dt": "robot-2"})).await;
    let solo = ask(ctx, "processes", json!({"dt": "solo"})).await;
    let bob = ask_as(ctx, "bob", "processes", json!({"dt": "bob-cell"})).await;
    history["transitions"].as_array().map(Vec::len) == Some(4)
        && bob["processes"].as_array().map(Vec::len) == Some(1)
        && vision["processes"][0]["status"] == "exited"
        && solo["processes"][0]["status"] == "killed"
        && robot2["commands"]
            .as_array()
            .is_some_and(|c| c.len() == 2 && c[1]["history"].as_array().map(Vec::len) == Some(2))
}

fn error_code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("<no error>")
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_answer_the_known_composition() {
    let nats = NatsServer::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let worker = Worker::start(&nats, data.path()).await;
    let ctx = worker.ctx.clone();
    register_kinds(&ctx.js).await;
    let recent_at = now_ns() - 10 * 60 * S;
    publish_fixture(&ctx.js, recent_at).await;
    assert!(
        poll(|| fixture_complete(&ctx)).await,
        "fixture not consumed"
    );

    let first = answers(&ctx).await;
    assert_eq!(first["tree"], expected_tree());
    assert_eq!(
        first["subtree"]["tree"],
        expected_tree()["tree"]["children"][1]
    );
    assert_eq!(first["pid"]["users"], expected_pid_users());
    assert_eq!(
        first["pid-1.3.0"]["users"],
        json!([]),
        "old version replaced"
    );
    assert_eq!(
        first["grip"]["users"],
        json!([
            {"dt": "gripper-1", "version": "1.0", "name": "grip-model"},
            {"dt": "gripper-2", "version": "1.0", "name": "grip-model"},
        ])
    );
    assert_eq!(first["history"]["transitions"], expected_history());
    assert_eq!(first["window"]["commands"], expected_robot1_window());
    assert_eq!(first["n1"]["processes"], expected_n1_processes());
    assert_eq!(first["n3"]["processes"], expected_n3_processes());
    assert_eq!(
        first["robot-1-on-n2"]["processes"][0]["pid"], 202,
        "the move to n2 and the restart there: {}",
        first["robot-1-on-n2"]
    );
    let all: Vec<_> = first["all-robot1"]["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        all,
        [("c1", "acknowledged"), ("c2", "failed"), ("c3", "accepted")]
    );
    let recent = ask(
        &ctx,
        "commands",
        json!({"pt": "robot2", "from": "-1h", "to": "now"}),
    )
    .await;
    let ids: Vec<_> = recent["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [json!("c5")],
        "relative range finds only the recent command"
    );

    // MessagePack in, MessagePack out, same answer.
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, Encoding::MsgPack.content_type());
    let body = Encoding::MsgPack.encode(&json!({"dt": "factory"})).unwrap();
    let reply = timeout(
        T,
        ctx.nats.request_with_headers(
            subject::request("alice", "graph", "tree").unwrap(),
            headers,
            body,
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let tree: Value = Encoding::MsgPack.decode(&reply.payload).unwrap();
    assert_eq!(tree, expected_tree());

    // Each user sees only their own DTs.
    assert_eq!(first["bob-tree"], expected_bob_tree());
    assert_eq!(first["bob-pid"]["users"], expected_bob_pid_users());
    assert_eq!(first["bob-n1"]["processes"], expected_bob_n1_processes());
    for (user, verb, body) in [
        ("bob", "tree", json!({"dt": "factory"})),
        ("bob", "tree", json!({"dt": "robot-2"})),
        ("bob", "tree", json!({"dt": "gripper-1"})),
        ("bob", "history", json!({"dt": "factory"})),
        ("bob", "processes", json!({"dt": "robot-1"})),
        ("bob", "processes", json!({"dt": "robot-1", "node": "n2"})),
        ("alice", "tree", json!({"dt": "bob-line"})),
        ("alice", "history", json!({"dt": "bob-line"})),
        ("alice", "processes", json!({"dt": "bob-cell"})),
        // Known to the graph only as what robot-1 reads: no owner, admins only.
        ("alice", "tree", json!({"dt": "other-plant"})),
    ] {
        let reply = ask_as(&ctx, user, verb, body.clone()).await;
        assert_eq!(
            error_code(&reply),
            "not_found",
            "{user} {verb} {body}: {reply}"
        );
        let message = reply["error"]["message"].as_str().unwrap();
        assert_eq!(
            message,
            format!(
                "no DT named {:?} in the graph",
                body["dt"].as_str().unwrap()
            ),
            "same as an unknown DT"
        );
    }
    // The limit counts only the caller's processes (bob's bob-cell sorts first).
    let alice_first = ask(&ctx, "processes", json!({"node": "n1", "limit": 1})).await;
    assert_eq!(
        alice_first["processes"],
        json!([expected_n1_processes()[0]])
    );
    let bob_on_n2 = ask_as(&ctx, "bob", "processes", json!({"node": "n2"})).await;
    assert_eq!(
        bob_on_n2["processes"],
        json!([]),
        "alice's robot-1 runs there"
    );
    let bob_grip = ask_as(&ctx, "bob", "impact", json!({"asset": "grip"})).await;
    assert_eq!(bob_grip["users"], json!([]), "only alice's grippers use it");
    // Commands belong to PTs, not DTs: anyone who may ask sees them.
    let bob_commands = ask_as(&ctx, "bob", "commands", json!({"pt": "robot1"})).await;
    assert_eq!(bob_commands["commands"], first["all-robot1"]["commands"]);
    // A graph admin sees every DT, owned or not.
    let root_tree = ask_as(&ctx, ADMIN, "tree", json!({"dt": "bob-line"})).await;
    assert_eq!(root_tree, expected_bob_tree());
    let root_tree = ask_as(&ctx, ADMIN, "tree", json!({"dt": "factory"})).await;
    assert_eq!(root_tree, expected_tree());
    let root_pid = ask_as(&ctx, ADMIN, "impact", json!({"asset": "pid"})).await;
    assert_eq!(root_pid["users"].as_array().unwrap().len(), 4, "{root_pid}");
    let root_n1 = ask_as(&ctx, ADMIN, "processes", json!({"node": "n1"})).await;
    assert_eq!(
        root_n1["processes"].as_array().unwrap().len(),
        3,
        "{root_n1}"
    );
    let other = ask_as(&ctx, ADMIN, "tree", json!({"dt": "other-plant"})).await;
    assert_eq!(other["tree"]["id"], "other-plant", "{other}");

    // Unknown entities: not_found for a DT, empty elsewhere.
    let unknown = ask(&ctx, "tree", json!({"dt": "nope"})).await;
    assert_eq!(error_code(&unknown), "not_found");
    let unknown = ask(&ctx, "history", json!({"dt": "nope"})).await;
    assert_eq!(error_code(&unknown), "not_found");
    let empty = ask(&ctx, "impact", json!({"asset": "nope"})).await;
    assert_eq!(empty["users"], json!([]));
    let empty = ask(&ctx, "commands", json!({"pt": "nope"})).await;
    assert_eq!(empty["commands"], json!([]));

    // Malformed requests name the field.
    for (verb, body, field) in [
        ("tree", json!({}), "`dt`"),
        ("tree", json!({"dt": "a b"}), "`dt`"),
        ("impact", json!({"asset": "pid", "versoin": "1"}), "versoin"),
        ("history", json!({"dt": "factory", "limit": 0}), "`limit`"),
        ("processes", json!({}), "`node`"),
        ("processes", json!({"node": "n.1"}), "`node`"),
        (
            "commands",
            json!({"pt": "robot1", "from": "yesterday"}),
            "`from`",
        ),
        (
            "commands",
            json!({"pt": "robot1", "from": "now", "to": "-1h"}),
            "`from`",
        ),
    ] {
        let reply = ask(&ctx, verb, body.clone()).await;
        assert_eq!(error_code(&reply), "bad_request", "{verb} {body}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{verb} {body}: {message}");
    }
    let cypher = ask(&ctx, "cypher", json!({"query": "MATCH (n) RETURN n"})).await;
    assert_eq!(
        error_code(&cypher),
        "forbidden",
        "raw Cypher sees every DT: {cypher}"
    );
    let cypher = ask_as(
        &ctx,
        ADMIN,
        "cypher",
        json!({"query": "MATCH (n) RETURN n"}),
    )
    .await;
    assert!(
        cypher["error"]["message"]
            .as_str()
            .unwrap()
            .contains("neo4j"),
        "{cypher}"
    );

    // A malformed and an inconsistent event go to the DLQ; the worker keeps going.
    let dt_subject = subject::event("dt", "factory", "executing").unwrap();
    publish(
        &ctx.js,
        dt_subject.clone(),
        Encoding::Json,
        "{not json".into(),
    )
    .await;
    let wrong = CommandStatusEvent {
        id: "other".into(),
        pt: "robot1".into(),
        command: "stop".into(),
        status: CommandStatus::Accepted,
        at: T0,
        reason: None,
    };
    let wrong_subject = subject::event("cmd", "c9", "accepted").unwrap();
    publish(
        &ctx.js,
        wrong_subject,
        Encoding::Json,
        Encoding::Json.encode(&wrong).unwrap(),
    )
    .await;

    // Replays (every event again, twice) leave the same answers.
    publish_fixture(&ctx.js, recent_at).await;
    publish_fixture(&ctx.js, recent_at).await;
    let marker = CommandStatusEvent {
        id: "marker".into(),
        pt: "robot3".into(),
        command: "stop".into(),
        status: CommandStatus::Accepted,
        at: T0,
        reason: None,
    };
    publish(
        &ctx.js,
        marker.subject().unwrap(),
        Encoding::Json,
        Encoding::Json.encode(&marker).unwrap(),
    )
    .await;
    let seen = poll(|| async {
        ask(&ctx, "commands", json!({"pt": "robot3"})).await["commands"]
            .as_array()
            .is_some_and(|c| c.len() == 1)
    })
    .await;
    assert!(seen, "events after the bad ones were processed");
    assert_eq!(answers(&ctx).await, first, "replay changed the graph");

    let dlq = timeout(T, ctx.js.get_stream(STREAM_DLQ))
        .await
        .unwrap()
        .unwrap();
    let dlq_subject = subject::dlq("graph").unwrap();
    let mut reasons = Vec::new();
    let info = timeout(T, dlq.get_info()).await.unwrap().unwrap();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        let Ok(message) = timeout(T, dlq.get_raw_message(seq)).await.unwrap() else {
            continue;
        };
        if message.subject.as_str() == dlq_subject {
            let headers = message.headers;
            let reason = headers.get(header::DLQ_REASON).unwrap().to_string();
            let original = headers.get(header::DLQ_SUBJECT).unwrap().to_string();
            reasons.push((original, reason));
        }
    }
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, dt_subject);
    assert!(
        reasons[0].1.contains("cannot decode lifecycle event"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].1.contains("field `id` is \"other\""),
        "{reasons:?}"
    );

    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn locked_store_builds_a_backlog_then_catches_up() {
    const N: usize = 300;
    let nats = NatsServer::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let worker = Worker::start(&nats, data.path()).await;
    let ctx = worker.ctx.clone();

    // Another connection holds the write lock: every worker write fails as busy.
    let lock = rusqlite::Connection::open(data.path().join("graph.sqlite")).unwrap();
    lock.busy_timeout(Duration::from_secs(10)).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();

    for i in 0..N {
        let event = CommandStatusEvent {
            id: format!("cmd-{i:04}"),
            pt: "press".into(),
            command: "stamp".into(),
            status: CommandStatus::Accepted,
            at: T0 + i as i64,
            reason: None,
        };
        let body = Encoding::MsgPack.encode(&event).unwrap();
        publish(&ctx.js, event.subject().unwrap(), Encoding::MsgPack, body).await;
    }
    // The backlog stays in JetStream, unacknowledged, while the store is locked.
    let stream = timeout(T, ctx.js.get_stream("DTAAS_EVT"))
        .await
        .unwrap()
        .unwrap();
    let blocked = poll(|| async {
        let info = timeout(T, stream.consumer_info("graph"))
            .await
            .unwrap()
            .unwrap();
        info.num_ack_pending > 0
    })
    .await;
    assert!(blocked, "the worker holds the batch unacknowledged");
    tokio::time::sleep(Duration::from_millis(1500)).await; // let it retry a few times
    let during = ask(&ctx, "commands", json!({"pt": "press"})).await;
    assert_eq!(
        during["commands"],
        json!([]),
        "nothing written while locked"
    );
    let info = timeout(T, stream.consumer_info("graph"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        info.num_ack_pending as usize + info.num_pending as usize,
        N,
        "all {N} events are still in the backlog"
    );

    lock.execute_batch("ROLLBACK").unwrap();
    let caught_up = poll(|| async {
        let reply = ask(&ctx, "commands", json!({"pt": "press", "limit": 1000})).await;
        reply["commands"].as_array().map(Vec::len) == Some(N)
    })
    .await;
    assert!(
        caught_up,
        "the backlog was written after the lock was released"
    );
    let reply = ask(&ctx, "commands", json!({"pt": "press", "limit": 1000})).await;
    for (i, command) in reply["commands"].as_array().unwrap().iter().enumerate() {
        assert_eq!(command["id"], json!(format!("cmd-{i:04}")));
        assert_eq!(
            command["history"].as_array().unwrap().len(),
            1,
            "none doubled"
        );
    }
    let drained = poll(|| async {
        let info = timeout(T, stream.consumer_info("graph"))
            .await
            .unwrap()
            .unwrap();
        info.num_ack_pending == 0 && info.num_pending == 0
    })
    .await;
    assert!(drained, "every event acknowledged after the catch-up");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_the_store_rejects_go_to_the_dlq() {
    let nats = NatsServer::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let worker = Worker::start(&nats, data.path()).await;
    let ctx = worker.ctx.clone();
    // The store refuses commands for one PT, as a constraint would.
    let db = rusqlite::Connection::open(data.path().join("graph.sqlite")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER poison BEFORE INSERT ON command WHEN NEW.pt = 'poison'
         BEGIN SELECT RAISE(ABORT, 'poison pt refused'); END;",
    )
    .unwrap();
    for (i, pt) in ["mill", "mill", "poison", "mill", "mill"]
        .iter()
        .enumerate()
    {
        let event = CommandStatusEvent {
            id: format!("p{i}"),
            pt: pt.to_string(),
            command: "run".into(),
            status: CommandStatus::Accepted,
            at: T0 + i as i64,
            reason: None,
        };
        let body = Encoding::Json.encode(&event).unwrap();
        publish(&ctx.js, event.subject().unwrap(), Encoding::Json, body).await;
    }
    let written = poll(|| async {
        ask(&ctx, "commands", json!({"pt": "mill"})).await["commands"]
            .as_array()
            .map(Vec::len)
            == Some(4)
    })
    .await;
    assert!(written, "the other events of the batch were written");
    let dlq = timeout(T, ctx.js.get_stream(STREAM_DLQ))
        .await
        .unwrap()
        .unwrap();
    let found = poll(|| async {
        let dlq_subject = subject::dlq("graph").unwrap();
        match timeout(T, dlq.get_last_raw_message_by_subject(&dlq_subject)).await {
            Ok(Ok(message)) => {
                let reason = message.headers.get(header::DLQ_REASON).unwrap().to_string();
                assert!(reason.contains("poison pt refused"), "{reason}");
                true
            }
            _ => false,
        }
    })
    .await;
    assert!(found, "the refused event is in the DLQ");
    let info = timeout(T, dlq.get_info()).await.unwrap().unwrap();
    assert_eq!(info.state.messages, 1, "only the refused event");
    worker.stop().await;
}
