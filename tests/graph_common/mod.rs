//! The known event set shared by the graph tests: a three-level composition
//! (factory → robots → grippers) with assets and PTs, its lifecycle, an evolution that
//! moves one robot to a new controller version, commands to the robots' PTs, and the
//! process events of exec nodes `n1` and `n2`; and bob's DT `bob-line` (with child
//! `bob-cell`) beside alice's, sharing an asset, an exec node and reading robot-2's
//! export, so every query can show that each user sees only their own DTs.
// Each test file uses a different part of this module.
#![allow(dead_code)]

use dtaas_schemas::command::{CommandStatus, CommandStatusEvent};
use dtaas_schemas::dt_config::DtConfig;
use dtaas_schemas::exec::{ProcessEvent, ProcessEventKind};
use dtaas_schemas::lifecycle::{LifecycleEvent, LifecycleState};
use serde_json::{json, Value};

/// 2026-01-01T00:00:00Z in ns: the fixture's time origin.
pub const T0: i64 = 1_767_225_600_000_000_000;
/// One second in ns.
pub const S: i64 = 1_000_000_000;

fn config(evolved: bool) -> DtConfig {
    let robot2_pid = if evolved { "2.0.0" } else { "1.3.0" };
    // Evolving rewires robot-1 from one plant's output to another's.
    let plant = if evolved { "other-plant" } else { "old-plant" };
    serde_json::from_value(json!({
        "id": "factory",
        "description": "the whole plant",
        "assets": [{"name": "planner", "asset": {"id": "scheduler", "version": "2.0"}}],
        "children": [
            {
                "id": "robot-1",
                "assets": [{"name": "controller", "asset": {"id": "pid", "version": "1.2.0"},
                            "inputs": {"target": "dtaas.v1.dt.robot-2.out.pose",
                                       "load": format!("dtaas.v1.dt.{plant}.out.load"),
                                       "own": "dtaas.v1.dt.robot-1.out.x",
                                       "joints": "dtaas.v1.tel.robot1.joints"}}],
                "pt": [{"id": "robot1", "signals": ["joints"], "commands": ["stop", "move"]}],
                "children": [{
                    "id": "gripper-1",
                    "assets": [{"name": "grip-model", "asset": {"id": "grip", "version": "1.0"}}],
                    "pt": [{"id": "gripper1", "signals": ["force"], "commands": []}]
                }]
            },
            {
                "id": "robot-2",
                "assets": [
                    {"name": "controller", "asset": {"id": "pid", "version": robot2_pid}},
                    {"name": "vision", "asset": {"id": "camera-model", "version": "0.9"}}
                ],
                "pt": [{"id": "robot2", "signals": ["joints"], "commands": ["stop"]}],
                "external": {"exports": ["pose"]},
                "children": [{
                    "id": "gripper-2",
                    "assets": [{"name": "grip-model", "asset": {"id": "grip", "version": "1.0"}}],
                    "pt": [{"id": "gripper2", "signals": ["force"], "commands": []}]
                }]
            }
        ]
    }))
    .expect("fixture config")
}

fn transition(
    from: Option<LifecycleState>,
    to: LifecycleState,
    at: i64,
    config: Option<DtConfig>,
    version: Option<u64>,
) -> LifecycleEvent {
    LifecycleEvent {
        dt: "factory".into(),
        from,
        to,
        at,
        user: "alice".into(),
        owner: Some("alice".into()),
        config,
        config_version: version,
        parent: None,
        fork_of: None,
        detail: None,
    }
}

/// Graph admins in the fixtures' worker configuration.
pub const ADMIN: &str = "root";

/// Bob's DT: `bob-line` reads alice's exported `robot-2` pose and uses `pid` 2.0.0;
/// its child `bob-cell` uses `pid` 1.2.0.
fn bob_config() -> DtConfig {
    serde_json::from_value(json!({
        "id": "bob-line",
        "assets": [{"name": "reader", "asset": {"id": "pid", "version": "2.0.0"},
                    "inputs": {"pose": "dtaas.v1.dt.robot-2.out.pose"}}],
        "children": [{
            "id": "bob-cell",
            "assets": [{"name": "controller", "asset": {"id": "pid", "version": "1.2.0"}}]
        }]
    }))
    .expect("bob's config")
}

