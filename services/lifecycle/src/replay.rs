//! Feeding a what-if fork recorded telemetry. When a fork with a replay window
//! executes (or `dt.replay` asks again), lifecycle waits until every process of the
//! fork runs and is ready for records (it answered `ctl.ready`, or `replay_delay`
//! passed for one that does not answer; `ready.rs`), counts the records the
//! historian holds for each (PT, measurement) the fork reads from its replay
//! subjects, then reads them page by page (`ts.query`, `replay_page`
//! points per field) and publishes them, merged in timestamp order with their
//! original timestamps, on `dtaas.v1.dt.<fork>.replay.<pt>.<measurement>` (core NATS,
//! MessagePack) — as fast as possible, or paced by `speed`.
//!
//! Progress is written to the fork's registry entry about once a second
//! (`replay.progress`: replayed / total, done, error, how each role was ready); the end is a `replayed` event
//! whose `detail` says how many records went out, or why the run stopped early (the
//! DT stopped executing, the historian failed). A run is named by when it started; a
//! newer run (`dt.replay`, executing again) makes an older one stop. Runs live in the
//! worker that started them: when that worker dies the run ends where it was (the
//! entry keeps its last progress, not `done`), and `dt.replay` replays from the start.

mod page;
mod ready;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use dtaas_schemas::codec::Encoding;
use dtaas_schemas::dt_config::{DtConfig, DtState};
use dtaas_schemas::fork::{Replay, ReplayProgress};
use dtaas_schemas::lifecycle::LifecycleState;
use dtaas_schemas::names::header;
use dtaas_schemas::time::{format_rfc3339, now_ns};
use dtaas_schemas::timeseries::{self, TsQueryReply, TsQueryRequest};
use dtaas_schemas::{subject, TelemetryRecord};
use tokio::time::Instant;

use crate::core::Core;
use crate::error::{Error, Result};
use crate::{events, peers};

/// How often a run writes its progress and looks whether it should stop.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// The (PT, measurement) pairs DT `config`'s own uses read from its replay subjects.
pub fn sources(config: &DtConfig) -> BTreeSet<(String, String)> {
    config
        .assets
        .iter()
        .flat_map(|u| u.inputs.values())
        .filter_map(|source| subject::parse_dt_replay(source).ok())
        .filter(|(dt, _, _)| *dt == config.id)
        .map(|(_, pt, measurement)| (pt.to_owned(), measurement.to_owned()))
        .collect()
}

impl Core {
    /// `dt.replay`: replays an executing fork's window again, from its start; a run
    /// in progress stops.
    pub async fn replay(&self, user: &str, id: &str) -> Result<DtState> {
        let dt = self.registry.get_owned(user, id).await?.dt;
        if dt.replay.is_none() {
            return Err(Error::BadRequest(format!(
                "DT {id} is not fed by recorded data; `dt.fork` with `replay` makes a DT that is"
            )));
        }
        if dt.state != LifecycleState::Executing {
            return Err(Error::Conflict(format!(
                "DT {id} is {}; execute it (which replays its window)",
                dt.state.as_str()
            )));
        }
        self.start_replay(&dt).await?;
        Ok(self.registry.get_owned(user, id).await?.dt)
    }

    /// Starts a run of `dt`'s replay in the background, when it has a replay window.
    pub(crate) async fn start_replay(&self, dt: &DtState) -> Result<()> {
        let Some(replay) = dt.replay.clone() else {
            return Ok(());
        };
        let run = now_ns();
        self.registry
            .modify(&dt.id, |d| {
                if let Some(r) = d.replay.as_mut() {
                    r.progress = Some(ReplayProgress {
                        started_at: run,
                        replayed: 0,
                        total: 0,
                        done: false,
                        error: None,
                        ready: BTreeMap::new(),
                    });
                }
                Ok(())
            })
            .await?;
        let job = Run {
            core: self.clone(),
            owner: dt.owner.clone(),
            id: dt.id.clone(),
            started_at: run,
            replay,
            sources: sources(&dt.config),
        };
        tokio::spawn(job.run());
        Ok(())
    }
}

/// Why a run stopped before it replayed everything.
enum Stop {
    /// A newer run replaced it, or the DT is gone: nothing to record.
    Superseded,
    /// The DT is no longer executing.
    NotExecuting(LifecycleState),
    Failed(String),
}

/// One run of a fork's replay.
struct Run {
    core: Core,
    owner: String,
    id: String,
    /// Names the run in `replay.progress`.
    started_at: i64,
    replay: Replay,
    sources: BTreeSet<(String, String)>,
}

/// The records of one (PT, measurement) still to publish.
struct Source {
    pt: String,
    measurement: String,
    /// The fork's replay subject of this pair.
    subject: String,
    buffered: VecDeque<TelemetryRecord>,
    /// Where the next page starts; `None` once the range is read.
    next_from: Option<i64>,
}

