//! The node's process table: `start`, `stop`, `list` and `logs`, and one supervising
//! task per process that restarts it per its policy.
//!
//! Starts and stops are serialised per node (one lock, held while a process is
//! spawned, never while one is waited for), so two starts of one `(dt, role)` start
//! it once: the second finds it running with the same spec and answers its pid.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtaas_runtime::backoff::Backoff;
use dtaas_runtime::Context;
use dtaas_schemas::exec::{
    ListReply, LogsReply, LogsRequest, ProcessEventKind, ProcessInfo, ProcessSpec, ProcessStatus,
    StartReply, StopReply, StopRequest,
};
use dtaas_schemas::{subject, time, ErrorCode, ErrorReply};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cgroup::{Cgroups, Group, Limits};
use crate::config::ExecConfig;
use crate::logs::LogHistory;
use crate::run::{self, Outcome, Run};
use crate::spawn::{self, Launch};
use crate::workdir::{WorkdirError, Workdirs};

/// A process is named by its DT and role.
pub type Key = (String, String);

/// First wait before a restart; it doubles up to `restart_backoff_max`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// A run that lasted this long resets the backoff.
const STABLE_RUN: Duration = Duration::from_secs(60);

/// One supervised process.
#[derive(Debug)]
struct Supervised {
    spec: ProcessSpec,
    info: Mutex<ProcessInfo>,
    /// Cancelled to stop it; `grace` says how long SIGTERM has before SIGKILL.
    stop: CancellationToken,
    grace: Mutex<Duration>,
    /// Cancelled when its supervising task ended (no run of it is left).
    finished: CancellationToken,
}