/// Bob's lifecycle events: created by bob, then executed by admin `root` on bob's
/// behalf (the event's `user` is not the owner).
pub fn bob_events() -> Vec<LifecycleEvent> {
    use LifecycleState::*;
    let mut created = transition(None, Created, T0 + 6 * S, Some(bob_config()), Some(1));
    created.dt = "bob-line".into();
    created.user = "bob".into();
    created.owner = Some("bob".into());
    let mut executing = transition(Some(Created), Executing, T0 + 7 * S, None, None);
    executing.dt = "bob-line".into();
    executing.user = ADMIN.into();
    executing.owner = Some("bob".into());
    vec![created, executing]
}

/// Bob's process: `bob-cell` on exec node `n1`, beside alice's.
pub fn bob_process_events() -> Vec<ProcessEvent> {
    vec![process(
        "bob-cell",
        "controller",
        "n1",
        500,
        ProcessEventKind::Started,
        0,
        None,
        T0 + 7 * S,
    )]
}

/// The expected `graph.tree` of `bob-line`, as bob (or an admin) sees it: the edge to
/// alice's `robot-2` names only the DT and output bob's configuration wires.
pub fn expected_bob_tree() -> Value {
    let asset = |name: &str, version: &str, kind: Option<&str>| json!({"name": name, "id": "pid", "version": version, "kind": kind});
    json!({"tree": {
        "id": "bob-line", "state": "executing", "description": null,
        "assets": [asset("reader", "2.0.0", None)],
        "pts": [], "processes": [],
        "reads": [{"dt": "robot-2", "output": "pose"}],
        "children": [{
            "id": "bob-cell", "state": null, "description": null,
            "assets": [asset("controller", "1.2.0", Some("function"))],
            "pts": [], "children": [],
            "processes": [proc_json("controller", "n1", 500, "running", 0, None, T0 + 7 * S)]
        }]
    }})
}

/// The expected impact of `pid` (any version) as bob sees it.
pub fn expected_bob_pid_users() -> Value {
    json!([
        {"dt": "bob-cell", "version": "1.2.0", "name": "controller"},
        {"dt": "bob-line", "version": "2.0.0", "name": "reader"},
    ])
}

/// The expected `graph.processes` of exec node `n1` as bob sees it.
pub fn expected_bob_n1_processes() -> Value {
    json!([{"dt": "bob-cell", "role": "controller", "node": "n1", "pid": 500,
            "status": "running", "restarts": 0, "exit_code": null, "at": T0 + 7 * S}])
}

/// `solo` is terminated at T0+2s while exec never reported its process's end (its
/// node died): the graph ends the process with the transition. Published after the
/// process events.
pub fn solo_terminated() -> LifecycleEvent {
    let mut event = transition(
        Some(LifecycleState::Executing),
        LifecycleState::Terminated,
        T0 + 2 * S,
        None,
        None,
    );
    event.dt = "solo".into();
    event
}

/// The expected `graph.processes` of exec node `n3`.
pub fn expected_n3_processes() -> Value {
    json!([{"dt": "solo", "role": "r", "node": "n3", "pid": 400, "status": "killed",
            "restarts": 0, "exit_code": null, "at": T0 + 2 * S}])
}

/// The lifecycle events, in publish order.
pub fn lifecycle_events() -> Vec<LifecycleEvent> {
    use LifecycleState::*;
    let mut evolving = transition(
        Some(Executing),
        Evolving,
        T0 + 3 * S,
        Some(config(true)),
        Some(2),
    );
    evolving.detail = Some("robot-2 gets pid 2.0.0".into());
    vec![
        transition(None, Created, T0, Some(config(false)), Some(1)),
        transition(Some(Created), Executing, T0 + S, None, None),
        evolving,
        transition(Some(Evolving), Executing, T0 + 4 * S, None, None),
    ]
}

fn status(id: &str, pt: &str, command: &str, status: CommandStatus, at: i64) -> CommandStatusEvent {
    CommandStatusEvent {
        id: id.into(),
        pt: pt.into(),
        command: command.into(),
        status,
        at,
        reason: (status == CommandStatus::Failed).then(|| "device timeout".into()),
    }
}

