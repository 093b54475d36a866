//! Certificates for TLS tests, made with `openssl` in a directory: a CA, another CA
//! (whose trust must fail), and a server certificate for 127.0.0.1 / localhost signed
//! by the first.

use std::path::{Path, PathBuf};

use crate::process::require_binary;

/// The PEM files `Certs::make` wrote.
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA that signed the server certificate.
    pub ca: PathBuf,
    /// A CA that signed nothing here: trusting only it must fail.
    pub other_ca: PathBuf,
    /// The server certificate (127.0.0.1, localhost) and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    /// Makes both CAs and the server certificate in `dir`.
    pub fn make(dir: &Path) -> anyhow::Result<Self> {
        require_binary("openssl", "openssl")?;
        let ca = make_ca(dir, "ca")?;
        let other_ca = make_ca(dir, "other-ca")?;
        let (cert, key) = make_server_cert(dir, "ca")?;
        Ok(Self {
            ca,
            other_ca,
            cert,
            key,
        })
    }
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// `openssl req` arguments for a new P-256 key, unencrypted, written to `key`.
fn new_ec_key(key: &str) -> [&str; 8] {
    [
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
    ]
}

/// A self-signed CA `<name>.pem` (key `<name>.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let key = format!("{name}.key");
    let pem = format!("{name}.pem");
    let subject = format!("/CN=dtaas test {name}");
    let ca = [
        "-x509",
        "-out",
        &pem,
        "-days",
        "2",
        "-subj",
        &subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ];
    openssl(dir, &[&new_ec_key(&key)[..], &ca].concat())?;
    Ok(dir.join(pem))
}

/// A server certificate for 127.0.0.1 / localhost signed by the CA `ca`; returns
/// (certificate, key).
fn make_server_cert(dir: &Path, ca: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let csr = ["-out", "server.csr", "-subj", "/CN=localhost"];
    openssl(dir, &[&new_ec_key("server.key")[..], &csr].concat())?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    )?;
    Ok((dir.join("server.pem"), dir.join("server.key")))
}
