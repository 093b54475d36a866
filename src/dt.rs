//! `dtaas dt …`: the people's client of the lifecycle service (`dtaas.v1.<user>.dt.*`),
//! as `DTAAS_USER`. Configurations are read from YAML, TOML or JSON files; replies are
//! printed for people, or as JSON with `--json`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use dtaas_runtime::Config;
use dtaas_schemas::dt_config::{DtConfig, DtState};
use dtaas_schemas::exec::LogLine;
use dtaas_schemas::fork::{ForkRequest, Replay, ReplayWindow};
use dtaas_schemas::lifecycle::{
    self as api, CreateRequest, DeleteReply, DtReply, EvolveRequest, IdRequest, ListReply,
    ListRequest, LogsReply, LogsRequest, RestoreRequest, ScriptsReply,
};
use dtaas_schemas::subject;
use futures::StreamExt;
use serde::{de::DeserializeOwned, Serialize};

/// `dtaas dt …`
#[derive(Debug, Clone, PartialEq, Args)]
pub struct DtArgs {
    /// Print the replies as JSON instead of for people.
    #[arg(long, global = true)]
    pub json: bool,
    /// How long to wait for the lifecycle service (execute waits for every process to start).
    #[arg(long, global = true, default_value = "60s", value_parser = duration)]
    pub timeout: Duration,
    #[command(subcommand)]
    pub command: DtCommand,
}

#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum DtCommand {
    /// Validates a configuration (YAML, TOML or JSON) and registers the DT and its children.
    Create {
        /// The configuration file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Starts the DT's processes (its children first).
    Execute { id: String },
    /// Saves the state of every process of an executing DT as a snapshot.
    Save { id: String },
    /// Starts the DT from a snapshot (the newest unless --snapshot names one).
    Restore {
        id: String,
        #[arg(long)]
        snapshot: Option<String>,
    },
    /// Applies a new configuration; restarts only the processes whose part changed.
    Evolve {
        /// The new configuration file; its `id` names the DT.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Stops the DT's processes, then its children's.
    Terminate { id: String },
    /// Runs the `analyze` scripts (DTaaS-layout DTs) of the DT and its children, children first.
    Analyze { id: String },
    /// Runs the `clean` scripts (DTaaS-layout DTs) of the DT, then its children's; not
    /// while one executes.
    Clean { id: String },
    /// Deletes a DT that is not executing, with its children and snapshots; its id is
    /// free again. Usage records stay. A child goes only with its parent.
    Delete { id: String },
    /// Copies one of your DTs (without children) as a new DT for a what-if: other
    /// parameters, and with --replay-from the telemetry the historian recorded instead
    /// of live data (replayed on every execute).
    Fork {
        /// The DT to copy.
        id: String,
        /// The new DT's id.
        #[arg(long = "as")]
        fork: String,
        /// A parameter of a role, `role.param=value` (value as JSON, else as text);
        /// repeatable.
        #[arg(long = "param", value_parser = param_override)]
        params: Vec<(String, String, serde_json::Value)>,
        /// Start of the recorded range: RFC 3339, `now` or relative (`-1h`).
        #[arg(long, allow_hyphen_values = true)]
        replay_from: Option<String>,
        /// End of the recorded range, written like --replay-from.
        #[arg(
            long,
            requires = "replay_from",
            default_value = "now",
            allow_hyphen_values = true
        )]
        replay_to: String,
        /// Pace of the replay (1.0 = as recorded); as fast as possible without it.
        #[arg(long, requires = "replay_from")]
        speed: Option<f64>,
    },
    /// Replays an executing fork's recorded range again, from its start.
    Replay { id: String },
    /// State, configuration version, processes, snapshots and the last log lines.
    Get { id: String },
    /// Your DTs.
    List,
    /// The last log lines of the DT's processes; -f keeps following them.
    Logs {
        id: String,
        /// How many lines.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        /// Keep printing new lines until Ctrl-C.
        #[arg(short = 'f', long)]
        follow: bool,
    },
}

