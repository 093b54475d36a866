//! The `[bridge]` configuration table and its environment overrides.

use dtaas_runtime::secret::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

/// Settings of the bridge worker (`[bridge]` in the configuration file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// MQTT client id; stable so the broker keeps the session across restarts
    /// (`DTAAS_BRIDGE_CLIENT_ID`). Default `dtaas-bridge-<user>`.
    pub client_id: Option<String>,
    /// MQTT protocol version (`DTAAS_MQTT_PROTOCOL`): `auto` (MQTT 5, falling back to
    /// 3.1.1 when the broker refuses 5), `5` or `3.1.1`.
    pub mqtt_protocol: MqttProtocol,
    /// How long the broker keeps the session (and queues messages) while the bridge is
    /// away, in seconds (MQTT 5 session expiry interval; with 3.1.1 the broker decides).
    pub session_expiry_secs: u32,
    /// QoS of the telemetry subscriptions (0, 1 or 2).
    pub qos: u8,
    /// Most MQTT messages received but not yet acknowledged (`DTAAS_BRIDGE_IN_FLIGHT`);
    /// sent to the broker as MQTT 5 receive maximum, so it never sends more (3.1.1 has
    /// no receive maximum: there the broker's own in-flight limit applies).
    pub in_flight: u16,
    /// QoS commands are published with (0, 1 or 2).
    pub command_qos: u8,
    /// Durable consumer name on `DTAAS_CMD`.
    pub command_consumer: String,
    /// Largest command payload accepted by `cmd.send`, in bytes.
    pub max_command_payload: usize,
    /// Largest MQTT payload the bridge takes, in bytes (`DTAAS_BRIDGE_MAX_PAYLOAD`); it
    /// sets the packet size the bridge announces to the broker, which drops larger
    /// messages for the bridge: set the broker's own limit (mosquitto
    /// `message_size_limit`) to it or lower, so a device is refused instead.
    pub max_payload: usize,
    /// Largest TTL accepted by `cmd.send`, in milliseconds.
    pub max_command_ttl_ms: u64,
    /// When true, telemetry of PTs not listed in `known_pts` goes to the DLQ.
    pub reject_unknown_pts: bool,
    /// PT ids accepted when `reject_unknown_pts` is on.
    pub known_pts: Vec<String>,
    /// Custom topic maps, tried in order before the default map.
    pub maps: Vec<TopicMapConfig>,
    /// Keep the default map `dtaas/pt/<pt>/tel/<measurement>` next to custom maps.
    pub default_map: bool,
    /// MQTT user name (`DTAAS_MQTT_USERNAME`); else the user of `mqtt_url`, if any.
    pub mqtt_username: Option<String>,
    /// MQTT password (`DTAAS_MQTT_PASSWORD`); else the password of `mqtt_url`, if
    /// any. Never logged.
    pub mqtt_password: Option<Secret>,
    /// CA certificates (PEM) the broker's certificate is checked against with
    /// `mqtts://` (`DTAAS_MQTT_CA_FILE`); default: the system's.
    pub mqtt_ca_file: Option<PathBuf>,
    /// Most bytes the durable backlog under `DTAAS_DATA_DIR/bridge-backlog` holds while
    /// JetStream cannot take messages (`DTAAS_BRIDGE_BACKLOG_MAX_BYTES`, default
    /// 1 GiB; 0 turns it off). When full the bridge waits for JetStream and the
    /// broker queues.
    pub backlog_max_bytes: u64,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            client_id: None,
            mqtt_protocol: MqttProtocol::Auto,
            session_expiry_secs: 7 * 24 * 3600,
            qos: 1,
            in_flight: 1000,
            command_qos: 1,
            command_consumer: "dtaas-bridge-commands".into(),
            max_command_payload: 64 * 1024,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_command_ttl_ms: 24 * 3600 * 1000,
            reject_unknown_pts: false,
            known_pts: Vec::new(),
            maps: Vec::new(),
            default_map: true,
            backlog_max_bytes: 1 << 30,
            mqtt_username: None,
            mqtt_password: None,
            mqtt_ca_file: None,
        }
    }
}

