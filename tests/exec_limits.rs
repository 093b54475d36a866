//! Resource limits of DT processes enforced by real cgroups, through a running exec
//! node and NATS: a run over its memory limit is killed by its cgroup (not by the
//! address-space rlimit) and its failure says so; a run limited to a fifth of a CPU
//! gets a fifth and `usage.get` reports it; a fork bomb is held to `pids_max` and
//! `stop` leaves none of it; a `setsid` escapee is killed on stop with cgroup v1
//! alone; a node killed with SIGKILL has its groups swept in every hierarchy by its
//! next life; and a configured v1 directory holds the node's groups, its CPU quota
//! capping a run that asks for more. On a machine without writable cgroups each test prints why it
//! skips; on the test machine (cgroup v1 controllers, a cgroup v2 hierarchy without
//! any) they run, on v1 and on v1 + v2.

mod exec_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dtaas_exec::cgroup::mounts;
use dtaas_schemas::exec::{
    ListReply, LogsReply, ProcessEventKind, RestartPolicy, StartReply, StopReply, UsageReply,
};
use dtaas_schemas::subject;
use exec_support::*;
use serde_json::json;

/// A cluster with exec node `id` (and `extra` environment), when the node limits
/// `controller` with a cgroup; `None`, after saying why, when it cannot here.
async fn node_limiting(id: &str, extra: &[(&str, &str)], controller: &str) -> Option<Cluster> {
    let mut cluster = Cluster::empty(WAIT).await;
    cluster.add_node_with(id, extra);
    cluster.wait_for_node(id).await;
    let line = isolation_line(&cluster, id);
    println!("{line}");
    let limits = line
        .split("limits=")
        .nth(1)
        .and_then(|rest| rest.split(", kill").next())
        .unwrap_or_default();
    if !limits.split([',', ' ']).any(|c| c == controller) {
        println!("SKIPPED: exec cannot limit `{controller}` with a cgroup on this machine: {line}");
        return None;
    }
    Some(cluster)
}

/// The first of `files` found in a group of `pid` that exec made (any hierarchy, any
/// version), with its content.
fn run_group_file(pid: u32, files: &[&str]) -> Option<(PathBuf, String)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    mounts::parse(&mountinfo, &cgroup)
        .into_iter()
        .filter_map(|h| Some(h.dir(h.own.as_deref().filter(|p| p.contains("/dtaas-exec-"))?)))
        .flat_map(|dir| files.iter().map(move |f| dir.join(f)))
        .find_map(|file| Some((file.clone(), std::fs::read_to_string(file).ok()?)))
}

