//! The Cypher of the Neo4j backend, executed on a real openCypher engine (FalkorDB
//! through `GRAPH.QUERY`): every write statement with the parameter rows of the known
//! event set, then every query statement, checked against the expected answers as
//! each user sees them (owners through `OWNERS`, filtered by `scope`).
//! A second test runs the whole Neo4j backend against a real Neo4j when
//! `DTAAS_TEST_NEO4J_URI` is set.

mod graph_common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use dtaas_graph::cypher::{self, write_statements};
use dtaas_graph::requests::{DEFAULT_FROM, DEFAULT_TO};
use dtaas_graph::scope::{self, Viewer};
use dtaas_graph::store::{assemble_commands, assemble_tree, CommandStatusRow, TreeRows};
use dtaas_schemas::graph::{AssetUser, Transition};
use dtaas_test_harness::{FalkorDb, Resp, RespClient};
use graph_common::*;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

const GRAPH: &str = "dtaas";

/// A JSON value as a Cypher literal, for FalkorDB's `CYPHER name=value` prefix.
fn literal(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
        Value::Array(items) => {
            let items: Vec<_> = items.iter().map(literal).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let entries: Vec<_> = map
                .iter()
                .map(|(k, v)| format!("`{k}`: {}", literal(v)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
    }
}

/// A compact FalkorDB value `[type, value]` as JSON.
fn compact(value: &Resp) -> Value {
    let pair = value.as_array().expect("compact value is [type, value]");
    let Resp::Integer(kind) = pair[0] else {
        panic!("type tag {pair:?}")
    };
    match kind {
        1 => Value::Null,
        2 => json!(pair[1].as_str().unwrap()),
        3 => match pair[1] {
            Resp::Integer(i) => json!(i),
            ref other => panic!("integer {other:?}"),
        },
        4 => json!(pair[1].as_str() == Some("true")),
        5 => json!(pair[1].as_str().unwrap().parse::<f64>().unwrap()),
        6 => Value::Array(pair[1].as_array().unwrap().iter().map(compact).collect()),
        other => panic!("unexpected FalkorDB value type {other}: {pair:?}"),
    }
}

/// Runs `statement` with `params` and returns its rows as JSON objects.
fn run(db: &mut RespClient, statement: &str, params: &Value) -> Vec<Map<String, Value>> {
    let prefix: Vec<String> = params
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", literal(v)))
        .collect();
    let text = format!("CYPHER {} {statement}", prefix.join(" "));
    let reply = db
        .command(&["GRAPH.QUERY", GRAPH, &text, "--compact"])
        .unwrap_or_else(|e| panic!("{statement}\n{e}"));
    let parts = reply.as_array().unwrap();
    if parts.len() < 3 {
        return Vec::new(); // a write without RETURN: statistics only
    }
    let columns: Vec<String> = parts[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_array().unwrap()[1].as_str().unwrap().to_owned())
        .collect();
    parts[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let values = row.as_array().unwrap().iter().map(compact);
            columns.iter().cloned().zip(values).collect()
        })
        .collect()
}

fn typed<T: DeserializeOwned>(rows: Vec<Map<String, Value>>) -> Vec<T> {
    rows.into_iter()
        .map(|r| serde_json::from_value(Value::Object(r)).unwrap())
        .collect()
}

/// The recorded owners of `dts`, through `OWNERS`.
fn owners(db: &mut RespClient, dts: &[String]) -> HashMap<String, String> {
    cypher::owners(typed(run(db, cypher::OWNERS, &cypher::owners_params(dts))))
}

/// The tree rows under `dt`, through the six tree statements.
fn tree_rows(db: &mut RespClient, dt: &str) -> Option<TreeRows> {
    let params = cypher::tree_params(dt);
    cypher::tree_rows(
        typed(run(db, cypher::TREE_DTS, &params)),
        typed(run(db, cypher::TREE_EDGES, &params)),
        typed(run(db, cypher::TREE_ASSETS, &params)),
        typed(run(db, cypher::TREE_PTS, &params)),
        typed(run(db, cypher::TREE_PROCESSES, &params)),
        typed(run(db, cypher::TREE_READS, &params)),
    )
}

/// The tree under `dt` as `user` sees it; `None` when `user` may not see `dt`.
fn tree_as(db: &mut RespClient, user: &str, dt: &str) -> Option<Value> {
    let viewer = Viewer::User(user.into());
    if !viewer.sees(&owners(db, &[dt.to_owned()]), dt) {
        return None;
    }
    let rows = tree_rows(db, dt)?;
    let ids: Vec<String> = rows.dts.iter().map(|d| d.id.clone()).collect();
    let rows = scope::tree(&viewer, &owners(db, &ids), rows);
    Some(json!({"tree": assemble_tree(dt, rows)}))
}

/// The processes of `dt` and/or on `node` that `user` sees.
fn processes_as(db: &mut RespClient, user: &str, dt: Option<&str>, node: Option<&str>) -> Value {
    let rows: Vec<cypher::ProcessCols> = typed(run(
        db,
        cypher::PROCESSES,
        &cypher::processes_params(dt, node, Some(user), 1000),
    ));
    json!(rows)
}

/// The users of `pid` (in `version`) that `user` sees.
fn impact_as(db: &mut RespClient, user: &str, version: Option<&str>) -> Value {
    let rows: Vec<AssetUser> = typed(run(
        db,
        cypher::IMPACT,
        &cypher::impact_params("pid", version),
    ));
    let ids: Vec<String> = rows.iter().map(|u| u.dt.clone()).collect();
    let owners = owners(db, &ids);
    json!(scope::impact(&Viewer::User(user.into()), &owners, rows))
}

/// Every answer the fixture determines, computed through the query statements.
fn answers(db: &mut RespClient) -> Value {
    assert!(tree_rows(db, "nope").is_none());
    let history: Vec<Transition> = typed::<cypher::HistoryCols>(run(
        db,
        cypher::HISTORY,
        &cypher::history_params("factory", 1000),
    ))
    .into_iter()
    .map(Into::into)
    .collect();
    let commands = |db: &mut RespClient, pt: &str, from: i64, to: i64| {
        let rows: Vec<CommandStatusRow> = typed(run(
            db,
            cypher::COMMANDS,
            &cypher::commands_params(pt, from, to, 1000),
        ));
        assemble_commands(rows)
    };
    json!({
        "tree": tree_as(db, "alice", "factory"),
        "pid": impact_as(db, "alice", None),
        "pid-1.3.0": impact_as(db, "alice", Some("1.3.0")),
        "history": history,
        "window": commands(db, "robot1", T0 + 15 * S, T0 + 25 * S),
        "all-robot1": commands(db, "robot1", DEFAULT_FROM, DEFAULT_TO),
        "history-limit": run(db, cypher::HISTORY, &cypher::history_params("factory", 2)).len(),
        "n1": processes_as(db, "alice", None, Some("n1")),
        "robot-1-on-n2": processes_as(db, "alice", Some("robot-1"), Some("n2")),
        "robot-1-on-n1": processes_as(db, "alice", Some("robot-1"), Some("n1")),
        "n3": processes_as(db, "alice", None, Some("n3")),
        "bob-tree": tree_as(db, "bob", "bob-line"),
        "bob-pid": impact_as(db, "bob", None),
        "bob-n1": processes_as(db, "bob", None, Some("n1")),
        "bob-n2": processes_as(db, "bob", None, Some("n2")),
    })
}

#[test]
fn neo4j_cypher_runs_on_falkordb() {
    let falkor = FalkorDb::start().unwrap();
    let mut db = RespClient::connect(falkor.port).unwrap();
    let recent_at = T0 + 3600 * S;
    let mut written = BTreeSet::new();
    for batch in fixture_batches(recent_at) {
        for (statement, rows) in write_statements(&batch) {
            run(&mut db, statement, &json!({ "rows": rows }));
            written.insert(statement);
        }
    }
    let expected_writes: BTreeSet<_> = [
        cypher::WRITE_STATES,
        cypher::WRITE_CONFIGS,
        cypher::WRITE_USES,
        cypher::WRITE_MIRRORS,
        cypher::WRITE_CHILDREN,
        cypher::WRITE_READS,
        cypher::WRITE_TRANSITIONS,
        cypher::WRITE_COMMANDS,
        cypher::WRITE_PROCESSES,
        cypher::END_PROCESSES,
    ]
    .into();
    assert_eq!(written, expected_writes, "every write statement ran");

    let first = answers(&mut db);
    assert_eq!(first["tree"], expected_tree());
    assert_eq!(first["pid"], expected_pid_users());
    assert_eq!(
        first["pid-1.3.0"],
        json!([]),
        "the evolution replaced 1.3.0"
    );
    assert_eq!(first["history"], expected_history());
    assert_eq!(first["history-limit"], json!(2));
    assert_eq!(first["window"], expected_robot1_window());
    assert_eq!(first["n1"], expected_n1_processes());
    assert_eq!(first["n3"], expected_n3_processes(), "ended with its DT");
    assert_eq!(first["robot-1-on-n2"][0]["pid"], json!(202), "{first}");
    assert_eq!(
        first["robot-1-on-n1"],
        json!([]),
        "the move to n2 left no edge to n1"
    );
    let all: Vec<_> = first["all-robot1"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(all, ["c1", "c2", "c3"]);

    // Each user sees only their own DTs.
    assert_eq!(first["bob-tree"], expected_bob_tree());
    assert_eq!(first["bob-pid"], expected_bob_pid_users());
    assert_eq!(first["bob-n1"], expected_bob_n1_processes());
    assert_eq!(first["bob-n2"], json!([]), "alice's robot-1 runs there");
    for dt in ["factory", "robot-1", "robot-2", "gripper-2"] {
        assert_eq!(tree_as(&mut db, "bob", dt), None, "bob sees alice's {dt}");
    }
    assert_eq!(tree_as(&mut db, "alice", "bob-line"), None);
    assert_eq!(tree_as(&mut db, "alice", "other-plant"), None, "no owner");
    let recorded = owners(
        &mut db,
        &[
            "factory".into(),
            "gripper-1".into(),
            "bob-cell".into(),
            "other-plant".into(),
        ],
    );
    let expected: HashMap<String, String> = [
        ("factory".into(), "alice".into()),
        ("gripper-1".into(), "alice".into()),
        ("bob-cell".into(), "bob".into()),
    ]
    .into();
    assert_eq!(recorded, expected, "children get their parent's owner");

    // A `parent` field links a separately created DT under its parent (bob's, here:
    // alice's tree leaves it out, an admin's shows it).
    let mut adopted = dtaas_graph::model::Batch::default();
    let event: dtaas_schemas::lifecycle::LifecycleEvent = serde_json::from_value(json!({
        "dt": "conveyor", "to": "created", "at": T0 + 5 * S, "user": "bob", "parent": "factory"
    }))
    .unwrap();
    adopted.add_lifecycle("conveyor", &event).unwrap();
    // One older than factory's configuration (the evolution at T0+3s) adds no edge.
    let stale: dtaas_schemas::lifecycle::LifecycleEvent = serde_json::from_value(json!({
        "dt": "stale", "to": "created", "at": T0 + 2 * S, "user": "bob", "parent": "factory"
    }))
    .unwrap();
    adopted.add_lifecycle("stale", &stale).unwrap();
    for (statement, rows) in write_statements(&adopted) {
        run(&mut db, statement, &json!({ "rows": rows }));
    }
    let edges: Vec<cypher::TreeEdgeCols> = typed(run(
        &mut db,
        cypher::TREE_EDGES,
        &cypher::tree_params("factory"),
    ));
    assert!(edges
        .iter()
        .any(|e| e.parent == "factory" && e.child == "conveyor"));
    assert!(
        !edges.iter().any(|e| e.child == "stale"),
        "an event older than the parent's configuration linked a child"
    );
    let alice_tree = tree_as(&mut db, "alice", "factory").unwrap();
    assert_eq!(alice_tree, expected_tree(), "bob's conveyor is left out");

    // Replaying every batch (twice, and the old configuration last) changes nothing.
    for _ in 0..2 {
        for batch in fixture_batches(recent_at).iter().rev() {
            for (statement, rows) in write_statements(batch) {
                run(&mut db, statement, &json!({ "rows": rows }));
            }
        }
    }
    assert_eq!(answers(&mut db), first, "replay changed the graph");
}

/// The Neo4j backend end to end, when a disposable Neo4j is available
/// (`DTAAS_TEST_NEO4J_URI`, `DTAAS_TEST_NEO4J_USER`, `DTAAS_TEST_NEO4J_PASSWORD`).
#[tokio::test(flavor = "multi_thread")]
async fn neo4j_backend_against_real_neo4j() {
    let Ok(uri) = std::env::var("DTAAS_TEST_NEO4J_URI") else {
        eprintln!("skipped: set DTAAS_TEST_NEO4J_URI (and _USER, _PASSWORD) to a disposable Neo4j to run it");
        return;
    };
    use dtaas_graph::config::{GraphConfig, Secret};
    use dtaas_graph::neo4j::Neo4jStore;
    use dtaas_graph::requests::Queries;
    use dtaas_graph::store::GraphStore;
    use std::time::Duration;
    use tokio::time::timeout;
    let config = GraphConfig {
        neo4j_uri: uri,
        neo4j_user: std::env::var("DTAAS_TEST_NEO4J_USER").unwrap_or_else(|_| "neo4j".into()),
        neo4j_password: Secret::new(std::env::var("DTAAS_TEST_NEO4J_PASSWORD").unwrap_or_default()),
        ..GraphConfig::default()
    };
    let t = Duration::from_secs(60);
    let store = timeout(t, Neo4jStore::connect(&config))
        .await
        .unwrap()
        .unwrap();
    let store: Arc<dyn GraphStore> = Arc::new(store);
    let ns = format!("neo4j test {}", dtaas_schemas::time::now_ns());
    timeout(t, store.cypher("MATCH (n) WHERE n:Dt OR n:Asset OR n:Pt OR n:Transition OR n:Command OR n:CommandStatus OR n:Process OR n:ExecNode DETACH DELETE n".into(), Map::new()))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{ns}: cannot clear the fixture labels: {e}"));
    for batch in fixture_batches(T0 + 3600 * S) {
        timeout(t, store.write(&batch)).await.unwrap().unwrap();
    }
    let queries = Queries {
        store,
        admins: Arc::new(vec![ADMIN.into()]),
    };
    let tree = timeout(
        t,
        queries.tree(
            "alice",
            serde_json::from_value(json!({"dt": "factory"})).unwrap(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(serde_json::to_value(tree).unwrap(), expected_tree());
    let impact = timeout(
        t,
        queries.impact(
            "alice",
            serde_json::from_value(json!({"asset": "pid"})).unwrap(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        serde_json::to_value(impact.users).unwrap(),
        expected_pid_users()
    );
    let hidden = timeout(
        t,
        queries.tree(
            "bob",
            serde_json::from_value(json!({"dt": "factory"})).unwrap(),
        ),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(hidden.error.code, dtaas_schemas::ErrorCode::NotFound);
    let bob_tree = timeout(
        t,
        queries.tree(
            "bob",
            serde_json::from_value(json!({"dt": "bob-line"})).unwrap(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(serde_json::to_value(bob_tree).unwrap(), expected_bob_tree());
    let user = |user: &str| dtaas_runtime::RequestInfo {
        user: user.into(),
        subject: "test".into(),
    };
    let owner_query = "MATCH (d:Dt {id: 'bob-line'}) RETURN d.owner AS owner";
    let read = timeout(
        t,
        queries.cypher(
            user(ADMIN),
            serde_json::from_value(json!({ "query": owner_query })).unwrap(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(read.rows, [json!({"owner": "bob"})]);
    let denied = timeout(
        t,
        queries.cypher(
            user("alice"),
            serde_json::from_value(json!({ "query": owner_query })).unwrap(),
        ),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(denied.error.code, dtaas_schemas::ErrorCode::Forbidden);
}