pub async fn run(args: DtArgs, config: &Config) -> anyhow::Result<()> {
    let client = dtaas_runtime::nats::connect(config, "dtaas-dt").await?;
    let call = Call {
        client: &client,
        user: &config.user,
        timeout: args.timeout,
    };
    let json = args.json;
    match args.command {
        DtCommand::Create { file } => {
            let config = read_config(&file)?;
            let reply: DtReply = call
                .ask(api::VERB_CREATE, &CreateRequest { config })
                .await?;
            show_dt(&reply, json)
        }
        DtCommand::Evolve { file } => {
            let config = read_config(&file)?;
            let request = EvolveRequest {
                id: config.id.clone(),
                config,
            };
            show_dt(&call.ask(api::VERB_EVOLVE, &request).await?, json)
        }
        DtCommand::Execute { id } => {
            show_dt(&call.ask(api::VERB_EXECUTE, &IdRequest { id }).await?, json)
        }
        DtCommand::Save { id } => {
            show_dt(&call.ask(api::VERB_SAVE, &IdRequest { id }).await?, json)
        }
        DtCommand::Terminate { id } => show_dt(
            &call.ask(api::VERB_TERMINATE, &IdRequest { id }).await?,
            json,
        ),
        DtCommand::Analyze { id } => show_scripts(
            &call.ask(api::VERB_ANALYZE, &IdRequest { id }).await?,
            "analyze",
            json,
        ),
        DtCommand::Clean { id } => show_scripts(
            &call.ask(api::VERB_CLEAN, &IdRequest { id }).await?,
            "clean",
            json,
        ),
        DtCommand::Delete { id } => {
            let reply: DeleteReply = call.ask(api::VERB_DELETE, &IdRequest { id }).await?;
            if json {
                return print_json(&reply);
            }
            for dt in &reply.deleted {
                println!(
                    "deleted DT {} (was {}, {} snapshot object(s) removed)",
                    dt.id,
                    dt.state.as_str(),
                    dt.snapshot_objects
                );
            }
            Ok(())
        }
        DtCommand::Restore { id, snapshot } => {
            let request = RestoreRequest { id, snapshot };
            show_dt(&call.ask(api::VERB_RESTORE, &request).await?, json)
        }
        DtCommand::Fork {
            id,
            fork,
            params,
            replay_from,
            replay_to,
            speed,
        } => {
            let mut request = ForkRequest {
                id,
                fork,
                params: Default::default(),
                replay: replay_from.map(|from| ReplayWindow {
                    from,
                    to: replay_to,
                    speed,
                }),
            };
            for (role, name, value) in params {
                request.params.entry(role).or_default().insert(name, value);
            }
            show_dt(&call.ask(api::VERB_FORK, &request).await?, json)
        }
        DtCommand::Replay { id } => {
            show_dt(&call.ask(api::VERB_REPLAY, &IdRequest { id }).await?, json)
        }
        DtCommand::Get { id } => show_dt(&call.ask(api::VERB_GET, &IdRequest { id }).await?, json),
        DtCommand::List => {
            let reply: ListReply = call.ask(api::VERB_LIST, &ListRequest {}).await?;
            if json {
                return print_json(&reply);
            }
            println!(
                "{:<24} {:<11} {:>7} {:>9}  {:<24} FORK OF",
                "ID", "STATE", "VERSION", "PROCESSES", "PARENT"
            );
            for dt in reply.dts {
                println!(
                    "{:<24} {:<11} {:>7} {:>9}  {:<24} {}",
                    dt.id,
                    dt.state.as_str(),
                    dt.config_version,
                    dt.processes,
                    dt.parent.as_deref().unwrap_or("-"),
                    dt.fork_of.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        DtCommand::Logs { id, lines, follow } => {
            // Subscribe first, so no line falls between the history and the follow.
            let mut live = if follow {
                Some(client.subscribe(subject::dt_log_all(&id)?).await?)
            } else {
                None
            };
            let request = LogsRequest {
                id: id.clone(),
                lines,
            };
            let reply: LogsReply = call.ask(api::VERB_LOGS, &request).await?;
            let last_at = reply.lines.last().map_or(0, |l| l.at);
            for line in &reply.lines {
                show_line(line, json)?;
            }
            let Some(live) = live.as_mut() else {
                return Ok(());
            };
            let shutdown = dtaas_runtime::shutdown::on_signals();
            loop {
                let message = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    message = live.next() => message,
                };
                let Some(message) = message else {
                    return Ok(());
                };
                if let Ok(line) = dtaas_schemas::codec::decode::<LogLine>(None, &message.payload) {
                    if line.at > last_at {
                        show_line(&line, json)?;
                    }
                }
            }
        }
    }
}

/// `role.param=value`: the value as JSON (`5`, `true`, `"x"`), else as text.
fn param_override(text: &str) -> anyhow::Result<(String, String, serde_json::Value)> {
    let shape = || anyhow::anyhow!("{text:?} is not role.param=value (e.g. doubler.factor=5)");
    let (path, value) = text.split_once('=').ok_or_else(shape)?;
    let (role, name) = path.split_once('.').ok_or_else(shape)?;
    if role.is_empty() || name.is_empty() {
        return Err(shape());
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| value.into());
    Ok((role.to_owned(), name.to_owned(), value))
}

fn duration(text: &str) -> anyhow::Result<Duration> {
    let ns = dtaas_schemas::time::parse_duration_ns(text)?;
    Ok(Duration::from_nanos(ns.max(0) as u64))
}

/// One request to the lifecycle service as the configured user.
struct Call<'a> {
    client: &'a async_nats::Client,
    user: &'a str,
    timeout: Duration,
}

impl Call<'_> {
    async fn ask<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        verb: &str,
        request: &Req,
    ) -> anyhow::Result<Resp> {
        let subject = subject::request(self.user, api::SERVICE, verb)?;
        let body = serde_json::to_vec(request)?;
        let reply = tokio::time::timeout(
            self.timeout,
            self.client.request(subject.clone(), body.into()),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no reply on {subject} within {:?}; is `dtaas lifecycle` (or `dtaas up`) running?",
                self.timeout
            )
        })?
        .with_context(|| format!("request on {subject} failed; is `dtaas lifecycle` running?"))?;
        crate::reply::decode(&reply.payload)
    }
}

