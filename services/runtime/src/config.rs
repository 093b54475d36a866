//! Configuration: a TOML file (`--config` / `DTAAS_CONFIG`) overridden by environment.
//!
//! Top-level keys are shared by every worker; each worker reads its own table
//! (`[bridge]`, `[historian]`, …). See `deploy/dtaas.toml` for every key.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;

pub use crate::mqtt_url::MqttUrl;
pub use crate::nats_auth::NatsAuth;
pub use crate::nats_url::NatsUrls;
use crate::secret::Secret;

/// Tables a configuration file may contain, one per worker.
pub const SECTIONS: [&str; 7] = [
    "bridge",
    "historian",
    "graph",
    "assets",
    "lifecycle",
    "exec",
    "accounting",
];

/// The configuration shared by every worker, after environment overrides.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DTAAS_NATS_URL`, key `nats_url`: the seeds, comma-separated (or a TOML array)
    /// for a cluster, checked when loading.
    pub nats_url: NatsUrls,
    /// `nats_user`, `nats_password`, `nats_token`, `nats_nkey`, `nats_creds`,
    /// `nats_ca_file` and their `DTAAS_NATS_…` variables.
    pub nats_auth: NatsAuth,
    /// `DTAAS_NATS_CONNECT_TIMEOUT`, key `nats_connect_timeout` (`10s`): how long to
    /// retry the first connection before giving up with an error.
    pub nats_connect_timeout: Duration,
    /// `DTAAS_NATS_PROVISION_TIMEOUT`, key `nats_provision_timeout` (`60s`): how long a
    /// starting worker waits for JetStream to provision its streams and buckets while
    /// the cluster cannot answer (no meta leader, too few nodes up for the replicas).
    pub nats_provision_timeout: Duration,
    /// `DTAAS_NATS_ACK_TIMEOUT`, key `nats_ack_timeout` (`2s`): how long a JetStream
    /// publish waits for its ack before it is sent again (same `Nats-Msg-Id`), so a
    /// leader change costs about this long, not the client's 10 s.
    pub nats_ack_timeout: Duration,
    /// `DTAAS_MQTT_URL`, key `mqtt_url`: `mqtt://[user[:password]@]host:port` or
    /// `mqtts://…`.
    pub mqtt_url: MqttUrl,
    /// `DTAAS_DATA_DIR`, key `data_dir`: where embedded stores keep their files.
    pub data_dir: PathBuf,
    /// `DTAAS_USER`, key `user`: the identity workers and the CLI act as.
    pub user: String,
    /// `DTAAS_REPLICAS`, key `replicas`: JetStream replicas of every stream and bucket.
    pub replicas: usize,
    sections: toml::Table,
}

/// The configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Toml { path: String, message: String },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    /// A NATS or MQTT URL that cannot be used.
    #[error("{origin}: {source}")]
    Url {
        origin: String,
        source: crate::userinfo::UrlError,
    },
    /// The NATS login settings contradict each other.
    #[error("NATS login: {0}")]
    Login(#[from] crate::nats_auth::LoginError),
}

fn url_error(origin: &str) -> impl FnOnce(crate::userinfo::UrlError) -> ConfigError + '_ {
    move |source| ConfigError::Url {
        origin: origin.to_owned(),
        source,
    }
}

fn invalid(origin: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.into(),
        message: message.into(),
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: NatsUrls::default(),
            nats_auth: NatsAuth::default(),
            nats_ack_timeout: Duration::from_secs(2),
            nats_connect_timeout: Duration::from_secs(10),
            nats_provision_timeout: crate::provision::DEFAULT_TIMEOUT,
            mqtt_url: MqttUrl::new("127.0.0.1", 1883),
            data_dir: PathBuf::from("data"),
            user: "dtaas".into(),
            replicas: 1,
            sections: toml::Table::new(),
        }
    }
}

