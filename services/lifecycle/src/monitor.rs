//! Following the processes: process events from exec (`dtaas.v1.evt.proc.<dt>.*`,
//! durable consumer on `DTAAS_EVT`) update the registry, and a DT whose processes all
//! ended becomes `completed` or `failed`. An event is acknowledged only after the
//! registry took it, so a lifecycle worker that dies misses none.
//!
//! Nodes: every heartbeat interval the nodes in `dtaas-nodes` are read; the processes
//! of an executing DT on a node whose heartbeat is older than `NODE_STALE_AFTER_MS`
//! (or that left the registry) are started on other nodes, with an `executing` event
//! saying which moved where. So a node that dies loses its DTs within about
//! 10 s + 2 s + the time to start them elsewhere (docs/lifecycle.md promises 15 s).

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, Message};
use dtaas_runtime::backoff::Backoff;
use dtaas_runtime::consumer::ERRORS_BEFORE_REBIND;
use dtaas_runtime::dlq;
use dtaas_schemas::codec::decode;
use dtaas_schemas::exec::{self, ProcessEvent, ProcessEventKind, HEARTBEAT_INTERVAL_MS};
use dtaas_schemas::lifecycle::LifecycleState;
use dtaas_schemas::names::{header, STREAM_EVENTS};
use dtaas_schemas::subject;
use dtaas_schemas::time::now_ns;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::core::{settle, Core, ENDED};
use crate::error::Error;
use crate::{events, peers};

/// Runs the process-event consumer until shutdown; recreates it with backoff.
pub async fn follow_processes(core: Core, shutdown: CancellationToken) {
    let mut backoff = Backoff::new();
    while !shutdown.is_cancelled() {
        match consume(&core, &shutdown).await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(%error, attempt = backoff.attempt(), "Process event consumer failed; restarting it.");
                if !backoff.wait(&shutdown).await {
                    break;
                }
            }
        }
    }
}

async fn consume(core: &Core, shutdown: &CancellationToken) -> Result<(), Error> {
    fn unavailable<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Error {
        move |e| Error::unavailable(what, e)
    }
    let stream = core
        .js
        .get_stream(STREAM_EVENTS)
        .await
        .map_err(unavailable("stream DTAAS_EVT"))?;
    let durable = core.config.durable.clone();
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                description: Some("dtaas lifecycle worker: process events".into()),
                filter_subject: subject::event_kind_all(exec::EVENT_KIND)?,
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                deliver_policy: jetstream::consumer::DeliverPolicy::New,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 1000,
                ..Default::default()
            },
        )
        .await
        .map_err(unavailable("the process event consumer"))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(100)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(unavailable("the process event stream"))?;
    // Missed heartbeats come as errors while a JetStream leader moves; a few in a row
    // mean the consumer is gone or elsewhere, so it is bound again (as the kit's).
    let mut errors_in_a_row = 0;
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        match next {
            Some(Ok(message)) => {
                errors_in_a_row = 0;
                apply(core, message).await;
            }
            Some(Err(error)) => {
                errors_in_a_row += 1;
                if errors_in_a_row >= ERRORS_BEFORE_REBIND {
                    return Err(Error::unavailable("the process event stream", error));
                }
                tracing::warn!(%error, "Error on the process event stream.");
            }
            None => return Err(Error::Unavailable("the process event stream ended".into())),
        }
    }
}

/// Takes one event into the registry, then acknowledges it. A registry that is down
/// leaves it unacknowledged (JetStream delivers it again).
async fn apply(core: &Core, message: Message) {
    let event = match decode::<ProcessEvent>(None, &message.payload) {
        Ok(event) => event,
        Err(e) => {
            dead_letter(core, &message, &e.to_string()).await;
            return;
        }
    };
    match take(core, &event).await {
        Ok(()) | Err(Error::NotFound(_)) => {
            let _ = message.ack().await;
        }
        Err(e) => {
            tracing::warn!(dt = %event.dt, error = %e, "Cannot record a process event; it comes again.");
        }
    }
}

/// Sends an unreadable event to the DLQ with its reason, then acknowledges it; a DLQ
/// that cannot take it leaves it unacknowledged (JetStream delivers it again).
async fn dead_letter(core: &Core, message: &Message, reason: &str) {
    let context = [(header::DLQ_SUBJECT, message.subject.as_str())];
    let published = dlq::publish(
        &core.js,
        crate::WORKER,
        message.payload.clone(),
        reason,
        &context,
    );
    match published.await {
        Ok(()) => {
            tracing::warn!(subject = %message.subject, %reason, "Sent an unreadable process event to the DLQ.");
            let _ = message.ack().await;
        }
        Err(error) => {
            tracing::warn!(subject = %message.subject, %error, "Cannot dead-letter an unreadable process event; it comes again.");
        }
    }
}

