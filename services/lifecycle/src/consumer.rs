//! Following the processes: process events from exec (`dtaas.v1.evt.proc.<dt>.*` on
//! `DTAAS_EVT`) update the registry, and a DT whose processes all ended becomes
//! `completed` or `failed`. The worker kit's consumer (`dtaas_runtime::consumer`) runs
//! the durable; this file says how an event is taken.
//!
//! - A new durable starts at the next event published: a new lifecycle deployment does
//!   not replay the history of process events. An existing one goes on where it was.
//! - One event at a time, in order (a batch holds one event), acknowledged only after
//!   the registry took it, so a lifecycle worker that dies misses none, and the events
//!   of one DT are taken in the order exec published them.
//! - A registry (or `DTAAS_EVT`) that is down keeps the event unacknowledged, retried
//!   with capped backoff; on shutdown JetStream delivers it again later. A transition
//!   already recorded is not recorded twice: only its event is published again.
//! - An event of a DT that no longer exists, or of a process that is not the DT's
//!   current one, changes nothing and is acknowledged.
//! - An event that cannot be decoded, or that the registry refuses for good, goes to
//!   `dtaas.v1.dlq.lifecycle` with the reason, then is acknowledged.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::Message;
use dtaas_runtime::consumer::{
    self, AckPolicy, ConsumerConfig, DeliverPolicy, Handler, Invalid, WriteError,
};
use dtaas_schemas::codec::decode;
use dtaas_schemas::dt_config::DtState;
use dtaas_schemas::exec::{self, ProcessEvent, ProcessEventKind};
use dtaas_schemas::lifecycle::LifecycleEvent;
use dtaas_schemas::names::STREAM_EVENTS;
use dtaas_schemas::{subject, SubjectError};

use crate::config::LifecycleConfig;
use crate::core::{settle, Core, ENDED};
use crate::error::Error;
use crate::events;

/// The lifecycle worker's process-event consumer.
pub type Consumer = consumer::Consumer<ProcessEvents>;

/// Builds the consumer of process events for `core`.
pub fn new(core: Core) -> Result<Consumer, SubjectError> {
    Ok(consumer::Consumer::new(
        consumer_config(&core.config)?,
        ProcessEvents { core },
    ))
}

/// The durable on `DTAAS_EVT` the configuration names.
pub fn consumer_config(config: &LifecycleConfig) -> Result<ConsumerConfig, SubjectError> {
    Ok(ConsumerConfig {
        stream: STREAM_EVENTS.into(),
        durable: config.durable.clone(),
        description: "dtaas lifecycle worker: process events".into(),
        filter_subject: Some(subject::event_kind_all(exec::EVENT_KIND)?),
        deliver_policy: DeliverPolicy::New,
        // Any number of lifecycle workers share the durable.
        ack_policy: AckPolicy::Explicit,
        ack_policy_setting: "the lifecycle worker's ack policy (always explicit)".into(),
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 1000,
        // One event at a time: each is acknowledged once taken, before the next one.
        batch_size: 1,
        max_delay: Duration::ZERO,
        dlq_source: crate::WORKER.into(),
    })
}

/// Takes process events into the registry.
pub struct ProcessEvents {
    core: Core,
}

/// The events of one batch not yet taken, oldest first.
#[derive(Default)]
pub struct Events {
    waiting: VecDeque<ProcessEvent>,
    /// The transition the first waiting event caused, recorded in the registry but not
    /// yet published: a retry publishes only this.
    unannounced: Option<(DtState, LifecycleEvent)>,
}

impl Handler for ProcessEvents {
    type Batch = Events;
    const STORE: &'static str = "DT registry";

    fn decode(&self, message: &Message, batch: &mut Events) -> Result<usize, Invalid> {
        let event = decode::<ProcessEvent>(None, &message.payload)
            .map_err(|e| Invalid(format!("cannot decode process event: {e}")))?;
        batch.waiting.push_back(event);
        Ok(1)
    }

    async fn write(&self, batch: &mut Events) -> Result<(), WriteError> {
        while let Some(event) = batch.waiting.front() {
            if batch.unannounced.is_none() {
                batch.unannounced = match record(&self.core, event).await {
                    Ok(settled) => settled,
                    // A DT deleted since, or a process that is not the current one.
                    Err(Error::NotFound(_)) => None,
                    Err(error) => return Err(write_error(error)),
                };
            }
            if let Some((dt, transition)) = &batch.unannounced {
                self.core
                    .publish(dt, transition)
                    .await
                    .map_err(write_error)?;
            }
            batch.unannounced = None;
            batch.waiting.pop_front();
        }
        Ok(())
    }
}

/// Unavailable is retried; anything else would fail again, so the event is
/// dead-lettered with the reason.
fn write_error(error: Error) -> WriteError {
    match error {
        Error::Unavailable(reason) => WriteError::Unavailable(reason),
        other => WriteError::Rejected(other.to_string()),
    }
}

/// Records `event` on its process; when that settled the DT, answers the DT and the
/// transition to publish. `NotFound` when the event matches no current process.
async fn record(
    core: &Core,
    event: &ProcessEvent,
) -> Result<Option<(DtState, LifecycleEvent)>, Error> {
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
    Ok(settled.map(|to| {
        let mut transition = events::event(&v.dt, before, to, &v.dt.owner);
        transition.detail = v.dt.reason.clone();
        (v.dt, transition)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_durable_starts_at_new_events_and_takes_one_at_a_time() {
        let config = LifecycleConfig {
            durable: "lifecycle-blue".into(),
            ..LifecycleConfig::default()
        };
        let consumer = consumer_config(&config).unwrap();
        assert_eq!(consumer.durable, "lifecycle-blue");
        assert_eq!(consumer.deliver_policy, DeliverPolicy::New);
        assert_eq!(consumer.ack_policy, AckPolicy::Explicit);
        assert_eq!(consumer.batch_size, 1);
        assert_eq!(
            consumer.filter_subject.as_deref(),
            Some("dtaas.v1.evt.proc.>")
        );
        assert_eq!(consumer.dlq_source, "lifecycle");
    }

    #[test]
    fn only_an_unavailable_registry_is_retried() {
        assert!(matches!(
            write_error(Error::Unavailable("registry down".into())),
            WriteError::Unavailable(reason) if reason == "registry down"
        ));
        assert!(matches!(
            write_error(Error::BadRequest("bad DT id".into())),
            WriteError::Rejected(reason) if reason == "bad DT id"
        ));
    }
}