impl Config {
    /// Loads `path` (if any) and applies the process environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (text, origin) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                (text, path.display().to_string())
            }
            None => (String::new(), "defaults".to_owned()),
        };
        Self::from_toml(&text, &origin, &|name| std::env::var(name).ok())
    }

    /// Parses TOML `text` (named `origin` in errors) and applies overrides from `env`.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Toml {
                    path: origin.to_owned(),
                    message: e.to_string(),
                })?;
        let mut config = Self::default();
        let mut take = |key: &str| table.remove(key);
        if let Some(v) = take("nats_url") {
            config.nats_url = nats_urls(origin, v)?;
        }
        let auth = &mut config.nats_auth;
        if let Some(v) = take("nats_user") {
            auth.user = Some(string(origin, "nats_user", v)?);
        }
        if let Some(v) = take("nats_password") {
            auth.password = Some(Secret::new(string(origin, "nats_password", v)?));
        }
        if let Some(v) = take("nats_token") {
            auth.token = Some(Secret::new(string(origin, "nats_token", v)?));
        }
        if let Some(v) = take("nats_nkey") {
            auth.nkey = Some(string(origin, "nats_nkey", v)?.into());
        }
        if let Some(v) = take("nats_creds") {
            auth.creds = Some(string(origin, "nats_creds", v)?.into());
        }
        if let Some(v) = take("nats_ca_file") {
            auth.ca_file = Some(string(origin, "nats_ca_file", v)?.into());
        }
        if let Some(v) = take("nats_ack_timeout") {
            config.nats_ack_timeout = parse_duration(
                origin,
                "nats_ack_timeout",
                &string(origin, "nats_ack_timeout", v)?,
            )?;
        }
        if let Some(v) = take("nats_connect_timeout") {
            config.nats_connect_timeout = parse_duration(
                origin,
                "nats_connect_timeout",
                &string(origin, "nats_connect_timeout", v)?,
            )?;
        }
        if let Some(v) = take("nats_provision_timeout") {
            config.nats_provision_timeout = parse_duration(
                origin,
                "nats_provision_timeout",
                &string(origin, "nats_provision_timeout", v)?,
            )?;
        }
        if let Some(v) = take("mqtt_url") {
            config.mqtt_url = string(origin, "mqtt_url", v)?
                .parse()
                .map_err(url_error(origin))?;
        }
        if let Some(v) = take("data_dir") {
            config.data_dir = string(origin, "data_dir", v)?.into();
        }
        if let Some(v) = take("user") {
            config.user = string(origin, "user", v)?;
        }
        if let Some(v) = take("replicas") {
            let n = v.as_integer().filter(|n| (1..=5).contains(n));
            config.replicas = n
                .ok_or_else(|| invalid(origin, "key `replicas` must be an integer from 1 to 5"))?
                as usize;
        }
        for (key, value) in &table {
            if !SECTIONS.contains(&key.as_str()) {
                return Err(invalid(origin, format!("unknown key `{key}`; top-level keys are nats_url, nats_user, nats_password, nats_token, nats_nkey, nats_creds, nats_ca_file, nats_connect_timeout, nats_provision_timeout, nats_ack_timeout, mqtt_url, data_dir, user, replicas and the tables [{}]", SECTIONS.join("], ["))));
            }
            if !value.is_table() {
                return Err(invalid(
                    origin,
                    format!("`{key}` must be a table ([{key}])"),
                ));
            }
        }
        config.sections = table;
        config.apply_env(env)?;
        Ok(config)
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("DTAAS_NATS_URL") {
            self.nats_url = v.parse().map_err(url_error("DTAAS_NATS_URL"))?;
        }
        let auth = &mut self.nats_auth;
        if let Some(v) = env("DTAAS_NATS_USER") {
            auth.user = Some(v);
        }
        if let Some(v) = env("DTAAS_NATS_PASSWORD") {
            auth.password = Some(Secret::new(v));
        }
        if let Some(v) = env("DTAAS_NATS_TOKEN") {
            auth.token = Some(Secret::new(v));
        }
        if let Some(v) = env("DTAAS_NATS_NKEY") {
            auth.nkey = Some(v.into());
        }
        if let Some(v) = env("DTAAS_NATS_CREDS") {
            auth.creds = Some(v.into());
        }
        if let Some(v) = env("DTAAS_NATS_CA_FILE") {
            auth.ca_file = Some(v.into());
        }
        if let Some(v) = env("DTAAS_NATS_ACK_TIMEOUT") {
            self.nats_ack_timeout = parse_duration("DTAAS_NATS_ACK_TIMEOUT", "value", &v)?;
        }
        self.nats_auth.login(&self.nats_url)?;
        if let Some(v) = env("DTAAS_NATS_CONNECT_TIMEOUT") {
            self.nats_connect_timeout = parse_duration("DTAAS_NATS_CONNECT_TIMEOUT", "value", &v)?;
        }
        if let Some(v) = env("DTAAS_NATS_PROVISION_TIMEOUT") {
            self.nats_provision_timeout =
                parse_duration("DTAAS_NATS_PROVISION_TIMEOUT", "value", &v)?;
        }
        if let Some(v) = env("DTAAS_MQTT_URL") {
            self.mqtt_url = v.parse().map_err(url_error("DTAAS_MQTT_URL"))?;
        }
        if let Some(v) = env("DTAAS_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = env("DTAAS_USER") {
            self.user = v;
        }
        if let Some(v) = env("DTAAS_REPLICAS") {
            self.replicas = v
                .parse()
                .ok()
                .filter(|n| (1..=5).contains(n))
                .ok_or_else(|| {
                    invalid(
                        "DTAAS_REPLICAS",
                        format!("{v:?} must be an integer from 1 to 5"),
                    )
                })?;
        }
        dtaas_schemas::subject::validate_token("user", &self.user)
            .map_err(|e| invalid("user (DTAAS_USER)", e.to_string()))?;
        Ok(())
    }

    /// The worker table `[name]`, or its defaults when the file has none. Unknown keys
    /// are errors when `T` denies them, so typos do not pass silently.
    pub fn section<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, ConfigError> {
        match self.sections.get(name) {
            None => Ok(T::default()),
            Some(value) => value
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| invalid(format!("[{name}]"), e.message().to_owned())),
        }
    }
}

