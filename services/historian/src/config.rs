//! The `[historian]` table of the configuration file and its environment overrides.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use dtaas_runtime::config::duration;
use serde::Deserialize;

use crate::error::{ConfigError, UnknownBackend};

/// Which time-series store the historian writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// SQLite under `DTAAS_DATA_DIR`: one machine, no setup.
    #[default]
    Embedded,
    /// InfluxDB 2 over its HTTP API.
    Influxdb,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Influxdb => "influxdb",
        }
    }
}

impl FromStr for Backend {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, UnknownBackend> {
        match s {
            "embedded" => Ok(Self::Embedded),
            "influxdb" => Ok(Self::Influxdb),
            other => Err(UnknownBackend(other.to_owned())),
        }
    }
}

/// How the historian acknowledges what it stored; fixed when the durable is created.
/// `all` is the fastest, but only one historian process may consume the durable (the
/// default of the embedded backend, whose SQLite file belongs to one process anyway);
/// with `explicit` any number of historians may share it (the default of influxdb).
pub use dtaas_runtime::consumer::AckPolicy;
pub use dtaas_runtime::secret::Secret;

/// `[historian]`: every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorianConfig {
    /// `DTAAS_TS_BACKEND`: `embedded` (SQLite, default) or `influxdb`.
    pub backend: Backend,
    /// `DTAAS_HISTORIAN_DURABLE`: the durable consumer's name on `DTAAS_TEL`
    /// [default: `historian-<backend>`]. A new name is a new sink: it starts at the
    /// beginning of the stream and backfills what the stream still holds.
    pub durable: Option<String>,
    /// `DTAAS_HISTORIAN_ACK_POLICY`: `all` (one acknowledgement per batch; a single
    /// historian per durable) or `explicit` (one per message; historians may share the
    /// durable) [default: all with embedded, explicit with influxdb].
    pub ack_policy: Option<AckPolicy>,
    /// Most points (messages) written in one batch [default: 5000].
    pub batch_size: usize,
    /// Longest a message waits for its batch to fill before the batch is written [default: 1s].
    #[serde(deserialize_with = "duration")]
    pub max_delay: Duration,
    /// Most messages delivered but not yet acknowledged; JetStream stops delivering
    /// beyond it, which bounds the historian's memory [default: 20000].
    pub max_ack_pending: usize,
    /// How long JetStream waits for an acknowledgement before delivering again; while a
    /// batch is retried the historian sends progress acks well within it [default: 30s].
    #[serde(deserialize_with = "duration")]
    pub ack_wait: Duration,
    /// The SQLite file of the embedded backend [default: `<data_dir>/historian.sqlite`].
    pub sqlite_path: Option<PathBuf>,
    /// InfluxDB 2 settings, used with `backend = "influxdb"`.
    pub influxdb: InfluxConfig,
}

/// `[historian.influxdb]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfluxConfig {
    /// `DTAAS_INFLUXDB_URL` [default: http://127.0.0.1:8086].
    pub url: String,
    /// `DTAAS_INFLUXDB_ORG` [default: dtaas].
    pub org: String,
    /// `DTAAS_INFLUXDB_BUCKET` [default: dtaas].
    pub bucket: String,
    /// `DTAAS_INFLUXDB_TOKEN`: the API token; never logged.
    pub token: Secret,
    /// Timeout of one write or query request [default: 30s].
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8086".into(),
            org: "dtaas".into(),
            bucket: "dtaas".into(),
            token: Secret::default(),
            timeout: Duration::from_secs(30),
        }
    }
}

impl Default for HistorianConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Embedded,
            durable: None,
            ack_policy: None,
            batch_size: 5000,
            max_delay: Duration::from_secs(1),
            max_ack_pending: 20_000,
            ack_wait: Duration::from_secs(30),
            sqlite_path: None,
            influxdb: InfluxConfig::default(),
        }
    }
}