impl Run {
    async fn run(self) {
        let mut progress = ReplayProgress {
            started_at: self.started_at,
            replayed: 0,
            total: 0,
            done: false,
            error: None,
            ready: BTreeMap::new(),
        };
        let outcome = self.publish_all(&mut progress).await;
        progress.done = true;
        let stopped = |why: String| {
            format!(
                "the replay stopped after {} of {} record(s): {why}",
                progress.replayed, progress.total
            )
        };
        let (detail, early) = match outcome {
            Ok(()) => (
                format!(
                    "replayed {} of {} recorded record(s) of {} from {} to {}",
                    progress.replayed,
                    progress.total,
                    self.pairs(),
                    format_rfc3339(self.replay.from),
                    format_rfc3339(self.replay.to)
                ),
                false,
            ),
            Err(Stop::Superseded) => return,
            Err(Stop::NotExecuting(state)) => (
                stopped(format!("DT {} is {}", self.id, state.as_str())),
                true,
            ),
            Err(Stop::Failed(why)) => (stopped(why), true),
        };
        if early {
            progress.error = Some(detail.clone());
        }
        match self.save(&progress).await {
            Ok(()) | Err(Stop::NotExecuting(_)) => {}
            Err(_) => return,
        }
        if let Err(e) = self.announce(detail).await {
            tracing::warn!(dt = %self.id, error = %e, "Cannot publish the end of a replay.");
        }
    }

    /// `pt9/val, pt9/temp`: what the fork is fed.
    fn pairs(&self) -> String {
        let pairs: Vec<String> = self
            .sources
            .iter()
            .map(|(pt, m)| format!("{pt}/{m}"))
            .collect();
        pairs.join(", ")
    }

    async fn publish_all(&self, progress: &mut ReplayProgress) -> Result<(), Stop> {
        progress.ready = self.wait_until_ready().await?;
        for (pt, measurement) in &self.sources {
            progress.total += self.count(pt, measurement).await?;
        }
        self.save(progress).await?;
        let mut sources = Vec::with_capacity(self.sources.len());
        for (pt, measurement) in &self.sources {
            sources.push(Source {
                subject: subject::dt_replay(&self.id, pt, measurement)
                    .map_err(|e| Stop::Failed(e.to_string()))?,
                pt: pt.clone(),
                measurement: measurement.clone(),
                buffered: VecDeque::new(),
                next_from: Some(self.replay.from),
            });
        }
        // Pacing: record `ts` is due `(ts - first ts) / speed` after the first went out.
        let mut paced: Option<(Instant, i64)> = None;
        let mut saved_at = Instant::now();
        loop {
            for source in &mut sources {
                self.fill(source).await?;
            }
            let Some(next) = sources
                .iter_mut()
                .filter(|s| !s.buffered.is_empty())
                .min_by_key(|s| s.buffered[0].ts)
            else {
                break;
            };
            let record = next.buffered.pop_front().expect("a source with records");
            if let Some(speed) = self.replay.speed {
                let (start, first) = *paced.get_or_insert((Instant::now(), record.ts));
                let due = start + Duration::from_nanos(((record.ts - first) as f64 / speed) as u64);
                while Instant::now() < due {
                    tokio::time::sleep_until(due.min(Instant::now() + SAVE_EVERY)).await;
                    if saved_at.elapsed() >= SAVE_EVERY {
                        self.save(progress).await?;
                        saved_at = Instant::now();
                    }
                }
            }
            self.publish(&next.subject, &record).await?;
            progress.replayed += 1;
            if saved_at.elapsed() >= SAVE_EVERY {
                self.flush().await?;
                self.save(progress).await?;
                saved_at = Instant::now();
            }
        }
        self.flush().await
    }

    /// The fork's entry while this run is its current one and it executes.
    async fn current(&self) -> Result<DtState, Stop> {
        let dt = match self.core.registry.get(&self.id).await {
            Ok(Some(v)) => v.dt,
            Ok(None) => return Err(Stop::Superseded),
            Err(e) => return Err(Stop::Failed(e.to_string())),
        };
        let run = dt.replay.as_ref().and_then(|r| r.progress.as_ref());
        if run.map(|p| p.started_at) != Some(self.started_at) {
            return Err(Stop::Superseded);
        }
        if dt.state != LifecycleState::Executing {
            return Err(Stop::NotExecuting(dt.state));
        }
        Ok(dt)
    }