/// `nats_url` as one string (commas allowed) or an array of strings.
fn nats_urls(origin: &str, value: toml::Value) -> Result<NatsUrls, ConfigError> {
    let parsed = match value {
        toml::Value::Array(items) => {
            let seeds = items
                .into_iter()
                .map(|item| string(origin, "nats_url", item))
                .collect::<Result<Vec<_>, _>>()?;
            NatsUrls::from_seeds(&seeds)
        }
        other => string(origin, "nats_url", other)?.parse(),
    };
    parsed.map_err(url_error(origin))
}

fn string(origin: &str, key: &str, value: toml::Value) -> Result<String, ConfigError> {
    match value {
        toml::Value::String(s) => Ok(s),
        other => Err(invalid(
            origin,
            format!("key `{key}` must be a string, not {}", other.type_str()),
        )),
    }
}

fn parse_duration(origin: &str, key: &str, text: &str) -> Result<Duration, ConfigError> {
    let ns = dtaas_schemas::time::parse_duration_ns(text)
        .map_err(|m| invalid(origin, format!("{key}: {m}")))?;
    Ok(Duration::from_nanos(ns.max(0) as u64))
}

/// Deserializes a duration written as a person would (`"500ms"`, `"1s"`, `"5m"`), for
/// `#[serde(deserialize_with = "dtaas_runtime::config::duration")]` in worker tables.
pub fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    use serde::Deserialize;
    let text = String::deserialize(d)?;
    let ns = dtaas_schemas::time::parse_duration_ns(&text).map_err(serde::de::Error::custom)?;
    Ok(Duration::from_nanos(ns.max(0) as u64))
}

