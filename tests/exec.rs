//! Exec nodes with real processes: the contract's environment and output to NATS,
//! idempotent starts, restarts after SIGKILL with an event, terminate leaving no
//! process of the group, an unprivileged user, memory limits, a node that dies
//! taking its processes with it while another node takes over, usage against `/proc`,
//! and no growth of exec's processes and descriptors over 100 start/stop cycles.

mod exec_support;

use std::time::Duration;

use dtaas_schemas::exec::{
    ListReply, LogsReply, ProcessEventKind, RestartPolicy, StartReply, StopReply, UsageReply,
};
use dtaas_schemas::subject;
use exec_support::*;
use serde_json::json;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread")]
async fn processes_run_restart_and_terminate_across_nodes() {
    let mut cluster = Cluster::start(&["n1", "n2", "n3"]).await;
    let n1 = cluster.wait_for_node("n1").await;
    assert!(n1.cpus > 0.0 && n1.memory_mb > 0, "{n1:?}");

    let dt = "twin-a";
    let mut events = cluster
        .client
        .subscribe(subject::event_id_all("proc", dt).unwrap())
        .await
        .unwrap();
    let mut lines = cluster
        .client
        .subscribe(subject::dt_log_all(dt).unwrap())
        .await
        .unwrap();
    let mut spec = shell(
        dt,
        "worker",
        "echo \"dt=$DTAAS_DT role=$DTAAS_ROLE in=$DTAAS_IN_X nats=${DTAAS_NATS_URL%%:*}\"; \
         echo oops >&2; sleep 1000 & wait",
    );
    spec.env
        .insert("DTAAS_IN_X".into(), "dtaas.v1.tel.pt9.val".into());
    let spec_json = serde_json::to_value(&spec).unwrap();
    let started: StartReply = cluster.node_request("n1", "start", spec_json.clone()).await;
    assert!(!started.already_running);
    // stdout and stderr are read apart, so their lines may come in either order.
    let (mut out, mut err) = (None, None);
    while out.is_none() || err.is_none() {
        let line = next_line(&mut lines, "", &cluster).await;
        match line["stream"].as_str() {
            Some("stdout") => out = Some(line),
            _ => err = Some(line),
        }
    }
    assert_eq!(
        out.unwrap()["line"],
        "dt=twin-a role=worker in=dtaas.v1.tel.pt9.val nats=nats"
    );
    assert_eq!(err.unwrap()["line"], "oops");
    let event = next_event(&mut events, ProcessEventKind::Started, &cluster).await;
    assert_eq!((event.pid, event.node.as_str()), (started.pid, "n1"));

    // A second start of the same spec starts nothing.
    let again: StartReply = cluster.node_request("n1", "start", spec_json.clone()).await;
    assert!(again.already_running);
    assert_eq!(again.pid, started.pid);

    // Its own process group, not root.
    let stat = proc_stat(started.pid).unwrap();
    assert_eq!(stat[2], started.pid.to_string(), "leader of its own group");
    if nix::unistd::geteuid().is_root() {
        let status = std::fs::read_to_string(format!("/proc/{}/status", started.pid)).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(!uid.contains("\t0\t"), "runs as root: {uid}");
    }

    // SIGKILL: restarted (on-failure) with an event naming the signal.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(started.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = next_event(&mut events, ProcessEventKind::Restarted, &cluster).await;
    assert_eq!(restarted.signal, Some(9));
    assert_eq!(restarted.restarts, 1);
    assert_ne!(restarted.pid, started.pid);
    let list: ListReply = cluster.node_request("n1", "list", json!({"dt": dt})).await;
    assert_eq!(list.processes.len(), 1);
    assert_eq!(list.processes[0].restarts, 1);
    assert_eq!(list.processes[0].pid, restarted.pid);
    let logs: LogsReply = cluster
        .node_request("n1", "logs", json!({"dt": dt, "lines": 10}))
        .await;
    assert!(logs.lines.iter().any(|l| l.line == "oops"), "{logs:?}");

    // Terminate: the leader and its `sleep` child are gone, the group is empty.
    let pid = restarted.pid;
    eventually("the sleep child starts", || group_members(pid).len() >= 2).await;
    let stopped: StopReply = cluster.node_request("n1", "stop", json!({"dt": dt})).await;
    assert_eq!(stopped.stopped.len(), 1);
    assert!(!alive(pid));
    assert!(group_members(pid).is_empty(), "{:?}", group_members(pid));
    next_event(&mut events, ProcessEventKind::Killed, &cluster).await;
    let list: ListReply = cluster.node_request("n1", "list", json!({})).await;
    assert!(list.processes.is_empty());

    // A node that dies takes its processes along; its entry goes stale; the same
    // (dt, role) starts on another node.
    let on_n3: StartReply = cluster.node_request("n3", "start", spec_json.clone()).await;
    eventually("the sleep child starts", || {
        group_members(on_n3.pid).len() >= 2
    })
    .await;
    cluster.node("n3").kill();
    eventually("n3's process dies with n3", || !alive(on_n3.pid)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = cluster.wait_for_node("n3").await;
        if info.is_stale(dtaas_schemas::time::now_ns()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "n3 never went stale"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let on_n2: StartReply = cluster.node_request("n2", "start", spec_json).await;
    assert!(alive(on_n2.pid));
    // n3 back: it kills what its killed predecessor left (the process's own child).
    cluster.node("n3").start().unwrap();
    cluster.wait_for_node("n3").await;
    eventually("n3's leftovers are killed", || {
        group_members(on_n3.pid).is_empty()
    })
    .await;
    let n2 = cluster.wait_for_node("n2").await;
    assert!(!n2.is_stale(dtaas_schemas::time::now_ns()));

    // A clean stop of a node stops its processes and removes its entry.
    cluster.node("n2").stop();
    assert!(!alive(on_n2.pid));
    let js = async_nats::jetstream::new(cluster.client.clone());
    let kv = js.get_key_value("dtaas-nodes").await.unwrap();
    assert!(kv.get("n2").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_starts_are_refused_with_the_field_named() {
    let cluster = Cluster::start(&["m1"]).await;
    let subject = subject::exec_node("m1", "start").unwrap();
    for (spec, field) in [
        (
            serde_json::to_value(shell("a.b", "r", "true")).unwrap(),
            "dt",
        ),
        (
            json!({"dt": "d", "role": "r", "owner": "alice", "asset": "", "argv": []}),
            "argv",
        ),
        (
            json!({"dt": "d", "role": "r", "owner": "alice", "asset": "nobody/x@1", "argv": ["x"]}),
            "asset",
        ),
    ] {
        let reply = cluster.request(subject.clone(), spec).await;
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
        assert!(message.contains(field), "{message}");
    }
    let reply = cluster
        .request(
            subject,
            serde_json::to_value(shell("d", "r", "true")).unwrap(),
        )
        .await;
    assert!(reply.get("pid").is_some(), "still serving: {reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_limit_is_enforced() {
    let cluster = Cluster::start(&["mem1"]).await;
    let hog = "a=$(head -c 100000000 /dev/zero | tr '\\0' x); echo survived ${#a}";
    let mut lines = cluster
        .client
        .subscribe(subject::dt_log("hog", "free").unwrap())
        .await
        .unwrap();
    let mut events = cluster
        .client
        .subscribe(subject::event_id_all("proc", "hog").unwrap())
        .await
        .unwrap();

    let mut free = shell("hog", "free", hog);
    free.restart = RestartPolicy::Never;
    let _: StartReply = cluster
        .node_request("mem1", "start", serde_json::to_value(&free).unwrap())
        .await;
    next_line(&mut lines, "survived 100000000", &cluster).await;
    next_event(&mut events, ProcessEventKind::Exited, &cluster).await;

    let mut limited = shell("hog", "limited", hog);
    limited.restart = RestartPolicy::Never;
    limited.memory_mb = Some(32);
    let _: StartReply = cluster
        .node_request("mem1", "start", serde_json::to_value(&limited).unwrap())
        .await;
    let failed = next_event(&mut events, ProcessEventKind::Failed, &cluster).await;
    assert_eq!(failed.role, "limited");
    let logs: LogsReply = cluster
        .node_request("mem1", "logs", json!({"dt": "hog", "role": "limited"}))
        .await;
    assert!(
        !logs.lines.iter().any(|l| l.line.contains("survived")),
        "{logs:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_that_left_its_group_with_setsid_is_killed_on_stop() {
    let cluster = Cluster::start(&["cg1"]).await;
    a_setsid_escapee_is_killed_on_stop(&cluster, "cg1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_of_a_busy_process_matches_proc() {
    let cluster = Cluster::start(&["u1"]).await;
    let started: StartReply = cluster
        .node_request(
            "u1",
            "start",
            serde_json::to_value(shell("busy", "spin", "while :; do :; done")).unwrap(),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let from_proc = proc_cpu_seconds(started.pid);
    let _: StopReply = cluster
        .node_request("u1", "stop", json!({"dt": "busy"}))
        .await;
    assert!(from_proc > 0.5, "the busy loop got {from_proc} CPU seconds");

    let usage_subject = subject::request("alice", "usage", "get").unwrap();
    let reply = cluster.request(usage_subject, json!({"from": "-5m"})).await;
    let usage: UsageReply = serde_json::from_value(reply.clone()).expect("a usage reply");
    let busy = usage
        .dts
        .iter()
        .find(|d| d.dt == "busy")
        .expect("busy is accounted");
    let ratio = busy.usage.cpu_seconds / from_proc;
    println!(
        "usage: exec {:.2} CPU s, /proc {from_proc:.2} CPU s (ratio {ratio:.3}), wall {:.2} s, peak {} KiB",
        busy.usage.cpu_seconds, busy.usage.wall_seconds, busy.usage.peak_memory_kib
    );
    assert!((0.9..=1.1).contains(&ratio), "{reply}");
    assert!(busy.usage.wall_seconds >= 5.0, "{reply}");
    assert!(busy.usage.peak_memory_kib > 0, "{reply}");
    assert_eq!(busy.usage.runs, 1);
    assert_eq!(usage.total.cpu_seconds, busy.usage.cpu_seconds);

    // `dtaas usage` as alice: the same figures, as JSON and as a table.
    let url = cluster.nats.url();
    let cli = move |json: bool| {
        let url = url.clone();
        async move {
            let mut args = vec!["usage", "--from", "-5m"];
            if json {
                args.push("--json");
            }
            let run = tokio::task::spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_dtaas"))
                    .args(args)
                    .env("DTAAS_NATS_URL", url)
                    .env("DTAAS_USER", "alice")
                    .output()
                    .unwrap()
            });
            let output = timeout(WAIT, run).await.unwrap().unwrap();
            assert!(output.status.success(), "{output:?}");
            String::from_utf8(output.stdout).unwrap()
        }
    };
    let printed: UsageReply = serde_json::from_str(&cli(true).await).unwrap();
    assert_eq!(printed.dts, usage.dts);
    let table = cli(false).await;
    assert!(table.lines().any(|l| l.starts_with("busy ")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("total ")), "{table}");

    // Another user sees none of it, and may not ask for alice's.
    let bob = subject::request("bob", "usage", "get").unwrap();
    let reply = cluster.request(bob.clone(), json!({})).await;
    assert_eq!(reply["dts"], json!([]), "{reply}");
    let reply = cluster.request(bob, json!({"user": "alice"})).await;
    assert_eq!(reply["error"]["code"], "forbidden", "{reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_start_stop_cycles_leave_nothing_behind() {
    let mut cluster = Cluster::start(&["c1"]).await;
    let exec_pid = cluster.node("c1").pid().unwrap();
    let run = |i: usize| {
        serde_json::to_value(shell(
            &format!("cyc-{i}"),
            "r",
            "echo hi; sleep 1000 & wait",
        ))
        .unwrap()
    };
    // One cycle first, so lazily created things (threads, connections) exist.
    let _: StartReply = cluster.node_request("c1", "start", run(1000)).await;
    let _: StopReply = cluster
        .node_request("c1", "stop", json!({"dt": "cyc-1000"}))
        .await;
    let before = fds_and_children(exec_pid);
    let mut pids = Vec::new();
    let (mut starts, mut stops) = (Vec::new(), Vec::new());
    for i in 0..100 {
        let t = std::time::Instant::now();
        let started: StartReply = cluster.node_request("c1", "start", run(i)).await;
        starts.push(t.elapsed());
        pids.push(started.pid);
        let t = std::time::Instant::now();
        let stopped: StopReply = cluster
            .node_request("c1", "stop", json!({"dt": format!("cyc-{i}")}))
            .await;
        stops.push(t.elapsed());
        assert_eq!(stopped.stopped.len(), 1);
    }
    starts.sort();
    stops.sort();
    println!(
        "start p50 {:?} p99 {:?}; stop (SIGTERM, group gone, usage stored) p50 {:?} p99 {:?}",
        starts[49], starts[98], stops[49], stops[98]
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = fds_and_children(exec_pid);
    println!(
        "exec after 100 start/stop cycles: fds {} -> {}, threads {} -> {}, child processes {} -> {}",
        before.0, after.0, before.1, after.1, before.2, after.2
    );
    assert!(pids.iter().all(|p| !alive(*p)));
    assert_eq!(after.2, 0, "no child process is left");
    // The runs' `sleep`s were killed and reaped (by exec, the subreaper of its runs;
    // re-parented to an init that does not reap, they would stay zombies).
    let zombies: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            proc_stat(*p).is_some_and(|f| f[0] == "Z" && pids.iter().any(|g| f[2] == g.to_string()))
        })
        .collect();
    assert!(zombies.is_empty(), "zombies of the runs: {zombies:?}");
    assert!(after.0 <= before.0 + 2, "fds grew: {before:?} -> {after:?}");
    assert!(
        after.1 <= before.1 + 4,
        "threads grew: {before:?} -> {after:?}"
    );
}

/// Puts `content` into the library's object store; returns its SHA-256.
async fn put_file(js: &async_nats::jetstream::Context, content: &[u8]) -> String {
    use sha2::Digest;
    let sha = dtaas_schemas::asset_store::hex(&sha2::Sha256::digest(content));
    let store = js.get_object_store("dtaas-assets").await.unwrap();
    let name = dtaas_schemas::asset_store::object_name(&sha);
    timeout(WAIT, store.put(name.as_str(), &mut &content[..]))
        .await
        .unwrap()
        .unwrap();
    sha
}

#[tokio::test(flavor = "multi_thread")]
async fn asset_files_and_snapshots_reach_the_work_directory() {
    let cluster = Cluster::start(&["a1"]).await;
    let js = async_nats::jetstream::new(cluster.client.clone());
    let script =
        b"#!/bin/sh\necho \"from-asset $(cat data/answer.txt) state=$(cat \"$DTAAS_STATE\")\"\n";
    let files = json!([
        {"path": "bin/run.sh", "size": script.len(), "sha256": put_file(&js, script).await, "mode": 0o755},
        {"path": "data/answer.txt", "size": 2, "sha256": put_file(&js, b"42").await, "mode": 0o644},
    ]);
    let meta = json!({"name": "doubler", "owner": "alice", "version": 1, "kind": "function",
        "files": files, "digest": "d1"});
    let kv = js.get_key_value("dtaas-assets").await.unwrap();
    kv.put(
        dtaas_schemas::asset_store::meta_key("alice", "doubler", 1),
        meta.to_string().into(),
    )
    .await
    .unwrap();
    let snapshots = js.get_object_store("dtaas-snapshots").await.unwrap();
    snapshots
        .put("snap-1", &mut &b"counter=7"[..])
        .await
        .unwrap();

    let mut lines = cluster
        .client
        .subscribe(subject::dt_log("lib", "fn").unwrap())
        .await
        .unwrap();
    let mut spec = shell("lib", "fn", "");
    spec.asset = "alice/doubler@1".into();
    spec.digest = Some("d1".into());
    spec.argv = vec!["bin/run.sh".into()];
    spec.restart = RestartPolicy::Never;
    spec.state = Some("snap-1".into());
    let _: StartReply = cluster
        .node_request("a1", "start", serde_json::to_value(&spec).unwrap())
        .await;
    next_line(&mut lines, "from-asset 42 state=counter=7", &cluster).await;

    // A file whose content does not match its digest is refused, and nothing runs.
    let other = put_file(&js, b"real").await;
    let store = js.get_object_store("dtaas-assets").await.unwrap();
    let forged = "0".repeat(64);
    store
        .put(
            dtaas_schemas::asset_store::object_name(&forged).as_str(),
            &mut &b"forged"[..],
        )
        .await
        .unwrap();
    let meta = json!({"name": "bad", "owner": "alice", "version": 1, "kind": "function",
        "files": [{"path": "x", "size": 6, "sha256": forged, "mode": 0o644},
                  {"path": "y", "size": 4, "sha256": other, "mode": 0o644}]});
    kv.put(
        dtaas_schemas::asset_store::meta_key("alice", "bad", 1),
        meta.to_string().into(),
    )
    .await
    .unwrap();
    let mut bad = shell("lib", "bad", "true");
    bad.asset = "alice/bad@1".into();
    let reply = cluster
        .request(
            subject::exec_node("a1", "start").unwrap(),
            serde_json::to_value(&bad).unwrap(),
        )
        .await;
    assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SHA-256"),
        "{reply}"
    );
}