/// Command status events, in publish order. `recent_at` is the time of the one
/// command that relative ranges (`-1h`) must find.
pub fn command_events(recent_at: i64) -> Vec<CommandStatusEvent> {
    use CommandStatus::*;
    vec![
        status("c1", "robot1", "stop", Accepted, T0 + 10 * S),
        status("c1", "robot1", "stop", Sent, T0 + 11 * S),
        status("c1", "robot1", "stop", Acknowledged, T0 + 12 * S),
        status("c2", "robot1", "move", Accepted, T0 + 20 * S),
        status("c2", "robot1", "move", Sent, T0 + 21 * S),
        status("c2", "robot1", "move", Failed, T0 + 22 * S),
        status("c3", "robot1", "stop", Accepted, T0 + 30 * S),
        status("c4", "robot2", "stop", Accepted, T0 + 40 * S),
        status("c5", "robot2", "stop", Accepted, recent_at),
        status("c5", "robot2", "stop", Sent, recent_at + S),
    ]
}

#[allow(clippy::too_many_arguments)]
fn process(
    dt: &str,
    role: &str,
    node: &str,
    pid: u32,
    status: ProcessEventKind,
    restarts: u32,
    exit_code: Option<i32>,
    at: i64,
) -> ProcessEvent {
    ProcessEvent {
        dt: dt.into(),
        role: role.into(),
        node: node.into(),
        pid,
        status,
        exit_code,
        signal: None,
        restarts,
        at,
        detail: None,
    }
}

/// Process events, in publish order: the planner's `killed` comes before its
/// `started` (the newer one must win); robot-1's controller moves from n1 to n2 and
/// is restarted there; robot-2's vision ends with success.
pub fn process_events() -> Vec<ProcessEvent> {
    use ProcessEventKind::*;
    vec![
        process("factory", "planner", "n1", 100, Killed, 0, None, T0 + 5 * S),
        process("factory", "planner", "n1", 100, Started, 0, None, T0 + S),
        process("robot-1", "controller", "n1", 200, Started, 0, None, T0 + S),
        process(
            "robot-1",
            "controller",
            "n2",
            201,
            Started,
            0,
            None,
            T0 + 2 * S,
        ),
        process(
            "robot-1",
            "controller",
            "n2",
            202,
            Restarted,
            1,
            Some(1),
            T0 + 3 * S,
        ),
        process("robot-2", "vision", "n1", 300, Started, 0, None, T0 + S),
        process(
            "robot-2",
            "vision",
            "n1",
            300,
            Exited,
            0,
            Some(0),
            T0 + 4 * S,
        ),
        process("solo", "r", "n3", 400, Started, 0, None, T0 + S),
    ]
}

fn proc_json(
    role: &str,
    node: &str,
    pid: u32,
    status: &str,
    restarts: u32,
    exit: Option<i32>,
    at: i64,
) -> Value {
    json!({"role": role, "node": node, "pid": pid, "status": status, "restarts": restarts,
           "exit_code": exit, "at": at})
}

/// The expected `graph.processes` of exec node `n1`.
pub fn expected_n1_processes() -> Value {
    json!([
        {"dt": "factory", "role": "planner", "node": "n1", "pid": 100, "status": "killed",
         "restarts": 0, "exit_code": null, "at": T0 + 5 * S},
        {"dt": "robot-2", "role": "vision", "node": "n1", "pid": 300, "status": "exited",
         "restarts": 0, "exit_code": 0, "at": T0 + 4 * S},
    ])
}

/// The expected `graph.tree` of `factory` after every event.
pub fn expected_tree() -> Value {
    let pt = |id: &str, signals: &[&str], commands: &[&str]| json!({"id": id, "signals": signals, "commands": commands});
    let asset = |name: &str, id: &str, version: &str, kind: Option<&str>| json!({"name": name, "id": id, "version": version, "kind": kind});
    let gripper = |id: &str, pt_id: &str| {
        json!({"id": id, "state": null, "description": null,
               "assets": [asset("grip-model", "grip", "1.0", None)],
               "pts": [pt(pt_id, &["force"], &[])], "children": [], "processes": []})
    };
    json!({"tree": {
        "id": "factory", "state": "executing", "description": "the whole plant",
        "assets": [asset("planner", "scheduler", "2.0", Some("tool"))],
        "pts": [],
        "processes": [proc_json("planner", "n1", 100, "killed", 0, None, T0 + 5 * S)],
        "children": [
            {"id": "robot-1", "state": null, "description": null,
             "assets": [asset("controller", "pid", "1.2.0", Some("function"))],
             "pts": [pt("robot1", &["joints"], &["stop", "move"])],
             "processes": [proc_json("controller", "n2", 202, "running", 1, Some(1), T0 + 3 * S)],
             "reads": [{"dt": "other-plant", "output": "load"}, {"dt": "robot-2", "output": "pose"}],
             "children": [gripper("gripper-1", "gripper1")]},
            {"id": "robot-2", "state": null, "description": null,
             "assets": [asset("controller", "pid", "2.0.0", None),
                        asset("vision", "camera-model", "0.9", None)],
             "pts": [pt("robot2", &["joints"], &["stop"])],
             "processes": [proc_json("vision", "n1", 300, "exited", 0, Some(0), T0 + 4 * S)],
             "exports": ["dtaas.v1.dt.robot-2.out.pose"],
             "children": [gripper("gripper-2", "gripper2")]}
        ]
    }})
}

