//! How a worker proves who it is to NATS, and which CA it trusts for `tls://`: user and
//! password (in the URLs or as `nats_user` / `nats_password`), a token, an nkey seed
//! file or a credentials file. Exactly one way may be configured; files are read when
//! connecting, and a file that is missing or unreadable is a configuration error at
//! once, never retried as "unreachable".

use std::path::PathBuf;

use async_nats::ConnectOptions;

use crate::nats_url::NatsUrls;
use crate::secret::Secret;

/// The NATS authentication settings of the configuration, after environment overrides.
#[derive(Debug, Clone, Default)]
pub struct NatsAuth {
    /// `DTAAS_NATS_USER`, key `nats_user`; wins over the user of the URLs.
    pub user: Option<String>,
    /// `DTAAS_NATS_PASSWORD`, key `nats_password` (better in the environment than the
    /// file); wins over the password of the URLs.
    pub password: Option<Secret>,
    /// `DTAAS_NATS_TOKEN`, key `nats_token`: a server `authorization { token }`.
    pub token: Option<Secret>,
    /// `DTAAS_NATS_NKEY`, key `nats_nkey`: a file holding an nkey seed (`SU…`).
    pub nkey: Option<PathBuf>,
    /// `DTAAS_NATS_CREDS`, key `nats_creds`: a credentials file (JWT and nkey seed).
    pub creds: Option<PathBuf>,
    /// `DTAAS_NATS_CA_FILE`, key `nats_ca_file`: CA certificates (PEM) that sign the
    /// servers' certificates, for `tls://` seeds; default: the system's.
    pub ca_file: Option<PathBuf>,
}

/// The login settings contradict each other, or a file they name cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// `nats_user` without a password, a password without a user, or several logins.
    #[error("{0}")]
    Contradiction(String),
    #[error("cannot read the NATS nkey seed file {} (nats_nkey): {source}", path.display())]
    ReadNkey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the NATS nkey file {} (nats_nkey) holds no seed (a line starting with S, e.g. SUA…)", path.display())]
    NoSeed { path: PathBuf },
    #[error("cannot use the NATS credentials file {} (nats_creds): {source}", path.display())]
    Creds {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The one way of logging in that the settings select.
#[derive(Debug, Clone, PartialEq)]
pub enum Login {
    /// No credentials: a server without authorization.
    Anonymous,
    UserPassword(String, Secret),
    Token(Secret),
    /// The path of a file holding an nkey seed.
    Nkey(PathBuf),
    /// The path of a credentials file.
    Creds(PathBuf),
}

impl NatsAuth {
    /// The login the settings and the URLs' userinfo select; an error names the
    /// settings that contradict each other.
    pub fn login(&self, urls: &NatsUrls) -> Result<Login, LoginError> {
        let user_password = match (&self.user, &self.password) {
            (Some(user), Some(password)) => Some((user.clone(), password.clone())),
            (Some(user), None) => match &urls.user_password {
                Some((_, password)) => Some((user.clone(), password.clone())),
                None => return Err(LoginError::Contradiction("nats_user (DTAAS_NATS_USER) is set without a password; set nats_password (DTAAS_NATS_PASSWORD)".into())),
            },
            (None, Some(_)) => match &urls.user_password {
                Some((user, _)) => Some((user.clone(), self.password.clone().unwrap_or_default())),
                None => return Err(LoginError::Contradiction("nats_password (DTAAS_NATS_PASSWORD) is set without a user; set nats_user (DTAAS_NATS_USER)".into())),
            },
            (None, None) => urls.user_password.clone(),
        };
        let token = self.token.clone().or_else(|| urls.token.clone());
        let mut chosen = Vec::new();
        if let Some((user, password)) = user_password {
            chosen.push((
                "nats_user/nats_password",
                Login::UserPassword(user, password),
            ));
        }
        if let Some(token) = token {
            chosen.push(("nats_token", Login::Token(token)));
        }
        if let Some(path) = &self.nkey {
            chosen.push(("nats_nkey", Login::Nkey(path.clone())));
        }
        if let Some(path) = &self.creds {
            chosen.push(("nats_creds", Login::Creds(path.clone())));
        }
        match chosen.len() {
            0 => Ok(Login::Anonymous),
            1 => Ok(chosen.remove(0).1),
            _ => {
                let names: Vec<_> = chosen.iter().map(|(name, _)| *name).collect();
                Err(LoginError::Contradiction(format!(
                    "several NATS logins are configured ({}, counting credentials in nats_url); keep one",
                    names.join(", ")
                )))
            }
        }
    }
}

impl Login {
    /// `options` with this login, reading the nkey seed or credentials file.
    pub async fn apply(&self, options: ConnectOptions) -> Result<ConnectOptions, LoginError> {
        Ok(match self {
            Self::Anonymous => options,
            Self::UserPassword(user, password) => {
                options.user_and_password(user.clone(), password.expose().to_owned())
            }
            Self::Token(token) => options.token(token.expose().to_owned()),
            Self::Nkey(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| LoginError::ReadNkey {
                        path: path.clone(),
                        source,
                    })?;
                let seed = text
                    .lines()
                    .map(str::trim)
                    .find(|line| line.starts_with('S') && !line.is_empty())
                    .ok_or_else(|| LoginError::NoSeed { path: path.clone() })?;
                options.nkey(seed.to_owned())
            }
            Self::Creds(path) => {
                options
                    .credentials_file(path)
                    .await
                    .map_err(|source| LoginError::Creds {
                        path: path.clone(),
                        source,
                    })?
            }
        })
    }

    /// Who logs in, for log lines: the user name or the kind of login, never a secret.
    pub fn describe(&self) -> String {
        match self {
            Self::Anonymous => "no credentials".into(),
            Self::UserPassword(user, _) => format!("user {user}"),
            Self::Token(_) => "a token".into(),
            Self::Nkey(path) => format!("the nkey in {}", path.display()),
            Self::Creds(path) => format!("the credentials in {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(text: &str) -> NatsUrls {
        text.parse().unwrap()
    }

    #[test]
    fn one_login_is_chosen() {
        let auth = NatsAuth::default();
        assert_eq!(auth.login(&urls("nats://h")).unwrap(), Login::Anonymous);
        assert_eq!(
            auth.login(&urls("nats://u:p@h")).unwrap(),
            Login::UserPassword("u".into(), Secret::new("p"))
        );
        let auth = NatsAuth {
            user: Some("dtaas".into()),
            password: Some(Secret::new("pw")),
            ..NatsAuth::default()
        };
        assert_eq!(
            auth.login(&urls("nats://u:p@a,nats://b")).unwrap(),
            Login::UserPassword("dtaas".into(), Secret::new("pw"))
        );
        let auth = NatsAuth {
            password: Some(Secret::new("env")),
            ..NatsAuth::default()
        };
        assert_eq!(
            auth.login(&urls("nats://u:p@h")).unwrap(),
            Login::UserPassword("u".into(), Secret::new("env"))
        );
    }

    #[test]
    fn contradictions_are_errors() {
        let auth = NatsAuth {
            token: Some(Secret::new("hunter2")),
            creds: Some("/x.creds".into()),
            ..NatsAuth::default()
        };
        let err = auth.login(&urls("nats://h")).unwrap_err().to_string();
        assert!(
            err.contains("nats_token, nats_creds") && !err.contains("hunter2"),
            "{err}"
        );
        let auth = NatsAuth {
            user: Some("u".into()),
            ..NatsAuth::default()
        };
        assert!(auth
            .login(&urls("nats://h"))
            .unwrap_err()
            .to_string()
            .contains("DTAAS_NATS_PASSWORD"));
    }
}