async fn take(core: &Core, event: &ProcessEvent) -> Result<(), Error> {
    let mut settled = None;
    let mut before = None;
    let status = match event.status {
        ProcessEventKind::Started | ProcessEventKind::Restarted => "running",
        other => other.as_str(),
    };
    let v = core
        .registry
        .modify(&event.dt, |dt| {
            before = Some(dt.state);
            // Events of an earlier run (another node, or before a restart by lifecycle)
            // and of lifecycle scripts do not match a current process.
            let Some(p) = dt
                .processes
                .iter_mut()
                .find(|p| p.role == event.role && p.node == event.node)
            else {
                return Err(Error::NotFound(String::new()));
            };
            // The end of an older run (evolve or restore replaced it on this node).
            let ends = ENDED.contains(&status);
            if ends && p.pid.is_some_and(|pid| pid != event.pid) {
                return Err(Error::NotFound(String::new()));
            }
            p.pid = Some(event.pid);
            p.status = status.to_owned();
            p.restarts = event.restarts;
            p.exit_code = event.exit_code;
            settled = if dt.busy.is_none() { settle(dt) } else { None };
            Ok(())
        })
        .await?;
    if let Some(to) = settled {
        let mut e = events::event(&v.dt, before, to, &v.dt.owner);
        e.detail = v.dt.reason.clone();
        core.publish(&v.dt, &e).await?;
    }
    Ok(())
}

/// A round of `replace_lost` longer than this is logged.
const SLOW_ROUND: Duration = Duration::from_secs(30);

/// Every heartbeat interval, moves the processes of nodes that went silent.
pub async fn watch_nodes(core: Core, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Every step is a bounded request; a round that still takes long is said, so
        // a stuck check is never silent (it once was: `kv::Store::keys()` can hang).
        let round = replace_lost(&core);
        tokio::pin!(round);
        let result = match tokio::time::timeout(SLOW_ROUND, &mut round).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(after = ?SLOW_ROUND, "The check for lost exec nodes is slow; still waiting for it.");
                round.await
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "Cannot check for lost exec nodes.");
        }
    }
}

async fn replace_lost(core: &Core) -> Result<(), Error> {
    let nodes = peers::nodes(&core.js).await?;
    let now = now_ns();
    let live: HashSet<&str> = nodes
        .iter()
        .filter(|n| !n.is_stale(now))
        .map(|n| n.id.as_str())
        .collect();
    let lost = |node: &str| !live.contains(node);
    for dt in core.registry.all().await? {
        let moving: Vec<_> = dt
            .processes
            .iter()
            .filter(|p| lost(&p.node) && !ENDED.contains(&p.status.as_str()))
            .cloned()
            .collect();
        if dt.state != LifecycleState::Executing || dt.busy.is_some() || moving.is_empty() {
            continue;
        }
        let claim = core
            .registry
            .claim(&dt.id, "re-place", core.lease_ns(), |d| match d.state {
                LifecycleState::Executing => Ok(()),
                _ => Err(Error::Conflict(String::new())),
            })
            .await;
        let claimed = match claim {
            Ok(claimed) => claimed,
            // Busy or changed under us: the next tick tries again. Said, so that a DT
            // whose processes never move shows why.
            Err(error) => {
                tracing::info!(dt = %dt.id, %error, "Cannot claim the DT to re-place its processes yet.");
                continue;
            }
        };
        let avoid: Vec<String> = nodes
            .iter()
            .filter(|n| lost(&n.id))
            .map(|n| n.id.clone())
            .collect();
        let moved = async {
            let (planned, _) = core.plan(&claimed.dt).await?;
            let planned: Vec<_> = planned
                .into_iter()
                .filter(|p| moving.iter().any(|m| m.role == p.spec.role))
                .collect();
            core.start(&dt.id, planned, &avoid).await
        }
        .await;
        let detail = match &moved {
            Ok(processes) => moving
                .iter()
                .map(|m| {
                    let to = processes
                        .iter()
                        .find(|p| p.role == m.role)
                        .map_or("?", |p| p.node.as_str());
                    format!(
                        "role {} moved from node {} (no heartbeat) to node {to}",
                        m.role, m.node
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => format!("node lost and its processes could not move: {e}"),
        };
        tracing::warn!(dt = %dt.id, detail = %detail, "Re-placed the processes of a lost exec node.");
        let state = if moved.is_ok() {
            LifecycleState::Executing
        } else {
            LifecycleState::Failed
        };
        let user = dt.owner.clone();
        core.finish(&user, &dt.id, &[state], false, Some(detail.clone()), |d| {
            d.state = state;
            if state == LifecycleState::Failed {
                d.reason = Some(detail.clone());
            }
            Ok(())
        })
        .await?;
    }
    Ok(())
}