/// Live (not zombie) processes whose environment says they belong to DT `dt`.
fn processes_of(dt: &str) -> Vec<u32> {
    let marker = format!("DTAAS_DT={dt}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

async fn subscribe(cluster: &Cluster, subject: String) -> async_nats::Subscriber {
    cluster.client.subscribe(subject).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_over_its_memory_limit_is_killed_by_its_cgroup() {
    let Some(cluster) = node_limiting("lm1", &[], "memory").await else {
        return;
    };
    let dt = "hog32";
    let mut events = subscribe(&cluster, subject::event_id_all("proc", dt).unwrap()).await;
    // It waits a second, so the test sees its limit, then holds 200 MB in the shell.
    let mut spec = shell(
        dt,
        "r",
        "sleep 1; a=$(head -c 200000000 /dev/zero | tr '\\0' x); echo survived ${#a}",
    );
    spec.restart = RestartPolicy::Never;
    spec.memory_mb = Some(32);
    let started: StartReply = cluster
        .node_request("lm1", "start", serde_json::to_value(&spec).unwrap())
        .await;
    let (file, limit) = run_group_file(started.pid, &["memory.limit_in_bytes", "memory.max"])
        .expect("the run is in a memory cgroup");
    println!("{} = {}", file.display(), limit.trim());
    assert_eq!(limit.trim(), (32u64 << 20).to_string());

    let failed = next_event(&mut events, ProcessEventKind::Failed, &cluster).await;
    let detail = failed.detail.clone().unwrap_or_default();
    println!("failed: signal {:?}, detail {detail:?}", failed.signal);
    // The address-space rlimit would end it with a failed allocation and no such
    // detail: the cgroup killed it.
    assert!(
        detail.starts_with("killed by its memory limit (32 MiB, memory."),
        "{failed:?}\n{}",
        cluster.logs()
    );
    let logs: LogsReply = cluster.node_request("lm1", "logs", json!({"dt": dt})).await;
    assert!(
        !logs.lines.iter().any(|l| l.line.contains("survived")),
        "{logs:?}"
    );
    assert!(processes_of(dt).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_limited_to_a_fifth_of_a_cpu_uses_a_fifth() {
    let Some(cluster) = node_limiting("lc1", &[], "cpu").await else {
        return;
    };
    let dt = "spin02";
    let mut spec = shell(dt, "r", "while :; do :; done");
    spec.cpu = Some(0.2);
    let started: StartReply = cluster
        .node_request("lc1", "start", serde_json::to_value(&spec).unwrap())
        .await;
    let since = Instant::now();
    let (file, quota) = run_group_file(started.pid, &["cpu.cfs_quota_us", "cpu.max"])
        .expect("the run is in a cpu cgroup");
    println!("{} = {}", file.display(), quota.trim());
    assert!(quota.starts_with("20000"), "{quota}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from_proc = proc_cpu_seconds(started.pid);
    let wall = since.elapsed().as_secs_f64();
    let _: StopReply = cluster.node_request("lc1", "stop", json!({"dt": dt})).await;

    let reply = cluster
        .request(
            subject::request("alice", "usage", "get").unwrap(),
            json!({"from": "-5m"}),
        )
        .await;
    let usage: UsageReply = serde_json::from_value(reply.clone()).expect("a usage reply");
    let spin = &usage
        .dts
        .iter()
        .find(|d| d.dt == dt)
        .expect("accounted")
        .usage;
    let proc_rate = from_proc / wall;
    let usage_rate = spin.cpu_seconds / spin.wall_seconds;
    println!(
        "cpu 0.2: /proc {from_proc:.2} CPU s in {wall:.2} s ({proc_rate:.3}/s); usage.get {:.2} CPU s in {:.2} s ({usage_rate:.3}/s)",
        spin.cpu_seconds, spin.wall_seconds
    );
    assert!(proc_rate <= 0.35, "the quota did not hold: {proc_rate}");
    assert!(
        (0.05..=0.35).contains(&usage_rate),
        "usage.get: {usage_rate}/s\n{reply}"
    );
    assert!(spin.cpu_seconds >= from_proc * 0.9, "{reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_bomb_is_held_to_pids_max_and_stop_leaves_none_of_it() {
    let pids_max = 40;
    let env = [("DTAAS_EXEC_CGROUP", "v1"), ("DTAAS_EXEC_PIDS_MAX", "40")];
    let Some(cluster) = node_limiting("lp1", &env, "pids").await else {
        return;
    };
    let dt = "bomb40";
    // Every bomb forks bombs without end; the leader forks one and becomes `sleep`.
    let script = "bomb() { while :; do bomb & sleep 0.1; done; }; bomb & exec sleep 600";
    let started: StartReply = cluster
        .node_request(
            "lp1",
            "start",
            serde_json::to_value(shell(dt, "r", script)).unwrap(),
        )
        .await;
    let (max_file, max) = run_group_file(started.pid, &["pids.max"]).expect("a pids cgroup");
    assert_eq!(max.trim(), "40");
    let events_file = max_file.with_file_name("pids.events");
    let refused = || {
        std::fs::read_to_string(&events_file)
            .ok()
            .and_then(|t| t.trim().strip_prefix("max ")?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    eventually("forks are refused at pids.max", || refused() > 0).await;
    let mut most = 0;
    for _ in 0..20 {
        most = most.max(processes_of(dt).len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "fork bomb: at most {most} processes seen, pids.max {pids_max}, {} forks refused",
        refused()
    );
    assert!(most <= pids_max, "{most} processes");
    assert!(most >= pids_max / 2, "the bomb did not grow: {most}");
    let list: ListReply = cluster.node_request("lp1", "list", json!({})).await;
    assert_eq!(list.processes.len(), 1, "the node still answers");

    let _: StopReply = cluster.node_request("lp1", "stop", json!({"dt": dt})).await;
    assert_eq!(processes_of(dt), Vec::<u32>::new(), "left after stop");
    assert!(!max_file.parent().unwrap().exists(), "its group is removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_setsid_escapee_is_killed_on_stop_with_cgroup_v1_alone() {
    let Some(cluster) = node_limiting("ls1", &[("DTAAS_EXEC_CGROUP", "v1")], "memory").await else {
        return;
    };
    let line = isolation_line(&cluster, "ls1");
    assert!(!line.contains("cgroup v2"), "{line}");
    a_setsid_escapee_is_killed_on_stop(&cluster, "ls1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_nodes_groups_are_swept_in_every_hierarchy_by_its_next_life() {
    let Some(mut cluster) = node_limiting("lk1", &[], "memory").await else {
        return;
    };
    let mut lines = subscribe(&cluster, subject::dt_log("left", "r").unwrap()).await;
    // The child leaves the process group, so only the cgroups still hold it.
    let script = "setsid sleep 600 & echo child $!; exec sleep 600";
    let started: StartReply = cluster
        .node_request(
            "lk1",
            "start",
            serde_json::to_value(shell("left", "r", script)).unwrap(),
        )
        .await;
    let line = next_line(&mut lines, "child", &cluster).await;
    let child: u32 = line["line"].as_str().unwrap()[6..].trim().parse().unwrap();
    let record = cluster.dir.path().join("lk1/exec/lk1/cgroup");
    let recorded: Vec<PathBuf> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect();
    println!("recorded: {recorded:?}");
    assert!(recorded.iter().all(|d| d.is_dir()), "{recorded:?}");

    cluster.node("lk1").kill();
    eventually("the leader dies with its node", || !alive(started.pid)).await;
    assert!(alive(child), "the setsid child outlives the node");
    cluster.node("lk1").start().unwrap();
    eventually("the next life kills the child", || !alive(child)).await;
    eventually("the killed node's groups are removed", || {
        recorded.iter().all(|d| !d.exists())
    })
    .await;
    assert!(
        cluster.node("lk1").log().contains("left in its cgroups"),
        "{}",
        cluster.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configured_v1_directory_holds_the_groups_and_its_cpu_quota_caps_runs() {
    // The same group in every v1 hierarchy, limited to half a CPU, as an operator
    // would make it (`cgcreate`).
    let name = format!("dtaas-test-{}", std::process::id());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let parents: Vec<PathBuf> = mounts::parse(&mountinfo, &cgroup)
        .into_iter()
        .filter(|h| h.version == mounts::Version::V1)
        .filter(|h| {
            ["memory", "cpu", "cpuacct", "pids", "freezer"]
                .iter()
                .any(|c| h.has(c))
        })
        .map(|h| h.dir(&format!("/{name}")))
        .collect();
    let made = parents.iter().all(|p| std::fs::create_dir(p).is_ok());
    let cpu_parent = parents.iter().find(|p| p.join("cpu.cfs_quota_us").exists());
    let Some(cpu_parent) = cpu_parent.filter(|_| made) else {
        println!("SKIPPED: no writable cgroup v1 cpu hierarchy here");
        parents.iter().for_each(|p| drop(std::fs::remove_dir(p)));
        return;
    };
    std::fs::write(cpu_parent.join("cpu.cfs_quota_us"), "50000").unwrap();
    let setting = cpu_parent.display().to_string();
    let env = [("DTAAS_EXEC_CGROUP", setting.as_str())];
    let Some(mut cluster) = node_limiting("lq1", &env, "cpu").await else {
        parents.iter().for_each(|p| drop(std::fs::remove_dir(p)));
        return;
    };
    let line = isolation_line(&cluster, "lq1");
    assert!(line.contains(&format!("/{name}/dtaas-exec-")), "{line}");

    // Asks for a whole CPU, more than the parent allows: it starts, and gets half.
    let mut spec = shell("spin1", "r", "while :; do :; done");
    spec.cpu = Some(1.0);
    let started: StartReply = cluster
        .node_request("lq1", "start", serde_json::to_value(&spec).unwrap())
        .await;
    let since = Instant::now();
    let (file, _) = run_group_file(started.pid, &["cpu.cfs_quota_us"]).expect("a cpu group");
    assert!(file.starts_with(cpu_parent), "{}", file.display());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rate = proc_cpu_seconds(started.pid) / since.elapsed().as_secs_f64();
    println!("cpu 1.0 below a parent with half a CPU: {rate:.3} CPU s/s");
    let _: StopReply = cluster
        .node_request("lq1", "stop", json!({"dt": "spin1"}))
        .await;
    assert!(rate <= 0.65, "the parent's quota did not hold: {rate}");

    // A clean stop removes the node's groups, so the parents can go too.
    cluster.node("lq1").stop();
    for parent in &parents {
        std::fs::remove_dir(parent)
            .unwrap_or_else(|e| panic!("{} is not empty: {e}", parent.display()));
    }
}