/// Which MQTT protocol version the bridge speaks (`[bridge] mqtt_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "ProtocolValue")]
pub enum MqttProtocol {
    /// MQTT 5; MQTT 3.1.1 when the broker refuses 5 (decided on the first connection).
    #[default]
    Auto,
    /// MQTT 5 only.
    V5,
    /// MQTT 3.1.1 only.
    V311,
}

impl MqttProtocol {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::V5 => "5",
            Self::V311 => "3.1.1",
        }
    }
}

/// A `[bridge]` section (with its environment overrides) the bridge cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum BridgeConfigError {
    /// Not readable, or an override that does not parse.
    #[error(transparent)]
    Read(#[from] dtaas_runtime::config::ConfigError),
    #[error("[bridge] in_flight must be at least 1")]
    InFlight,
    /// Names the key: `qos` or `command_qos`.
    #[error("[bridge] {0} must be 0, 1 or 2")]
    Qos(&'static str),
    #[error(
        "[bridge] max_payload must be between 1024 and {MAX_MAX_PAYLOAD} bytes \
         (the MQTT limit, less room for the topic)"
    )]
    MaxPayload,
    #[error(
        "an MQTT password is set ([bridge] mqtt_password, DTAAS_MQTT_PASSWORD or \
         mqtt_url) but no user name (mqtt_username, DTAAS_MQTT_USERNAME)"
    )]
    PasswordWithoutUser,
}

/// An `mqtt_protocol` that names no protocol the bridge speaks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown MQTT protocol {value:?}; use auto, 5 or 3.1.1")]
pub struct UnknownProtocol {
    pub value: String,
}

impl FromStr for MqttProtocol {
    type Err = UnknownProtocol;

    fn from_str(s: &str) -> Result<Self, UnknownProtocol> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "5" | "v5" => Ok(Self::V5),
            "3.1.1" | "v3.1.1" | "311" => Ok(Self::V311),
            other => Err(UnknownProtocol {
                value: other.to_owned(),
            }),
        }
    }
}

/// `mqtt_protocol` as written in TOML: a string, or the bare number 5.
#[derive(Deserialize)]
#[serde(untagged)]
enum ProtocolValue {
    Text(String),
    Number(i64),
}

impl TryFrom<ProtocolValue> for MqttProtocol {
    type Error = UnknownProtocol;

    fn try_from(value: ProtocolValue) -> Result<Self, UnknownProtocol> {
        match value {
            ProtocolValue::Text(s) => s.parse(),
            ProtocolValue::Number(n) => n.to_string().parse(),
        }
    }
}

/// Where a topic map takes a value from: a topic level (0-based) or a fixed text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Source {
    /// The topic level with this index (`dtaas/pt/x` has `x` at level 2).
    Level(usize),
    /// This fixed text.
    Fixed(String),
}

/// Payload formats the bridge understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// JSON object or scalar, MessagePack or line protocol, recognised by content.
    #[default]
    Auto,
    Json,
    LineProtocol,
    Msgpack,
}

/// Unit of numeric timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    /// Guessed from the magnitude (s, ms, us or ns of a date after 1973); strings are
    /// RFC 3339.
    #[default]
    Auto,
    S,
    Ms,
    Us,
    Ns,
    /// An RFC 3339 string.
    Rfc3339,
}

/// A custom MQTT topic → telemetry mapping (`[[bridge.maps]]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicMapConfig {
    /// MQTT topic filter to subscribe to, e.g. `factory/+/+/data`.
    pub filter: String,
    /// Where the PT id comes from.
    pub pt: Source,
    /// Where the measurement comes from.
    pub measurement: Source,
    /// Tags taken from topic levels: tag name → level.
    #[serde(default)]
    pub tags: BTreeMap<String, usize>,
    /// Payload format.
    #[serde(default)]
    pub format: Format,
    /// Name of the timestamp field in JSON/MessagePack payloads.
    #[serde(default = "default_timestamp_field")]
    pub timestamp_field: String,
    /// Unit of the timestamp field (and of line protocol timestamps).
    #[serde(default)]
    pub timestamp_unit: TimeUnit,
    /// Name of a field carrying a unique message id (used as `Nats-Msg-Id`).
    #[serde(default)]
    pub id_field: Option<String>,
}

fn default_timestamp_field() -> String {
    "ts".into()
}