/// A configuration from a YAML (`.yaml`, `.yml`), TOML (`.toml`) or JSON file.
pub fn read_config(path: &Path) -> anyhow::Result<DtConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration {}", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let parsed = match ext {
        "toml" => toml::from_str(&text).map_err(anyhow::Error::from),
        "json" => serde_json::from_str(&text).map_err(anyhow::Error::from),
        _ => serde_yaml::from_str(&text).map_err(anyhow::Error::from),
    };
    parsed.with_context(|| format!("{} is not a valid DT configuration", path.display()))
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn show_line(line: &LogLine, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(line)?);
    } else {
        println!("{} {}", line.role, line.line);
    }
    Ok(())
}

/// What `analyze` or `clean` ran for each DT of the tree, after the DT itself.
fn show_scripts(reply: &ScriptsReply, phase: &str, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(reply);
    }
    let exports = reply.dt.config.external.export_subjects(&reply.dt.id);
    show_state(&reply.dt, &exports);
    for ran in &reply.ran {
        if ran.scripts.is_empty() {
            println!("  {phase} of {}: no {phase} script, skipped", ran.id);
        } else {
            println!("  {phase} of {}: ran {}", ran.id, ran.scripts.join(", "));
        }
    }
    Ok(())
}

fn show_dt(reply: &DtReply, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(reply);
    }
    show_state(&reply.dt, &reply.exports);
    for line in &reply.logs {
        println!("  | {} {}", line.role, line.line);
    }
    Ok(())
}

