//! TLS of the MQTT connection (`mqtts://`): a rustls client configuration with the
//! ring crypto provider (as async-nats uses), trusting the CA certificates of
//! `mqtt_ca_file` (PEM), or the system's when there is none.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// The client configuration for a TLS connection; `ca_file` replaces the system's
/// CA certificates.
pub fn client_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("cannot read the MQTT CA file {}", path.display()))?;
            anyhow::ensure!(
                !certs.is_empty(),
                "the MQTT CA file {} holds no PEM certificate",
                path.display()
            );
            for cert in certs {
                roots.add(cert).with_context(|| {
                    format!(
                        "the MQTT CA file {} has an invalid certificate",
                        path.display()
                    )
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
        .context("TLS protocol versions")?
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