/// The default of `max_payload`: 16 MiB, far above common device payloads.
pub const DEFAULT_MAX_PAYLOAD: usize = 16 * 1024 * 1024;
/// The largest `max_payload`: MQTT's largest packet (256 MiB) less 64 KiB for the topic
/// and properties.
pub const MAX_MAX_PAYLOAD: usize = 268_435_455 - 65_536;

impl BridgeConfig {
    /// Reads `[bridge]` and the `DTAAS_BRIDGE_*` environment variables.
    pub fn load(config: &dtaas_runtime::Config) -> Result<Self, BridgeConfigError> {
        let mut bridge: Self = config.section("bridge")?;
        let mut client_id = bridge
            .client_id
            .clone()
            .unwrap_or_else(|| format!("dtaas-bridge-{}", config.user));
        dtaas_runtime::config::env_override(&mut client_id, "DTAAS_BRIDGE_CLIENT_ID")?;
        bridge.client_id = Some(client_id);
        dtaas_runtime::config::env_override(&mut bridge.mqtt_protocol, "DTAAS_MQTT_PROTOCOL")?;
        dtaas_runtime::config::env_override(&mut bridge.in_flight, "DTAAS_BRIDGE_IN_FLIGHT")?;
        dtaas_runtime::config::env_override(
            &mut bridge.backlog_max_bytes,
            "DTAAS_BRIDGE_BACKLOG_MAX_BYTES",
        )?;
        dtaas_runtime::config::env_override(&mut bridge.max_payload, "DTAAS_BRIDGE_MAX_PAYLOAD")?;
        bridge.resolve_credentials(&config.mqtt_url, &|name| std::env::var(name).ok())?;
        if let Ok(path) = std::env::var("DTAAS_MQTT_CA_FILE") {
            bridge.mqtt_ca_file = Some(path.into());
        }
        if bridge.in_flight == 0 {
            return Err(BridgeConfigError::InFlight);
        }
        if bridge.qos > 2 {
            return Err(BridgeConfigError::Qos("qos"));
        }
        if !(1024..=MAX_MAX_PAYLOAD).contains(&bridge.max_payload) {
            return Err(BridgeConfigError::MaxPayload);
        }
        if bridge.command_qos > 2 {
            return Err(BridgeConfigError::Qos("command_qos"));
        }
        Ok(bridge)
    }

    /// Credentials: `DTAAS_MQTT_USERNAME` / `DTAAS_MQTT_PASSWORD`, else the `[bridge]`
    /// keys, else the userinfo of `mqtt_url`, each part on its own. A password needs
    /// a user name (MQTT 3.1.1 has no password without one).
    fn resolve_credentials(
        &mut self,
        url: &dtaas_runtime::MqttUrl,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), BridgeConfigError> {
        if let Some(user) = env("DTAAS_MQTT_USERNAME") {
            self.mqtt_username = Some(user);
        }
        if let Some(password) = env("DTAAS_MQTT_PASSWORD") {
            self.mqtt_password = Some(Secret::new(password));
        }
        if self.mqtt_username.is_none() {
            self.mqtt_username = url.username.clone();
        }
        if self.mqtt_password.is_none() {
            self.mqtt_password = url.password.clone();
        }
        if self.mqtt_username.as_deref() == Some("") {
            self.mqtt_username = None;
        }
        if self.mqtt_username.is_none() && self.mqtt_password.is_some() {
            return Err(BridgeConfigError::PasswordWithoutUser);
        }
        Ok(())
    }

    /// The MQTT client id (set by `load`).
    pub fn client_id(&self) -> &str {
        self.client_id.as_deref().unwrap_or("dtaas-bridge")
    }
}