/// `replays 2026-…Z … 2026-…Z at 2x: 50 of 50 records, done (ready: doubler answered)`.
fn replay_line(replay: &Replay) -> String {
    use dtaas_schemas::time::format_rfc3339;
    let pace = replay
        .speed
        .map_or("as fast as possible".to_owned(), |s| format!("at {s}x"));
    let range = format!(
        "replays {} … {} {pace}",
        format_rfc3339(replay.from),
        format_rfc3339(replay.to)
    );
    match &replay.progress {
        None => format!("{range}: not run yet (execute replays it)"),
        // Nothing is read or sent before every process is ready for records.
        Some(p) if p.ready.is_empty() && p.replayed == 0 && !p.done && p.error.is_none() => {
            format!(
                "{range}: waiting for the fork's processes to be ready (ctl.ready, or \
             replay_delay after replay_ready_timeout for processes that do not answer)"
            )
        }
        Some(p) => {
            let state = match (&p.error, p.done) {
                (Some(why), _) => format!("stopped: {why}"),
                (None, true) => "done".to_owned(),
                (None, false) => "running".to_owned(),
            };
            let ready: Vec<String> = p
                .ready
                .iter()
                .map(|(role, how)| format!("{role} {}", how.as_str()))
                .collect();
            let ready = match ready.is_empty() {
                true => String::new(),
                false => format!(" (ready: {})", ready.join(", ")),
            };
            format!(
                "{range}: {} of {} records, {state}{ready}",
                p.replayed, p.total
            )
        }
    }
}

/// A DT's registry entry and its exports (as subjects) for people.
fn show_state(dt: &DtState, exports: &[String]) {
    println!(
        "DT {} of {}: {} (configuration v{})",
        dt.id,
        dt.owner,
        dt.state.as_str(),
        dt.config_version
    );
    if let Some(reason) = &dt.reason {
        println!("  reason: {reason}");
    }
    if let Some(parent) = &dt.parent {
        println!("  parent: {parent}");
    }
    if let Some(source) = &dt.fork_of {
        println!("  fork of {source}");
    }
    if let Some(replay) = &dt.replay {
        println!("  {}", replay_line(replay));
    }
    let children: Vec<&str> = dt.config.children.iter().map(|c| c.id.as_str()).collect();
    if !children.is_empty() {
        println!("  children: {}", children.join(", "));
    }
    for (use_, resolved) in dt.config.assets.iter().zip(&dt.resolved_assets) {
        println!("  asset {}: {resolved}", use_.name);
    }
    for export in exports {
        println!("  exports {export}");
    }
    for dashboard in &dt.config.external.dashboards {
        println!("  dashboard {dashboard}");
    }
    if !dt.processes.is_empty() {
        println!(
            "  {:<16} {:<12} {:>8} {:<10} {:>8}",
            "ROLE", "NODE", "PID", "STATUS", "RESTARTS"
        );
        for p in &dt.processes {
            let pid = p.pid.map_or("-".to_owned(), |p| p.to_string());
            println!(
                "  {:<16} {:<12} {:>8} {:<10} {:>8}",
                p.role, p.node, pid, p.status, p.restarts
            );
        }
    }
    for s in &dt.snapshots {
        println!("  {}", snapshot_line(s));
    }
}

/// One snapshot for people: its name, configuration and whose state it holds.
fn snapshot_line(s: &api::SnapshotInfo) -> String {
    let states = if s.roles.is_empty() {
        "no process answered with a state".to_owned()
    } else {
        format!("state of: {}", s.roles.join(", "))
    };
    format!(
        "snapshot {} (configuration v{}, {states})",
        s.name, s.config_version
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_without_states_says_so() {
        let mut s = api::SnapshotInfo {
            name: "s-1".into(),
            at: 1,
            config_version: 2,
            roles: vec![],
        };
        assert_eq!(
            snapshot_line(&s),
            "snapshot s-1 (configuration v2, no process answered with a state)"
        );
        s.roles = vec!["counter".into(), "doubler".into()];
        assert_eq!(
            snapshot_line(&s),
            "snapshot s-1 (configuration v2, state of: counter, doubler)"
        );
    }

    #[test]
    fn a_replay_waiting_for_its_processes_says_so() {
        let mut replay: Replay = serde_json::from_value(serde_json::json!({
            "from": 0, "to": 1_000_000_000,
            "progress": {"started_at": 5, "replayed": 0, "total": 0, "done": false},
        }))
        .unwrap();
        let line = replay_line(&replay);
        assert!(line.contains("waiting for the fork's processes"), "{line}");
        let progress = replay.progress.as_mut().unwrap();
        progress
            .ready
            .insert("doubler".into(), dtaas_schemas::fork::Readiness::Answered);
        progress.total = 50;
        progress.replayed = 20;
        let line = replay_line(&replay);
        assert!(
            line.ends_with("20 of 50 records, running (ready: doubler answered)"),
            "{line}"
        );
    }
}
