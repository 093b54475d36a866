//! The `[lifecycle]` table of the configuration file and the worker's environment.

use std::collections::BTreeMap;
use std::time::Duration;

use dtaas_runtime::config::{duration, env_duration, env_override};
use dtaas_runtime::{Config, ConfigError};
use serde::Deserialize;

/// Per-user limits, checked before anything of a DT starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quota {
    /// How many DTs of one user may execute at once (children count too).
    pub max_executing_dts: Option<u32>,
    /// CPU seconds one user's processes may use in the last 24 hours (from exec's
    /// `usage.get`).
    pub cpu_seconds_per_day: Option<f64>,
}

/// The `[lifecycle]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// How long a request to an exec node or the asset library may take [default: 10s].
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// How long `save` waits for processes to answer with their state [default: 2s].
    #[serde(deserialize_with = "duration")]
    pub save_timeout: Duration,
    /// How long a DTaaS lifecycle script may run [default: 300s].
    #[serde(deserialize_with = "duration")]
    pub script_timeout: Duration,
    /// After this long an operation's hold on a DT counts as abandoned (its worker
    /// died) [default: 600s].
    #[serde(deserialize_with = "duration")]
    pub busy_lease: Duration,
    /// Durable consumer of process events on `DTAAS_EVT`; env `DTAAS_LIFECYCLE_DURABLE`.
    pub durable: String,
    /// Limits of every user; env `DTAAS_QUOTA_MAX_EXECUTING`, `DTAAS_QUOTA_CPU_SECONDS`.
    pub quota: Quota,
    /// Limits of named users, replacing `quota` for them (`[lifecycle.user_quota.alice]`).
    pub user_quota: BTreeMap<String, Quota>,
    /// Log lines `dt.get` shows.
    pub get_log_lines: usize,
    /// How often executing DTs' users are checked against their CPU quota (DTs of a
    /// user over it are terminated); env `DTAAS_QUOTA_CHECK_INTERVAL` [default: 15s].
    #[serde(deserialize_with = "duration")]
    pub quota_check_interval: Duration,
    /// How long a fork's replay waits after a process that does not answer the ready
    /// request (`ctl.ready`) ran, for it to subscribe; env `DTAAS_REPLAY_DELAY`
    /// [default: 2s].
    #[serde(deserialize_with = "duration")]
    pub replay_delay: Duration,
    /// How long a fork's replay asks its processes whether they are ready before it
    /// takes the ones that did not answer for processes without the ready request;
    /// env `DTAAS_REPLAY_READY_TIMEOUT` [default: 30s].
    #[serde(deserialize_with = "duration")]
    pub replay_ready_timeout: Duration,
    /// Points per field a replay reads from the historian in one `ts.query`; env
    /// `DTAAS_REPLAY_PAGE` [default: 5000].
    pub replay_page: usize,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            save_timeout: Duration::from_secs(2),
            script_timeout: Duration::from_secs(300),
            busy_lease: Duration::from_secs(600),
            durable: "lifecycle".into(),
            quota: Quota::default(),
            user_quota: BTreeMap::new(),
            get_log_lines: 20,
            quota_check_interval: Duration::from_secs(15),
            replay_delay: Duration::from_secs(2),
            replay_ready_timeout: Duration::from_secs(30),
            replay_page: 5000,
        }
    }
}

impl LifecycleConfig {
    /// The `[lifecycle]` table of `config` with the environment applied.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        let mut lifecycle: Self = config.section(crate::WORKER)?;
        env_override(&mut lifecycle.durable, "DTAAS_LIFECYCLE_DURABLE")?;
        env_limit(
            &mut lifecycle.quota.max_executing_dts,
            "DTAAS_QUOTA_MAX_EXECUTING",
        )?;
        env_limit(
            &mut lifecycle.quota.cpu_seconds_per_day,
            "DTAAS_QUOTA_CPU_SECONDS",
        )?;
        env_duration(
            &mut lifecycle.quota_check_interval,
            "DTAAS_QUOTA_CHECK_INTERVAL",
        )?;
        env_duration(&mut lifecycle.replay_delay, "DTAAS_REPLAY_DELAY")?;
        env_duration(
            &mut lifecycle.replay_ready_timeout,
            "DTAAS_REPLAY_READY_TIMEOUT",
        )?;
        env_override(&mut lifecycle.replay_page, "DTAAS_REPLAY_PAGE")?;
        lifecycle.replay_page = lifecycle.replay_page.max(1);
        Ok(lifecycle)
    }

    /// Whether any user has a CPU quota (else nothing needs watching).
    pub fn any_cpu_quota(&self) -> bool {
        self.quota.cpu_seconds_per_day.is_some()
            || self
                .user_quota
                .values()
                .any(|q| q.cpu_seconds_per_day.is_some())
    }

    /// The limits of `user`.
    pub fn quota_of(&self, user: &str) -> Quota {
        self.user_quota.get(user).copied().unwrap_or(self.quota)
    }
}

/// Sets an optional limit from `var` when it is set.
fn env_limit<T>(target: &mut Option<T>, var: &str) -> Result<(), ConfigError>
where
    T: std::str::FromStr + Default,
    T::Err: std::fmt::Display,
{
    if std::env::var_os(var).is_some() {
        let mut value = T::default();
        env_override(&mut value, var)?;
        *target = Some(value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_read_and_typos_named() {
        let text = "[lifecycle]\nsave_timeout = \"5s\"\n[lifecycle.quota]\nmax_executing_dts = 2\n\
                    [lifecycle.user_quota.bob]\ncpu_seconds_per_day = 10.0\n";
        let config = Config::from_toml(text, "t.toml", &|_| None).unwrap();
        let lifecycle: LifecycleConfig = config.section("lifecycle").unwrap();
        assert_eq!(lifecycle.save_timeout, Duration::from_secs(5));
        assert_eq!(lifecycle.quota_of("alice").max_executing_dts, Some(2));
        assert_eq!(lifecycle.quota_of("bob").cpu_seconds_per_day, Some(10.0));
        let config =
            Config::from_toml("[lifecycle]\nsave_timout = 1", "t.toml", &|_| None).unwrap();
        let err = config.section::<LifecycleConfig>("lifecycle").unwrap_err();
        assert!(err.to_string().contains("save_timout"), "{err}");
    }
}
