//! Quotas, checked before anything of a DT starts: how many DTs a user may execute at
//! once, and how many CPU seconds their processes may use in 24 hours (asked from
//! exec's accounting, `usage.get`).

use dtaas_schemas::dt_config::DtState;
use dtaas_schemas::lifecycle::LifecycleState;

use crate::core::{flatten, Core};
use crate::error::{Error, Result};
use crate::peers;

impl Core {
    /// Refuses with `forbidden` when executing `dt` (and its children not executing
    /// yet) would exceed `user`'s quota.
    pub async fn check_quota(&self, user: &str, dt: &DtState) -> Result<()> {
        let quota = self.config.quota_of(user);
        if let Some(max) = quota.max_executing_dts {
            let all = self.registry.all().await?;
            let executing = all
                .iter()
                .filter(|d| d.owner == user && d.state == LifecycleState::Executing)
                .count();
            let mut tree = Vec::new();
            flatten(&dt.config, None, &mut tree);
            let starting = tree
                .iter()
                .filter(|(c, _)| {
                    !all.iter()
                        .any(|d| d.id == c.id && d.state == LifecycleState::Executing)
                })
                .count();
            if executing + starting > max as usize {
                return Err(Error::Forbidden(format!(
                    "quota: user {user} may execute at most {max} DTs at once; {executing} \
                     execute now and DT {} would start {starting} more. Terminate one first \
                     (`dtaas dt list`)",
                    dt.id
                )));
            }
        }
        if let Some(limit) = quota.cpu_seconds_per_day {
            let usage = peers::usage_today(&self.nats, user, self.config.request_timeout)
                .await
                .map_err(|e| {
                    Error::Unavailable(format!(
                        "cannot check the CPU quota of {user} (accounting did not answer: {e})"
                    ))
                })?;
            if usage.total.cpu_seconds >= limit {
                return Err(Error::Forbidden(format!(
                    "quota: user {user} used {:.1} CPU seconds in the last 24 hours, the limit \
                     is {limit}; `dtaas usage` shows where they went",
                    usage.total.cpu_seconds
                )));
            }
        }
        Ok(())
    }
}