/// `dtaas bridge --help` text for the worker's own variables.
pub const ENV_HELP: &str = "\
Bridge environment (overrides [bridge] in the config file):
  DTAAS_BRIDGE_CLIENT_ID      MQTT client id, stable across restarts [default: dtaas-bridge-<user>]
  DTAAS_BRIDGE_IN_FLIGHT      MQTT messages received but not yet acknowledged [default: 1000]
  DTAAS_BRIDGE_BACKLOG_MAX_BYTES  disk backlog while JetStream cannot take messages,
                              0 turns it off [default: 1073741824]
  DTAAS_BRIDGE_MAX_PAYLOAD    largest MQTT payload taken, bytes [default: 16777216]
  DTAAS_MQTT_PROTOCOL         MQTT version: auto (5, else 3.1.1), 5 or 3.1.1 [default: auto]
  DTAAS_MQTT_USERNAME         MQTT user name [default: the user of DTAAS_MQTT_URL, if any]
  DTAAS_MQTT_PASSWORD         MQTT password, never logged
                              [default: the password of DTAAS_MQTT_URL, if any]
  DTAAS_MQTT_CA_FILE          CA certificates (PEM) for mqtts:// [default: the system's]
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_parse_from_toml() {
        let text = r#"
            in_flight = 10
            [[maps]]
            filter = "factory/+/+/data"
            pt = 1
            measurement = "machine"
            tags = { line = 2 }
            format = "json"
            timestamp_field = "time"
            timestamp_unit = "ms"
            id_field = "msg"
        "#;
        let config: BridgeConfig = toml::from_str(text).unwrap();
        assert_eq!(config.in_flight, 10);
        let map = &config.maps[0];
        assert_eq!(map.pt, Source::Level(1));
        assert_eq!(map.measurement, Source::Fixed("machine".into()));
        assert_eq!(map.tags["line"], 2);
        assert_eq!(map.timestamp_unit, TimeUnit::Ms);
        assert!(toml::from_str::<BridgeConfig>("in_flihgt = 3")
            .unwrap_err()
            .to_string()
            .contains("in_flihgt"));
    }

    #[test]
    fn credentials_from_keys_environment_and_url() {
        let url: dtaas_runtime::MqttUrl = "mqtt://urluser:urlpass@h:1".parse().unwrap();
        let no_env = |_: &str| None;
        let mut config: BridgeConfig = toml::from_str(r#"mqtt_username = "bridge""#).unwrap();
        config.resolve_credentials(&url, &no_env).unwrap();
        assert_eq!(config.mqtt_username.as_deref(), Some("bridge"));
        assert_eq!(config.mqtt_password.as_ref().unwrap().expose(), "urlpass");

        let mut config: BridgeConfig = toml::from_str(r#"mqtt_password = "hunter2""#).unwrap();
        let env = |name: &str| (name == "DTAAS_MQTT_USERNAME").then(|| "envuser".to_owned());
        config
            .resolve_credentials(&dtaas_runtime::MqttUrl::new("h", 1), &env)
            .unwrap();
        assert_eq!(config.mqtt_username.as_deref(), Some("envuser"));
        assert_eq!(config.mqtt_password.as_ref().unwrap().expose(), "hunter2");
        assert!(!format!("{config:?}").contains("hunter2"));

        let mut config: BridgeConfig = toml::from_str(r#"mqtt_password = "hunter2""#).unwrap();
        let err = config
            .resolve_credentials(&dtaas_runtime::MqttUrl::new("h", 1), &no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no user name") && !err.contains("hunter2"),
            "{err}"
        );

        let mut config = BridgeConfig::default();
        config
            .resolve_credentials(&dtaas_runtime::MqttUrl::new("h", 1), &no_env)
            .unwrap();
        assert!(config.mqtt_username.is_none() && config.mqtt_password.is_none());
    }

    #[test]
    fn protocol_parses_from_toml_and_text() {
        let parse = |text: &str| toml::from_str::<BridgeConfig>(text).map(|c| c.mqtt_protocol);
        assert_eq!(parse("").unwrap(), MqttProtocol::Auto);
        assert_eq!(
            parse(r#"mqtt_protocol = "auto""#).unwrap(),
            MqttProtocol::Auto
        );
        assert_eq!(parse(r#"mqtt_protocol = "5""#).unwrap(), MqttProtocol::V5);
        assert_eq!(parse("mqtt_protocol = 5").unwrap(), MqttProtocol::V5);
        assert_eq!(
            parse(r#"mqtt_protocol = "3.1.1""#).unwrap(),
            MqttProtocol::V311
        );
        assert!(parse(r#"mqtt_protocol = "3.1""#)
            .unwrap_err()
            .to_string()
            .contains("use auto, 5 or 3.1.1"));
        assert!(parse("mqtt_protocol = 3").is_err());
        assert_eq!("V3.1.1".parse(), Ok(MqttProtocol::V311));
        assert_eq!(" 5 ".parse(), Ok(MqttProtocol::V5));
        assert_eq!(MqttProtocol::V311.name(), "3.1.1");
    }
}