impl HistorianConfig {
    /// Reads `[historian]` from `config` and applies the environment.
    pub fn load(config: &dtaas_runtime::Config) -> Result<Self, ConfigError> {
        use dtaas_runtime::config::env_override;
        let mut this: Self = config.section("historian")?;
        env_override(&mut this.backend, "DTAAS_TS_BACKEND")?;
        let mut durable = this.durable.clone().unwrap_or_default();
        env_override(&mut durable, "DTAAS_HISTORIAN_DURABLE")?;
        this.durable = (!durable.is_empty()).then_some(durable);
        let mut ack_policy = this.ack_policy();
        env_override(&mut ack_policy, "DTAAS_HISTORIAN_ACK_POLICY")?;
        this.ack_policy = Some(ack_policy);
        env_override(&mut this.influxdb.url, "DTAAS_INFLUXDB_URL")?;
        env_override(&mut this.influxdb.org, "DTAAS_INFLUXDB_ORG")?;
        env_override(&mut this.influxdb.bucket, "DTAAS_INFLUXDB_BUCKET")?;
        env_override(&mut this.influxdb.token, "DTAAS_INFLUXDB_TOKEN")?;
        this.validate(&config.data_dir)?;
        Ok(this)
    }

    fn validate(&mut self, data_dir: &Path) -> Result<(), ConfigError> {
        if !(1..=100_000).contains(&self.batch_size) {
            return Err(ConfigError::Invalid(
                "batch_size must be from 1 to 100000".into(),
            ));
        }
        if self.max_ack_pending < self.batch_size {
            return Err(ConfigError::Invalid(format!(
                "max_ack_pending ({}) must be at least batch_size ({})",
                self.max_ack_pending, self.batch_size
            )));
        }
        if self.ack_wait < Duration::from_secs(3) {
            return Err(ConfigError::Invalid("ack_wait must be at least 3s".into()));
        }
        if let Some(durable) = &self.durable {
            dtaas_schemas::subject::validate_token("durable name", durable)?;
        }
        if self.sqlite_path.is_none() {
            self.sqlite_path = Some(data_dir.join("historian.sqlite"));
        }
        Ok(())
    }

    /// The configured ack policy, or the backend's default.
    pub fn ack_policy(&self) -> AckPolicy {
        self.ack_policy.unwrap_or(match self.backend {
            Backend::Embedded => AckPolicy::All,
            Backend::Influxdb => AckPolicy::Explicit,
        })
    }

    /// The durable consumer's name: configured, or `historian-<backend>`.
    pub fn durable_name(&self) -> String {
        self.durable
            .clone()
            .unwrap_or_else(|| format!("historian-{}", self.backend.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<HistorianConfig, ConfigError> {
        let config = dtaas_runtime::Config::from_toml(text, "t.toml", &|_| None)?;
        let mut this: HistorianConfig = config.section("historian")?;
        this.validate(Path::new("/data"))?;
        Ok(this)
    }

    #[test]
    fn defaults_and_file() {
        let this = load("").unwrap();
        assert_eq!(this.durable_name(), "historian-embedded");
        assert_eq!(
            this.sqlite_path.as_deref(),
            Some(Path::new("/data/historian.sqlite"))
        );
        let this = load(
            "[historian]\nbackend = \"influxdb\"\nmax_delay = \"250ms\"\n\
             [historian.influxdb]\ntoken = \"s3cret\"",
        )
        .unwrap();
        assert_eq!(this.durable_name(), "historian-influxdb");
        assert_eq!(this.ack_policy(), AckPolicy::Explicit);
        assert_eq!(this.max_delay, Duration::from_millis(250));
        assert!(!format!("{this:?}").contains("s3cret"));
        assert_eq!(load("").unwrap().ack_policy(), AckPolicy::All);
        let this = load("[historian]\nbackend = \"influxdb\"\nack_policy = \"all\"").unwrap();
        assert_eq!(this.ack_policy(), AckPolicy::All);
    }

    #[test]
    fn mistakes_are_named() {
        let err = load("[historian]\nbatch_sise = 3").unwrap_err().to_string();
        assert!(err.contains("batch_sise"), "{err}");
        let err = load("[historian]\nbackend = \"influx\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("influx"), "{err}");
        let err = load("[historian]\nbatch_size = 10\nmax_ack_pending = 5")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_ack_pending"), "{err}");
    }
}
