//! The MQTT broker address of `DTAAS_MQTT_URL` / `mqtt_url`, with its credentials kept
//! out of `Display` and errors.

use std::str::FromStr;

use crate::secret::Secret;
use crate::userinfo::{percent_decode, redact_url, UrlError};

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

impl FromStr for MqttUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
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
            return Err(UrlError(format!(
                "MQTT URL {shown:?} must look like mqtt://host:port or mqtts://host:port"
            )));
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, rest),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => {
                let port = port.parse().map_err(|_| {
                    UrlError(format!("MQTT URL {shown:?} has an invalid port {port:?}"))
                })?;
                (host, port)
            }
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(UrlError(format!("MQTT URL {shown:?} has no host")));
        }
        let mut parsed = Self::new(host, port);
        parsed.tls = tls;
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            let user = percent_decode(user, "user name", "MQTT", &shown)?;
            if user.is_empty() {
                return Err(UrlError(format!(
                    "MQTT URL {shown:?} has credentials without a user name"
                )));
            }
            parsed.username = Some(user);
            parsed.password = password
                .map(|p| percent_decode(p, "password", "MQTT", &shown).map(Secret::new))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_url_forms() {
        assert_eq!("mqtt://h".parse::<MqttUrl>().unwrap().port, 1883);
        assert!("mqtt://h:x"
            .parse::<MqttUrl>()
            .unwrap_err()
            .to_string()
            .contains("port"));
        assert!("mqtt://:1"
            .parse::<MqttUrl>()
            .unwrap_err()
            .to_string()
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
            let err = bad.parse::<MqttUrl>().unwrap_err().to_string();
            assert!(!err.contains("hunter2") && err.contains(":***@"), "{err}");
        }
        let err = crate::Config::from_toml("", "defaults", &|n: &str| {
            (n == "DTAAS_MQTT_URL").then(|| "mqtp://u:hunter2@h".to_owned())
        })
        .unwrap_err()
        .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
