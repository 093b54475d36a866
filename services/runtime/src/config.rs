//! Configuration: a TOML file (`--config` / `DTAAS_CONFIG`) overridden by environment.
//!
//! Top-level keys are shared by every worker; each worker reads its own table
//! (`[bridge]`, `[historian]`, …). See `deploy/dtaas.toml` for every key.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;

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
    /// `DTAAS_NATS_URL`, key `nats_url`; comma-separated for a cluster.
    pub nats_url: String,
    /// `DTAAS_NATS_CREDS`, key `nats_creds`: a NATS credentials file.
    pub nats_creds: Option<PathBuf>,
    /// `DTAAS_NATS_CONNECT_TIMEOUT`, key `nats_connect_timeout` (`10s`): how long to
    /// retry the first connection before giving up with an error.
    pub nats_connect_timeout: Duration,
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
}

fn invalid(origin: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.into(),
        message: message.into(),
    }
}

/// The MQTT broker address, from `mqtt://[user[:password]@]host[:port]` (port 1883),
/// or `mqtts://…` for TLS (port 8883); `tcp://` and `ssl://` are aliases. User and
/// password may be percent-encoded (`%40` for `@`, `%3A` for `:`); the password is a
/// `Secret`, and neither `Display` nor a parse error shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    /// `mqtts://` (or `ssl://`): TLS.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The user name of the URL's userinfo, if any.
    pub username: Option<String>,
    /// The password of the URL's userinfo, if any.
    pub password: Option<Secret>,
}

impl MqttUrl {
    /// `host:port` without credentials.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            tls: false,
            host: host.into(),
            port,
            username: None,
            password: None,
        }
    }
}

/// `url` with the password of its userinfo replaced by `***`, for error messages.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Decodes `%XX` escapes; `what` names the part in errors (never its value).
fn percent_decode(text: &str, what: &str, shown: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| {
                    format!("MQTT URL {shown:?} has an invalid %-escape in the {what}")
                })?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| format!("MQTT URL {shown:?} has a {what} that is not UTF-8 once decoded"))
}

impl FromStr for MqttUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let shown = redact_url(url);
        let (tls, rest) = if let Some(rest) = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
        {
            (false, rest)
        } else if let Some(rest) = url
            .strip_prefix("mqtts://")
            .or_else(|| url.strip_prefix("ssl://"))
        {
            (true, rest)
        } else {
            return Err(format!(
                "MQTT URL {shown:?} must look like mqtt://host:port or mqtts://host:port"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, rest),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => {
                let port = port
                    .parse()
                    .map_err(|_| format!("MQTT URL {shown:?} has an invalid port {port:?}"))?;
                (host, port)
            }
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(format!("MQTT URL {shown:?} has no host"));
        }
        let mut parsed = Self::new(host, port);
        parsed.tls = tls;
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            let user = percent_decode(user, "user name", &shown)?;
            if user.is_empty() {
                return Err(format!(
                    "MQTT URL {shown:?} has credentials without a user name"
                ));
            }
            parsed.username = Some(user);
            parsed.password = password
                .map(|p| percent_decode(p, "password", &shown).map(Secret::new))
                .transpose()?;
        }
        Ok(parsed)
    }
}

impl std::fmt::Display for MqttUrl {
    /// `mqtt://host:port` or `mqtts://host:port`: never the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_creds: None,
            nats_connect_timeout: Duration::from_secs(10),
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
            config.nats_url = string(origin, "nats_url", v)?;
        }
        if let Some(v) = take("nats_creds") {
            config.nats_creds = Some(string(origin, "nats_creds", v)?.into());
        }
        if let Some(v) = take("nats_connect_timeout") {
            config.nats_connect_timeout = parse_duration(
                origin,
                "nats_connect_timeout",
                &string(origin, "nats_connect_timeout", v)?,
            )?;
        }
        if let Some(v) = take("mqtt_url") {
            config.mqtt_url = string(origin, "mqtt_url", v)?
                .parse()
                .map_err(|m| invalid(origin, m))?;
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
                return Err(invalid(origin, format!("unknown key `{key}`; top-level keys are nats_url, nats_creds, nats_connect_timeout, mqtt_url, data_dir, user, replicas and the tables [{}]", SECTIONS.join("], ["))));
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
            self.nats_url = v;
        }
        if let Some(v) = env("DTAAS_NATS_CREDS") {
            self.nats_creds = Some(v.into());
        }
        if let Some(v) = env("DTAAS_NATS_CONNECT_TIMEOUT") {
            self.nats_connect_timeout = parse_duration("DTAAS_NATS_CONNECT_TIMEOUT", "value", &v)?;
        }
        if let Some(v) = env("DTAAS_MQTT_URL") {
            self.mqtt_url = v.parse().map_err(|m| invalid("DTAAS_MQTT_URL", m))?;
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
        assert_eq!(config.nats_url, "nats://env:4222");
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
    fn mqtt_url_forms() {
        assert_eq!("mqtt://h".parse::<MqttUrl>().unwrap().port, 1883);
        assert!("mqtt://h:x"
            .parse::<MqttUrl>()
            .unwrap_err()
            .contains("port"));
        assert!("mqtt://:1"
            .parse::<MqttUrl>()
            .unwrap_err()
            .contains("no host"));
    }

    #[test]
    fn mqtt_url_tls() {
        let url: MqttUrl = "mqtts://broker".parse().unwrap();
        assert!(url.tls);
        assert_eq!((url.host.as_str(), url.port), ("broker", 8883));
        assert_eq!(url.to_string(), "mqtts://broker:8883");
        let url: MqttUrl = "ssl://u:p@broker:1884".parse().unwrap();
        assert!(url.tls && url.port == 1884);
        assert!(!"mqtt://broker".parse::<MqttUrl>().unwrap().tls);
    }

    #[test]
    fn mqtt_url_credentials() {
        let url: MqttUrl = "mqtt://bridge:s%40cr%3Aet@broker:1884".parse().unwrap();
        assert_eq!((url.host.as_str(), url.port), ("broker", 1884));
        assert_eq!(url.username.as_deref(), Some("bridge"));
        assert_eq!(url.password.as_ref().unwrap().expose(), "s@cr:et");
        assert_eq!(
            url.to_string(),
            "mqtt://broker:1884",
            "no credentials shown"
        );
        assert!(!format!("{url:?}").contains("s@cr"), "{url:?}");
        let url: MqttUrl = "mqtt://pa:ss@word@h".parse().unwrap();
        assert_eq!(url.host, "h");
        assert_eq!(url.password.unwrap().expose(), "ss@word");
        let url: MqttUrl = "mqtt://only-user@h".parse().unwrap();
        assert_eq!(url.username.as_deref(), Some("only-user"));
        assert!(url.password.is_none());
        for bad in [
            "mqtt://u:hunter2@h:x",
            "mqtt://:hunter2@h",
            "mqtt://u:hunter2%zz@h",
        ] {
            let err = bad.parse::<MqttUrl>().unwrap_err();
            assert!(!err.contains("hunter2") && err.contains(":***@"), "{err}");
        }
        let err = Config::from_toml("", "defaults", &|n: &str| {
            (n == "DTAAS_MQTT_URL").then(|| "mqtp://u:hunter2@h".to_owned())
        })
        .unwrap_err()
        .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
