//! The userinfo of a URL (`user:password@`): percent-decoding, and the masked form
//! shown in logs and errors, shared by the MQTT and the NATS URLs.

/// A NATS or MQTT URL that cannot be used. The message names the URL with its
/// password masked, the part that is wrong and how to write it; never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(pub String);

/// `url` with the password of its userinfo replaced by `***`, and a userinfo without
/// a password (a NATS token) replaced whole, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None if scheme.starts_with("nats") || scheme == "tls" => {
                format!("{scheme}://***@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Decodes `%XX` escapes of the `what` ("user name", "password") of the `kind` URL
/// shown (masked) as `shown`; errors name the part, never its value.
pub fn percent_decode(text: &str, what: &str, kind: &str, shown: &str) -> Result<String, UrlError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| {
                    UrlError(format!(
                        "{kind} URL {shown:?} has an invalid %-escape in the {what}"
                    ))
                })?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| {
        UrlError(format!(
            "{kind} URL {shown:?} has a {what} that is not UTF-8 once decoded"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens_are_masked() {
        assert_eq!(redact_url("mqtt://u:pw@h:1"), "mqtt://u:***@h:1");
        assert_eq!(redact_url("nats://u:p@w@h:1"), "nats://u:***@h:1");
        assert_eq!(redact_url("nats://s3cret@h:1"), "nats://***@h:1");
        assert_eq!(redact_url("tls://h:1"), "tls://h:1");
        assert_eq!(redact_url("mqtt://user@h"), "mqtt://user@h");
    }

    #[test]
    fn escapes_are_decoded_and_errors_hide_values() {
        assert_eq!(
            percent_decode("s%40c", "password", "NATS", "x").unwrap(),
            "s@c"
        );
        let err = percent_decode("hunter2%zz", "password", "NATS", "nats://u:***@h")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("password") && !err.contains("hunter2"),
            "{err}"
        );
    }
}
