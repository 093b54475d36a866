//! The NATS seeds of `DTAAS_NATS_URL` / `nats_url`: one URL or several (comma-separated,
//! or a TOML array). Each is checked when the configuration loads, so a typo is a
//! configuration error naming the bad seed, never retried as "unreachable". Credentials
//! are taken out of the URLs (async-nats does not send them) and never shown.

use std::str::FromStr;

use async_nats::ServerAddr;

use crate::secret::Secret;
use crate::userinfo::{percent_decode, redact_url, UrlError};

/// The seeds a worker connects to; the client learns the rest of a cluster from them.
#[derive(Debug, Clone)]
pub struct NatsUrls {
    /// The seeds without credentials, in the order given.
    servers: Vec<ServerAddr>,
    /// The seeds as written with passwords and tokens masked, for logs and errors.
    shown: Vec<String>,
    /// `nats://user:password@host`: the user and password of the URLs.
    pub user_password: Option<(String, Secret)>,
    /// `nats://token@host`: a token given as userinfo without a password.
    pub token: Option<Secret>,
}

impl NatsUrls {
    /// Parses seeds given one per item (a TOML array, or the parts of a comma list).
    pub fn from_seeds<S: AsRef<str>>(seeds: &[S]) -> Result<Self, UrlError> {
        let mut urls = Self {
            servers: Vec::new(),
            shown: Vec::new(),
            user_password: None,
            token: None,
        };
        let total = seeds.len();
        for (index, seed) in seeds.iter().enumerate() {
            urls.add(seed.as_ref().trim(), index + 1, total)?;
        }
        if urls.servers.is_empty() {
            return Err(UrlError(
                "no NATS URL given; set e.g. nats://127.0.0.1:4222".into(),
            ));
        }
        Ok(urls)
    }

    fn add(&mut self, seed: &str, number: usize, total: usize) -> Result<(), UrlError> {
        let shown = redact_url(seed);
        let which = if total > 1 {
            format!("NATS URL {number} of {total} ({shown:?})")
        } else {
            format!("NATS URL {shown:?}")
        };
        if seed.is_empty() {
            return Err(UrlError(format!(
                "{which} is empty; separate seeds with single commas"
            )));
        }
        let addr: ServerAddr = seed.parse().map_err(|e: std::io::Error| {
            UrlError(format!(
                "{which} is invalid: {e}; write it as nats://host:port (tls:// for TLS)"
            ))
        })?;
        if addr.host().is_empty() {
            return Err(UrlError(format!("{which} has no host")));
        }
        let user = addr
            .username()
            .map(|u| percent_decode(u, "user name", "NATS", &shown))
            .transpose()?;
        let password = addr
            .password()
            .map(|p| percent_decode(p, "password", "NATS", &shown).map(Secret::new))
            .transpose()?;
        match (user, password) {
            (Some(user), Some(password)) => {
                let pair = (user, password);
                if self.user_password.as_ref().is_some_and(|p| *p != pair) {
                    return Err(UrlError(format!("{which} has other credentials than the seeds before it; give the same user and password in every URL, or once as nats_user / nats_password")));
                }
                self.user_password = Some(pair);
            }
            (Some(token), None) => {
                let token = Secret::new(token);
                if self.token.as_ref().is_some_and(|t| *t != token) {
                    return Err(UrlError(format!(
                        "{which} has another token than the seeds before it"
                    )));
                }
                self.token = Some(token);
            }
            _ => {}
        }
        let mut url = addr.into_inner();
        // Cannot fail on a URL with a host, which every parsed seed has.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        self.servers.push(
            ServerAddr::from_url(url).map_err(|e| UrlError(format!("{which} is invalid: {e}")))?,
        );
        self.shown.push(shown);
        Ok(())
    }

    /// The seeds without credentials, for the client.
    pub fn servers(&self) -> &[ServerAddr] {
        &self.servers
    }

    /// Whether any seed is `tls://`.
    pub fn any_tls(&self) -> bool {
        self.servers.iter().any(ServerAddr::tls_required)
    }
}

impl FromStr for NatsUrls {
    type Err = UrlError;

    /// One URL, or several separated by commas (`%2C` for a comma in a password).
    fn from_str(text: &str) -> Result<Self, UrlError> {
        Self::from_seeds(&text.split(',').collect::<Vec<_>>())
    }
}

impl std::fmt::Display for NatsUrls {
    /// The seeds comma-separated, passwords and tokens masked.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown.join(","))
    }
}

impl Default for NatsUrls {
    fn default() -> Self {
        "nats://127.0.0.1:4222"
            .parse()
            .expect("the default URL parses")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_seeds() {
        let urls: NatsUrls = "nats://a:4222, nats://b:4223,tls://c".parse().unwrap();
        let ports: Vec<_> = urls
            .servers()
            .iter()
            .map(|s| (s.host(), s.port()))
            .collect();
        assert_eq!(ports, [("a", 4222), ("b", 4223), ("c", 4222)]);
        assert!(urls.any_tls());
        assert_eq!(urls.to_string(), "nats://a:4222,nats://b:4223,tls://c");
        let urls = NatsUrls::from_seeds(&["127.0.0.1:4222"]).unwrap();
        assert_eq!(urls.servers()[0].scheme(), "nats");
    }

    #[test]
    fn a_bad_seed_is_named() {
        let err = "nats://a:4222,nats://b:42x3"
            .parse::<NatsUrls>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("2 of 2") && err.contains("nats://b:42x3"),
            "{err}"
        );
        let err = "nats://a:4222,,nats://b"
            .parse::<NatsUrls>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 of 3") && err.contains("empty"), "{err}");
        let err = "http://a".parse::<NatsUrls>().unwrap_err().to_string();
        assert!(err.contains("http://a") && err.contains("scheme"), "{err}");
        let err = "nats://u:hunter2@b:99999"
            .parse::<NatsUrls>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("u:***@b") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn credentials_leave_the_urls() {
        let urls: NatsUrls = "nats://dtaas:s%40c@a:1,nats://dtaas:s%40c@b:2"
            .parse()
            .unwrap();
        let (user, password) = urls.user_password.clone().unwrap();
        assert_eq!((user.as_str(), password.expose()), ("dtaas", "s@c"));
        assert!(urls.servers().iter().all(|s| !s.has_user_pass()));
        assert_eq!(
            urls.to_string(),
            "nats://dtaas:***@a:1,nats://dtaas:***@b:2"
        );
        assert!(!format!("{urls:?}").contains("s@c") && !format!("{urls:?}").contains("s%40c"));
        let urls: NatsUrls = "nats://t0ken@a".parse().unwrap();
        assert_eq!(urls.token.unwrap().expose(), "t0ken");
        let err = "nats://u:one@a,nats://u:two@b"
            .parse::<NatsUrls>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("other credentials") && !err.contains("two"),
            "{err}"
        );
    }
}