    /// Writes `progress` into the fork's entry, unless a newer run replaced this one;
    /// then says whether the run should stop.
    async fn save(&self, progress: &ReplayProgress) -> Result<(), Stop> {
        let mut superseded = false;
        let written = self
            .core
            .registry
            .modify(&self.id, |dt| {
                let replay = dt.replay.as_mut();
                let current = replay
                    .as_ref()
                    .and_then(|r| r.progress.as_ref())
                    .is_some_and(|p| p.started_at == self.started_at);
                superseded = !current;
                if superseded {
                    return Err(Error::Conflict("a newer replay runs".into()));
                }
                if let Some(r) = replay {
                    r.progress = Some(progress.clone());
                }
                Ok(())
            })
            .await;
        match written {
            _ if superseded => Err(Stop::Superseded),
            Err(Error::NotFound(_)) => Err(Stop::Superseded),
            Err(e) => Err(Stop::Failed(e.to_string())),
            Ok(v) if v.dt.state != LifecycleState::Executing => Err(Stop::NotExecuting(v.dt.state)),
            Ok(_) => Ok(()),
        }
    }

    /// The records the historian holds for `pt`/`measurement` in the window: the
    /// count of its fullest field.
    async fn count(&self, pt: &str, measurement: &str) -> Result<u64, Stop> {
        let request = TsQueryRequest {
            agg: Some("count".into()),
            ..self.request(pt, measurement, self.replay.from, None)
        };
        let reply = self
            .query(&request)
            .await
            .map_err(|e| self.unreadable(pt, measurement, e))?;
        let counts = reply.series.iter().flat_map(|s| s.points.first());
        Ok(counts.filter_map(|(_, v)| v.as_f64()).fold(0.0, f64::max) as u64)
    }

    /// Reads pages of `source` until it has a record or its range is read.
    async fn fill(&self, source: &mut Source) -> Result<(), Stop> {
        while source.buffered.is_empty() {
            let Some(from) = source.next_from else {
                return Ok(());
            };
            let mut limit = self.core.config.replay_page;
            let reply = loop {
                let request = self.request(&source.pt, &source.measurement, from, Some(limit));
                match self.query(&request).await {
                    Ok(reply) => break reply,
                    // Wide records: a page of `limit` points per field is too big to send.
                    Err(Error::BadRequest(m)) if limit > 1 && m.contains("max payload") => {
                        limit = (limit / 4).max(1)
                    }
                    Err(e) => return Err(self.unreadable(&source.pt, &source.measurement, e)),
                }
            };
            let page = page::assemble(
                &source.pt,
                &source.measurement,
                reply,
                limit,
                self.replay.to,
            );
            source.next_from = page.next_from;
            source.buffered.extend(page.records);
        }
        Ok(())
    }

    fn request(
        &self,
        pt: &str,
        measurement: &str,
        from: i64,
        limit: Option<usize>,
    ) -> TsQueryRequest {
        TsQueryRequest {
            pt: pt.to_owned(),
            measurement: measurement.to_owned(),
            from: Some(format_rfc3339(from)),
            to: Some(format_rfc3339(self.replay.to)),
            limit,
            ..Default::default()
        }
    }

    fn unreadable(&self, pt: &str, measurement: &str, e: Error) -> Stop {
        Stop::Failed(format!(
            "cannot read the records of {pt}/{measurement} from the historian: {e}"
        ))
    }

    /// `ts.query` as the fork's owner.
    async fn query(&self, request: &TsQueryRequest) -> Result<TsQueryReply> {
        let subject = subject::request(&self.owner, timeseries::SERVICE, timeseries::VERB_QUERY)?;
        peers::ask(
            &self.core.nats,
            subject,
            request,
            self.core.config.request_timeout,
            "the historian (dtaas historian, ts.query)",
        )
        .await
    }

    async fn publish(&self, subject: &str, record: &TelemetryRecord) -> Result<(), Stop> {
        let body = Encoding::MsgPack
            .encode(record)
            .map_err(|e| Stop::Failed(format!("cannot encode a record: {e}")))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, Encoding::MsgPack.content_type());
        self.core
            .nats
            .publish_with_headers(subject.to_owned(), headers, body)
            .await
            .map_err(|e| Stop::Failed(format!("cannot publish on {subject}: {e}")))
    }

    async fn flush(&self) -> Result<(), Stop> {
        self.core
            .nats
            .flush()
            .await
            .map_err(|e| Stop::Failed(format!("cannot flush the replayed records: {e}")))
    }

    /// The `replayed` event (with `detail`), then back to the state the fork is in.
    async fn announce(&self, detail: String) -> Result<()> {
        let Some(dt) = self.core.registry.get(&self.id).await? else {
            return Ok(());
        };
        let dt = dt.dt;
        let mut from = Some(dt.state);
        for to in [LifecycleState::Replayed, dt.state] {
            let mut event = events::event(&dt, from, to, &self.owner);
            event.detail = Some(detail.clone());
            self.core.publish(&dt, &event).await?;
            from = Some(to);
        }
        Ok(())
    }
}
