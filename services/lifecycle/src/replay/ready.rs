//! Whether a fork's processes are ready for its replay. Records published before a
//! process subscribed to its inputs are lost (core NATS), so a run asks on
//! `dtaas.v1.dt.<fork>.ctl.ready` — one request, answered by every process that has
//! subscribed, each with its role in the `Dtaas-Role` header — and asks again every
//! `ASK_EVERY` (a process may subscribe after the first ask) until every running role
//! answered or `replay_ready_timeout` passed. A role that never answered (a process
//! written before the ready request) is taken to be ready `replay_delay` after it ran.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use dtaas_schemas::fork::Readiness;
use dtaas_schemas::subject;
use futures::StreamExt;
use tokio::time::Instant;

use super::{Run, Stop};
use crate::core::ENDED;
use crate::snapshots::answering_role;

/// How often a run asks again while a role has not answered.
const ASK_EVERY: Duration = Duration::from_millis(200);

/// How long a run waits for the fork's processes to be started before it goes on.
const START_WAIT: Duration = Duration::from_secs(30);

impl Run {
    /// Waits until every running process of the fork is ready for records; answers
    /// how each role was found ready.
    pub(super) async fn wait_until_ready(&self) -> Result<BTreeMap<String, Readiness>, Stop> {
        self.wait_for_processes().await?;
        let ran_at = Instant::now();
        let roles: BTreeSet<String> = self
            .current()
            .await?
            .processes
            .iter()
            .filter(|p| !ENDED.contains(&p.status.as_str()))
            .map(|p| p.role.clone())
            .collect();
        let answered = self.ask_ready(&roles).await?;
        let ready: BTreeMap<String, Readiness> = roles
            .iter()
            .map(|role| match answered.contains(role) {
                true => (role.clone(), Readiness::Answered),
                false => (role.clone(), Readiness::ByDelay),
            })
            .collect();
        let by_delay: Vec<&String> = roles.difference(&answered).collect();
        if by_delay.is_empty() {
            tracing::info!(dt = %self.id, answered = ?answered, "Every process of the fork answered ready; the replay starts.");
        } else {
            let delay = self.core.config.replay_delay;
            tracing::info!(dt = %self.id, answered = ?answered, by_delay = ?by_delay, ?delay,
                "Not every process of the fork answered ready; the replay starts the delay after they ran.");
            tokio::time::sleep_until(ran_at + delay).await;
        }
        Ok(ready)
    }

    /// Waits until no process of the fork is `starting` (each was started by its
    /// node), at most `START_WAIT`.
    async fn wait_for_processes(&self) -> Result<(), Stop> {
        let deadline = Instant::now() + START_WAIT;
        loop {
            let dt = self.current().await?;
            let starting = dt.processes.iter().any(|p| p.status == "starting");
            if !starting || Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The roles of `roles` that answered the ready request within
    /// `replay_ready_timeout`.
    async fn ask_ready(&self, roles: &BTreeSet<String>) -> Result<BTreeSet<String>, Stop> {
        let mut answered = BTreeSet::new();
        if roles.is_empty() {
            return Ok(answered);
        }
        let nats = &self.core.nats;
        let ready =
            subject::dt_control(&self.id, "ready").map_err(|e| Stop::Failed(e.to_string()))?;
        let unavailable = |e: &dyn std::fmt::Display| {
            Stop::Failed(format!(
                "cannot ask the processes whether they are ready: {e}"
            ))
        };
        let inbox = nats.new_inbox();
        let mut replies = nats
            .subscribe(inbox.clone())
            .await
            .map_err(|e| unavailable(&e))?;
        let running: Vec<&str> = roles.iter().map(String::as_str).collect();
        let deadline = Instant::now() + self.core.config.replay_ready_timeout;
        loop {
            // Stops asking when a newer run replaced this one or the fork stopped.
            self.current().await?;
            nats.publish_with_reply(ready.clone(), inbox.clone(), Bytes::from_static(b"{}"))
                .await
                .map_err(|e| unavailable(&e))?;
            let ask_again = (Instant::now() + ASK_EVERY).min(deadline);
            while answered.len() < roles.len() {
                let Ok(Some(reply)) = tokio::time::timeout_at(ask_again, replies.next()).await
                else {
                    break;
                };
                // The server's "no responders": no process listens yet.
                if reply
                    .status
                    .is_some_and(|s| s == async_nats::StatusCode::NO_RESPONDERS)
                {
                    continue;
                }
                match answering_role(&reply, &running) {
                    Some(role) => {
                        answered.insert(role);
                    }
                    None => {
                        tracing::warn!(dt = %self.id, "A ready reply without a known Dtaas-Role header was ignored.")
                    }
                }
            }
            if answered.len() == roles.len() || Instant::now() >= deadline {
                return Ok(answered);
            }
        }
    }
}
