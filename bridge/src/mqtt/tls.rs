//! TLS of the MQTT connection (`mqtts://`): a rustls client configuration with the
//! ring crypto provider (as async-nats uses), trusting the CA certificates of
//! `mqtt_ca_file` (PEM), or the system's when there is none.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// A CA file (`mqtt_ca_file`) that cannot be used; the bridge does not start.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the MQTT CA file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("the MQTT CA file {} holds no PEM certificate", path.display())]
    Empty { path: PathBuf },
    #[error("the MQTT CA file {} has an invalid certificate: {source}", path.display())]
    Invalid {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot set up TLS: {0}")]
    Setup(#[source] rustls::Error),
    /// `url` is shown as `Display` shows it: without the password.
    #[error(
        "an MQTT CA file is set ([bridge] mqtt_ca_file, DTAAS_MQTT_CA_FILE) but the \
         MQTT URL {url} is not mqtts://"
    )]
    NotTls { url: String },
}

/// The client configuration for a TLS connection; `ca_file` replaces the system's
/// CA certificates.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|source| TlsError::Read {
                    path: path.to_owned(),
                    source,
                })?;
            if certs.is_empty() {
                return Err(TlsError::Empty {
                    path: path.to_owned(),
                });
            }
            for cert in certs {
                roots.add(cert).map_err(|source| TlsError::Invalid {
                    path: path.to_owned(),
                    source,
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                tracing::warn!(
                    errors = ?native.errors,
                    "No system CA certificates found and no mqtt_ca_file set: the MQTT \
                     broker's certificate cannot be verified."
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_ca_file_is_named() {
        let dir = std::env::temp_dir().join(format!("dtaas-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = format!("{:#}", client_config(Some(&missing)).unwrap_err());
        assert!(err.contains("missing.pem"), "{err}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = format!("{:#}", client_config(Some(&empty)).unwrap_err());
        assert!(err.contains("no PEM certificate"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
