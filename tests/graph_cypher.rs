//! The Cypher of the Neo4j backend, executed on a real openCypher engine (FalkorDB
//! through `GRAPH.QUERY`): every write statement with the parameter rows of the known
//! event set, then every query statement, checked against the expected answers.
//! A second test runs the whole Neo4j backend against a real Neo4j when
//! `DTAAS_TEST_NEO4J_URI` is set.

mod graph_common;

use std::collections::BTreeSet;
use std::sync::Arc;

use dtaas_graph::cypher::{self, write_statements};
use dtaas_graph::requests::{DEFAULT_FROM, DEFAULT_TO};
use dtaas_graph::store::{assemble_commands, assemble_tree, CommandStatusRow};
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

/// Every answer the fixture determines, computed through the query statements.
fn answers(db: &mut RespClient) -> Value {
    let params = cypher::tree_params("factory");
    let tree = cypher::tree_rows(
        typed(run(db, cypher::TREE_DTS, &params)),
        typed(run(db, cypher::TREE_EDGES, &params)),
        typed(run(db, cypher::TREE_ASSETS, &params)),
        typed(run(db, cypher::TREE_PTS, &params)),
        typed(run(db, cypher::TREE_PROCESSES, &params)),
        typed(run(db, cypher::TREE_READS, &params)),
    )
    .expect("factory exists");
    let unknown = cypher::tree_rows(
        typed(run(db, cypher::TREE_DTS, &cypher::tree_params("nope"))),
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    assert!(unknown.is_none());
    let processes = |db: &mut RespClient, dt: Option<&str>, node: Option<&str>| {
        typed::<cypher::ProcessCols>(run(
            db,
            cypher::PROCESSES,
            &cypher::processes_params(dt, node, 1000),
        ))
    };
    let impact = |db: &mut RespClient, version: Option<&str>| -> Vec<AssetUser> {
        typed(run(
            db,
            cypher::IMPACT,
            &cypher::impact_params("pid", version),
        ))
    };
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
        "tree": {"tree": assemble_tree("factory", tree)},
        "pid": impact(db, None),
        "pid-1.3.0": impact(db, Some("1.3.0")),
        "history": history,
        "window": commands(db, "robot1", T0 + 15 * S, T0 + 25 * S),
        "all-robot1": commands(db, "robot1", DEFAULT_FROM, DEFAULT_TO),
        "history-limit": run(db, cypher::HISTORY, &cypher::history_params("factory", 2)).len(),
        "n1": processes(db, None, Some("n1")),
        "robot-1-on-n2": processes(db, Some("robot-1"), Some("n2")),
        "robot-1-on-n1": processes(db, Some("robot-1"), Some("n1")),
        "n3": processes(db, None, Some("n3")),
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

    // A `parent` field links a separately created DT under its parent.
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

    // Replaying every batch (twice, and the old configuration last) changes nothing.
    for _ in 0..2 {
        for batch in fixture_batches(recent_at).iter().rev() {
            for (statement, rows) in write_statements(batch) {
                run(&mut db, statement, &json!({ "rows": rows }));
            }
        }
    }
    let mut again = answers(&mut db);
    let tree = again["tree"]["tree"]["children"].as_array_mut().unwrap();
    tree.retain(|c| c["id"] != "conveyor");
    assert_eq!(again, first, "replay changed the graph");
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
    timeout(t, store.cypher("MATCH (n) WHERE n:Dt OR n:Asset OR n:Pt OR n:Transition OR n:Command OR n:CommandStatus OR n:Process OR n:ExecNode DETACH DELETE n".into(), Map::new(), true))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{ns}: cannot clear the fixture labels: {e}"));
    for batch in fixture_batches(T0 + 3600 * S) {
        timeout(t, store.write(&batch)).await.unwrap().unwrap();
    }
    let queries = Queries {
        store,
        admins: Arc::new(vec!["root".into()]),
    };
    let tree = timeout(
        t,
        queries.tree(serde_json::from_value(json!({"dt": "factory"})).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(serde_json::to_value(tree).unwrap(), expected_tree());
    let impact = timeout(
        t,
        queries.impact(serde_json::from_value(json!({"asset": "pid"})).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        serde_json::to_value(impact.users).unwrap(),
        expected_pid_users()
    );
    let info = dtaas_runtime::RequestInfo {
        user: "alice".into(),
        subject: "test".into(),
    };
    let read = timeout(
        t,
        queries.cypher(
            info.clone(),
            serde_json::from_value(json!({"query": "MATCH (d:Dt) RETURN count(d) AS n"})).unwrap(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(read.rows, [json!({"n": 5})]);
    let denied = timeout(
        t,
        queries.cypher(
            info,
            serde_json::from_value(json!({"query": "CREATE (x:Dt {id: 'x'})"})).unwrap(),
        ),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(denied.error.code, dtaas_schemas::ErrorCode::Forbidden);
}