impl Supervised {
    fn info(&self) -> ProcessInfo {
        self.info.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, change: impl FnOnce(&mut ProcessInfo)) {
        change(&mut self.info.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn is_live(&self) -> bool {
        matches!(
            self.info().status,
            ProcessStatus::Running | ProcessStatus::Restarting
        )
    }
}

/// The processes of this node.
pub struct Supervisor {
    pub node: String,
    /// When this life of the node started (its `started_at` in `dtaas-nodes`).
    pub started_at: i64,
    /// Set by `shutdown`: runs stopped from then on are `interrupted`, not `killed`,
    /// and no new run starts.
    shutting_down: AtomicBool,
    ctx: Context,
    config: Arc<ExecConfig>,
    workdirs: Workdirs,
    table: Mutex<HashMap<Key, Arc<Supervised>>>,
    ops: tokio::sync::Mutex<()>,
    pub logs: Arc<LogHistory>,
    tasks: TaskTracker,
    /// The node's cgroups; `None`: process groups and rlimits only.
    cgroups: Option<Arc<Cgroups>>,
}

fn bad_request(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorCode::BadRequest, message)
}

impl Supervisor {
    pub fn new(
        ctx: Context,
        config: Arc<ExecConfig>,
        workdirs: Workdirs,
        cgroups: Option<Arc<Cgroups>>,
    ) -> Self {
        Self {
            node: config.node.clone(),
            started_at: dtaas_schemas::time::now_ns(),
            shutting_down: AtomicBool::new(false),
            logs: Arc::new(LogHistory::new(config.log_history)),
            ctx,
            config,
            workdirs,
            table: Mutex::new(HashMap::new()),
            ops: tokio::sync::Mutex::new(()),
            tasks: TaskTracker::new(),
            cgroups,
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Supervised>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Processes running or waiting to restart, and the CPUs and memory they asked for.
    pub fn load(&self) -> (u32, f64, u64) {
        let table = self.table();
        let live: Vec<_> = table.values().filter(|s| s.is_live()).collect();
        (
            live.len() as u32,
            live.iter().filter_map(|s| s.spec.cpu).sum(),
            live.iter().filter_map(|s| s.spec.memory_mb).sum(),
        )
    }

    /// `start`: runs the spec, or answers the pid of the same spec running already.
    pub async fn start(self: &Arc<Self>, spec: ProcessSpec) -> Result<StartReply, ErrorReply> {
        validate(&spec)?;
        let key: Key = (spec.dt.clone(), spec.role.clone());
        let _ops = self.ops.lock().await;
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ErrorReply::new(
                ErrorCode::Unavailable,
                format!(
                    "exec node {} is shutting down; place the process on another node",
                    self.node
                ),
            ));
        }
        let existing = self.table().get(&key).cloned();
        if let Some(existing) = existing {
            if existing.spec == spec && existing.is_live() {
                return Ok(StartReply {
                    pid: existing.info().pid,
                    node: self.node.clone(),
                    already_running: true,
                });
            }
            // Another spec (an evolved DT) or an ended run: replace it.
            self.table().remove(&key);
            terminate(&existing, self.config.grace).await;
        }
        let state = self.workdirs.prepare(&spec).await.map_err(|e| match e {
            WorkdirError::Invalid(m) => bad_request(m),
            WorkdirError::Unavailable(m) => ErrorReply::new(ErrorCode::Unavailable, m),
        })?;
        let workdir = self.workdirs.path(&spec.dt, &spec.role);
        let contract = self.contract(&spec, &workdir, state.as_deref());
        let (child, group) = self.spawn_run(&spec, contract.clone()).map_err(|e| {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    ErrorCode::BadRequest
                }
                _ => ErrorCode::Internal,
            };
            ErrorReply::new(
                code,
                format!(
                    "cannot start {:?} for {}/{}: {e}",
                    spec.argv[0], spec.dt, spec.role
                ),
            )
        })?;
        let pid = child.id();
        let now = time::now_ns();
        let supervised = Arc::new(Supervised {
            info: Mutex::new(ProcessInfo {
                dt: spec.dt.clone(),
                role: spec.role.clone(),
                owner: spec.owner.clone(),
                asset: spec.asset.clone(),
                node: self.node.clone(),
                pid,
                status: ProcessStatus::Running,
                restarts: 0,
                started_at: now,
                exit_code: None,
            }),
            spec,
            stop: CancellationToken::new(),
            grace: Mutex::new(self.config.grace),
            finished: CancellationToken::new(),
        });
        self.table().insert(key, supervised.clone());
        let this = self.clone();
        self.tasks
            .spawn(async move { this.supervise(supervised, (child, group), contract).await });
        Ok(StartReply {
            pid,
            node: self.node.clone(),
            already_running: false,
        })
    }

    /// Spawns one run of `spec`, in a new cgroup when the node has them.
    fn spawn_run(
        &self,
        spec: &ProcessSpec,
        contract: BTreeMap<String, String>,
    ) -> std::io::Result<(std::process::Child, Option<Group>)> {
        let group = match &self.cgroups {
            Some(cgroups) => Some(
                cgroups
                    .group(Limits {
                        memory_mb: spec.memory_mb,
                        cpu: spec.cpu,
                        pids: Some(self.config.pids_max),
                    })
                    .map_err(|e| std::io::Error::other(format!("cannot create its cgroup: {e}")))?,
            ),
            None => None,
        };
        let workdir = self.workdirs.path(&spec.dt, &spec.role);
        let launch = Launch {
            spec,
            workdir: &workdir,
            contract,
            run_as: self.workdirs.run_as,
            group: group.as_ref(),
        };
        match spawn::spawn(&launch) {
            Ok(child) => Ok((child, group)),
            Err(e) => {
                if let Some(group) = &group {
                    group.remove();
                }
                Err(e)
            }
        }
    }

    /// The variables exec sets for every process.
    fn contract(
        &self,
        spec: &ProcessSpec,
        workdir: &std::path::Path,
        state: Option<&std::path::Path>,
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        if !spec.env.contains_key("DTAAS_NATS_URL") {
            // The servers without exec's own credentials: a DT process gets its own.
            let servers: Vec<&str> = self
                .ctx
                .config
                .nats_url
                .servers()
                .iter()
                .map(|s| s.as_url_str())
                .collect();
            env.insert("DTAAS_NATS_URL".into(), servers.join(","));
        }
        env.insert("DTAAS_DT".into(), spec.dt.clone());
        env.insert("DTAAS_ROLE".into(), spec.role.clone());
        env.insert("DTAAS_WORKDIR".into(), workdir.display().to_string());
        if let Some(state) = state {
            env.insert("DTAAS_STATE".into(), state.display().to_string());
        }
        env
    }

    /// Runs `child`, then restarts per the policy until it ends for good or is stopped.
    async fn supervise(
        self: Arc<Self>,
        supervised: Arc<Supervised>,
        first: (std::process::Child, Option<Group>),
        contract: BTreeMap<String, String>,
    ) {
        let spec = &supervised.spec;
        let key: Key = (spec.dt.clone(), spec.role.clone());
        let mut run_of = first;
        let mut backoff = Backoff::between(FIRST_BACKOFF, self.config.restart_backoff_max);
        self.event(&supervised, ProcessEventKind::Started, None, None, None)
            .await;
        loop {
            let info = supervised.info();
            let run = Run {
                ctx: &self.ctx,
                config: &self.config,
                spec,
                node: &self.node,
                started_at: info.started_at,
                logs: &self.logs,
                key: &key,
                stop: &supervised.stop,
                grace: &supervised.grace,
                root: &self.workdirs.root,
            };
            let started = std::time::Instant::now();
            let outcome = run::watch(run, run_of.0, run_of.1).await;
            supervised.update(|i| i.exit_code = outcome.code());
            let Outcome::Ended {
                code,
                signal,
                memory_limit_kill,
            } = outcome
            else {
                let (status, kind) = self.stopped();
                supervised.update(|i| i.status = status);
                self.event(&supervised, kind, outcome.code(), outcome.signal(), None)
                    .await;
                break;
            };
            // Why it failed, when exec knows better than the exit status.
            let detail = memory_limit_kill.map(|limit| {
                format!(
                    "killed by its memory limit ({} MiB, {limit})",
                    spec.memory_mb.unwrap_or_default()
                )
            });
            let success = code == Some(0);
            let restart = match spec.restart {
                dtaas_schemas::exec::RestartPolicy::Always => true,
                dtaas_schemas::exec::RestartPolicy::OnFailure => !success,
                dtaas_schemas::exec::RestartPolicy::Never => false,
            };
            if !restart {
                let (status, kind) = if success {
                    (ProcessStatus::Exited, ProcessEventKind::Exited)
                } else {
                    (ProcessStatus::Failed, ProcessEventKind::Failed)
                };
                supervised.update(|i| i.status = status);
                self.event(&supervised, kind, code, signal, detail).await;
                break;
            }
            if started.elapsed() >= STABLE_RUN {
                backoff.reset();
            }
            supervised.update(|i| i.status = ProcessStatus::Restarting);
            if !backoff.wait(&supervised.stop).await {
                let (status, kind) = self.stopped();
                supervised.update(|i| i.status = status);
                self.event(&supervised, kind, code, signal, None).await;
                break;
            }
            match self.spawn_run(spec, contract.clone()) {
                Ok(next) => {
                    supervised.update(|i| {
                        i.pid = next.0.id();
                        i.status = ProcessStatus::Running;
                        i.restarts += 1;
                        i.started_at = time::now_ns();
                    });
                    run_of = next;
                    self.event(
                        &supervised,
                        ProcessEventKind::Restarted,
                        code,
                        signal,
                        detail,
                    )
                    .await;
                }
                Err(e) => {
                    supervised.update(|i| i.status = ProcessStatus::Failed);
                    let detail = format!("cannot start it again: {e}");
                    self.event(
                        &supervised,
                        ProcessEventKind::Failed,
                        code,
                        signal,
                        Some(detail),
                    )
                    .await;
                    break;
                }
            }
        }
        supervised.finished.cancel();
    }

    async fn event(
        &self,
        supervised: &Supervised,
        status: ProcessEventKind,
        exit_code: Option<i32>,
        signal: Option<i32>,
        detail: Option<String>,
    ) {
        let info = supervised.info();
        tracing::debug!(dt = %info.dt, role = %info.role, pid = info.pid, status = status.as_str(), "Process event.");
        let event = dtaas_schemas::exec::ProcessEvent {
            dt: info.dt,
            role: info.role,
            node: self.node.clone(),
            pid: info.pid,
            status,
            exit_code,
            signal,
            restarts: info.restarts,
            at: time::now_ns(),
            detail,
        };
        crate::events::publish(&self.ctx.js, &event).await;
    }

    /// `stop`: terminates the DT's processes (one role, or all) and forgets them.
    pub async fn stop(&self, request: StopRequest) -> Result<StopReply, ErrorReply> {
        subject::validate_token("DT id", &request.dt).map_err(|e| bad_request(e.to_string()))?;
        let grace = request
            .grace_ms
            .map_or(self.config.grace, Duration::from_millis);
        let taken: Vec<Arc<Supervised>> = {
            let _ops = self.ops.lock().await;
            let mut table = self.table();
            let keys: Vec<Key> = table
                .keys()
                .filter(|(dt, role)| {
                    dt == &request.dt && request.role.as_ref().is_none_or(|r| r == role)
                })
                .cloned()
                .collect();
            keys.iter().filter_map(|k| table.remove(k)).collect()
        };
        futures::future::join_all(taken.iter().map(|s| terminate(s, grace))).await;
        let mut stopped = Vec::with_capacity(taken.len());
        for supervised in taken {
            let info = supervised.info();
            let key = (info.dt.clone(), info.role.clone());
            self.logs.remove(&key);
            self.workdirs.remove(&info.dt, &info.role).await;
            stopped.push(info);
        }
        Ok(StopReply { stopped })
    }

    /// `list`: the processes of one DT, or all, ordered by DT and role.
    pub fn list(&self, dt: Option<&str>) -> ListReply {
        let mut processes: Vec<ProcessInfo> = self
            .table()
            .values()
            .map(|s| s.info())
            .filter(|i| dt.is_none_or(|dt| dt == i.dt))
            .collect();
        processes.sort_by(|a, b| (&a.dt, &a.role).cmp(&(&b.dt, &b.role)));
        ListReply {
            node: self.node.clone(),
            processes,
        }
    }

    /// `logs`: the last lines of the DT's processes.
    pub fn logs(&self, request: &LogsRequest) -> LogsReply {
        LogsReply {
            lines: self.logs.last(
                &request.dt,
                request.role.as_deref(),
                request.lines.unwrap_or(100),
            ),
        }
    }

    /// Stops every process (the node shuts down) and waits for their tasks.
    /// What a stopped run is: `killed` by a request, `interrupted` by the node's
    /// shutdown (lifecycle starts it again).
    fn stopped(&self) -> (ProcessStatus, ProcessEventKind) {
        if self.shutting_down.load(Ordering::SeqCst) {
            (ProcessStatus::Interrupted, ProcessEventKind::Interrupted)
        } else {
            (ProcessStatus::Killed, ProcessEventKind::Killed)
        }
    }

    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let all: Vec<Arc<Supervised>> = {
            let _ops = self.ops.lock().await;
            self.table().drain().map(|(_, s)| s).collect()
        };
        futures::future::join_all(all.iter().map(|s| terminate(s, self.config.grace))).await;
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Stops one process (SIGTERM to its group, SIGKILL after `grace`) and waits until
/// its supervising task is done.
async fn terminate(supervised: &Supervised, grace: Duration) {
    *supervised.grace.lock().unwrap_or_else(|e| e.into_inner()) = grace;
    supervised.stop.cancel();
    supervised.finished.cancelled().await;
}

/// Checks a spec before anything is started; the error names the field.
fn validate(spec: &ProcessSpec) -> Result<(), ErrorReply> {
    let field =
        |name: &str, e: dtaas_schemas::SubjectError| bad_request(format!("field `{name}`: {e}"));
    subject::validate_token("DT id", &spec.dt).map_err(|e| field("dt", e))?;
    subject::validate_token("role", &spec.role).map_err(|e| field("role", e))?;
    subject::usage_sample(&spec.owner, &spec.dt).map_err(|e| field("owner", e))?;
    if spec.argv.first().is_none_or(|p| p.is_empty()) {
        return Err(bad_request(
            "field `argv`: empty; name the program to run and its arguments",
        ));
    }
    if spec.memory_mb == Some(0) {
        return Err(bad_request("field `memory_mb`: must be at least 1"));
    }
    Ok(())
}