/// Overrides `target` from the environment variable `var` when it is set; for worker
/// settings such as `DTAAS_TS_BACKEND`.
pub fn env_override<T: FromStr>(target: &mut T, var: &str) -> Result<(), ConfigError>
where
    T::Err: std::fmt::Display,
{
    if let Ok(value) = std::env::var(var) {
        *target = value
            .parse()
            .map_err(|e: T::Err| invalid(var, format!("{value:?}: {e}")))?;
    }
    Ok(())
}

/// Overrides a duration from the environment variable `var` when it is set, written
/// as a person would (`"500ms"`, `"15s"`).
pub fn env_duration(target: &mut Duration, var: &str) -> Result<(), ConfigError> {
    if let Ok(text) = std::env::var(var) {
        *target = parse_duration(var, "value", &text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Bridge {
        #[serde(default)]
        in_flight: usize,
    }

    #[test]
    fn file_then_environment() {
        let text = r#"
            nats_url = "nats://file:4222"
            mqtt_url = "mqtt://broker:1884"
            user = "alice"
            [bridge]
            in_flight = 64
        "#;
        let env = |name: &str| match name {
            "DTAAS_NATS_URL" => Some("nats://env:4222".to_owned()),
            "DTAAS_DATA_DIR" => Some("/var/lib/dtaas".to_owned()),
            _ => None,
        };
        let config = Config::from_toml(text, "test.toml", &env).unwrap();
        assert_eq!(config.nats_url.to_string(), "nats://env:4222");
        assert_eq!(config.mqtt_url, MqttUrl::new("broker", 1884));
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/dtaas"));
        assert_eq!(config.user, "alice");
        assert_eq!(config.section::<Bridge>("bridge").unwrap().in_flight, 64);
        assert_eq!(
            config.section::<Bridge>("historian").unwrap(),
            Bridge::default()
        );
    }

    #[test]
    fn mistakes_are_named() {
        let err = Config::from_toml("nats_ulr = \"x\"", "a.toml", &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nats_ulr") && err.contains("a.toml"), "{err}");
        let err = Config::from_toml("mqtt_url = \"http://x\"", "a.toml", &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("mqtt://host:port"), "{err}");
        let config = Config::from_toml("[bridge]\nin_flihgt = 3", "a.toml", &no_env).unwrap();
        let err = config.section::<Bridge>("bridge").unwrap_err().to_string();
        assert!(
            err.contains("in_flihgt") && err.contains("[bridge]"),
            "{err}"
        );
        let env = |name: &str| (name == "DTAAS_USER").then(|| "al ice".to_owned());
        let err = Config::from_toml("", "defaults", &env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DTAAS_USER") && err.contains("whitespace"),
            "{err}"
        );
    }

    #[test]
    fn nats_seeds_and_logins() {
        let text = "nats_url = [\"nats://a:1\", \"nats://b:2\"]\nnats_user = \"dtaas\"\n";
        let env = |name: &str| (name == "DTAAS_NATS_PASSWORD").then(|| "hunter2".to_owned());
        let config = Config::from_toml(text, "a.toml", &env).unwrap();
        assert_eq!(config.nats_url.servers().len(), 2);
        assert_eq!(
            config.nats_auth.password.as_ref().unwrap().expose(),
            "hunter2"
        );
        assert!(!format!("{config:?}").contains("hunter2"));
        let env = |name: &str| {
            (name == "DTAAS_NATS_URL").then(|| "nats://a:1,nats://u:hunter2@b:x".to_owned())
        };
        let err = Config::from_toml("", "defaults", &env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DTAAS_NATS_URL") && err.contains("2 of 2") && !err.contains("hunter2"),
            "{err}"
        );
        let err = Config::from_toml("nats_url = [1]", "a.toml", &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nats_url") && err.contains("string"), "{err}");
        let err = Config::from_toml("nats_token = \"t\"\nnats_nkey = \"/k\"", "a.toml", &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nats_token, nats_nkey"), "{err}");
    }
}