/// Asset kinds the asset library knows: `(id, version, kind)`.
pub const KNOWN_KINDS: [(&str, &str, &str); 2] =
    [("scheduler", "2.0", "tool"), ("pid", "1.2.0", "function")];

/// The expected `graph.history` transitions of `factory`.
pub fn expected_history() -> Value {
    json!([
        {"from": null, "to": "created", "at": T0, "user": "alice", "config_version": 1, "detail": null},
        {"from": "created", "to": "executing", "at": T0 + S, "user": "alice", "config_version": null, "detail": null},
        {"from": "executing", "to": "evolving", "at": T0 + 3 * S, "user": "alice", "config_version": 2, "detail": "robot-2 gets pid 2.0.0"},
        {"from": "evolving", "to": "executing", "at": T0 + 4 * S, "user": "alice", "config_version": null, "detail": null},
    ])
}

/// The expected `commands` of robot1 first seen in `[T0+15s, T0+25s)`: only c2.
pub fn expected_robot1_window() -> Value {
    json!([{
        "id": "c2", "command": "move", "status": "failed", "first_at": T0 + 20 * S,
        "history": [
            {"status": "accepted", "at": T0 + 20 * S, "reason": null},
            {"status": "sent", "at": T0 + 21 * S, "reason": null},
            {"status": "failed", "at": T0 + 22 * S, "reason": "device timeout"},
        ]
    }])
}

/// The expected impact of `pid` (any version) after the evolution.
pub fn expected_pid_users() -> Value {
    json!([
        {"dt": "robot-1", "version": "1.2.0", "name": "controller"},
        {"dt": "robot-2", "version": "2.0.0", "name": "controller"},
    ])
}

/// `T0 + secs` as RFC 3339.
pub fn rfc3339(secs: i64) -> String {
    format!("2026-01-01T00:00:{secs:02}Z")
}

/// The fixture as the consumer would batch it: lifecycle, commands and process events
/// split over two batches, asset kinds filled in from `KNOWN_KINDS`.
pub fn fixture_batches(recent_at: i64) -> Vec<dtaas_graph::model::Batch> {
    let mut batches = vec![dtaas_graph::model::Batch::default(); 2];
    for (i, event) in lifecycle_events().iter().enumerate() {
        batches[i / 2].add_lifecycle(&event.dt, event).unwrap();
    }
    let commands = command_events(recent_at);
    let half = commands.len() / 2;
    for (i, event) in commands.iter().enumerate() {
        batches[usize::from(i >= half)]
            .add_command(&event.id, event)
            .unwrap();
    }
    let processes = process_events();
    let half = processes.len() / 2;
    for (i, event) in processes.iter().enumerate() {
        batches[usize::from(i >= half)]
            .add_process(&event.dt, event)
            .unwrap();
    }
    batches[1]
        .add_lifecycle("solo", &solo_terminated())
        .unwrap();
    for event in bob_events() {
        batches[1].add_lifecycle(&event.dt, &event).unwrap();
    }
    for event in bob_process_events() {
        batches[1].add_process(&event.dt, &event).unwrap();
    }
    for batch in &mut batches {
        for row in batch.asset_uses_mut() {
            row.kind = KNOWN_KINDS
                .iter()
                .find(|(id, version, _)| *id == row.asset && *version == row.version)
                .map(|(_, _, kind)| kind.to_string());
        }
    }
    batches
}
