//! The layout of the asset library in JetStream: KV `dtaas-assets` and object store
//! `dtaas-assets`. Other workers (lifecycle, exec) may read both directly.
//!
//! | where | key / object name | value |
//! |---|---|---|
//! | KV `dtaas-assets` | `v.<owner>.<name>.<version>` | `AssetMeta` (JSON), immutable |
//! | KV `dtaas-assets` | `i.<owner>.<name>` | `AssetIndex` (JSON): latest version, shared flag |
//! | object store `dtaas-assets` | `sha256/<hex>` | a file's content, by its SHA-256 |
//! | object store `dtaas-assets` | `part/<owner>/<hex>/<offset>` | an upload in progress |
//!
//! `<owner>` is the user name with every byte outside `A–Z a–z 0–9 - _` written as
//! `=XX` (hex), because KV keys allow fewer characters than subject tokens; names are
//! already restricted to those characters.

use serde::{Deserialize, Serialize};

use crate::asset::AssetKind;

/// Prefix of version keys.
const VERSION_PREFIX: &str = "v";
/// Prefix of index keys.
const INDEX_PREFIX: &str = "i";

/// `owner` as a KV key token.
pub fn key_token(owner: &str) -> String {
    let mut out = String::with_capacity(owner.len());
    for b in owner.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// KV key of one version's `AssetMeta`.
pub fn meta_key(owner: &str, name: &str, version: u64) -> String {
    format!("{VERSION_PREFIX}.{}.{name}.{version}", key_token(owner))
}

/// KV key of an asset's `AssetIndex`.
pub fn index_key(owner: &str, name: &str) -> String {
    format!("{INDEX_PREFIX}.{}.{name}", key_token(owner))
}

/// KV key filter matching every index (every asset of every owner).
pub fn index_all() -> String {
    format!("{INDEX_PREFIX}.>")
}

/// Object name of a file's content: `sha256/<hex>`.
pub fn object_name(sha256: &str) -> String {
    format!("sha256/{sha256}")
}

/// Object name of an uploaded part of a file not yet complete.
pub fn part_name(owner: &str, sha256: &str, offset: u64) -> String {
    format!("part/{}/{sha256}/{offset}", key_token(owner))
}

/// One asset, all versions: what `list` answers from without reading every version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetIndex {
    pub owner: String,
    pub name: String,
    /// The kind of the latest version.
    pub kind: AssetKind,
    /// The highest version; versions 1..=latest exist unless deleted.
    pub latest: u64,
    /// Every version that exists, ascending.
    pub versions: Vec<u64>,
    /// Shared with every user (all versions).
    #[serde(default)]
    pub shared: bool,
    /// The latest version's description.
    #[serde(default)]
    pub description: String,
    /// The latest version's tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Nanoseconds since the Unix epoch of the last change.
    #[serde(default)]
    pub updated: i64,
}

/// Whether `text` is a SHA-256 as the library writes it: 64 lowercase hex digits.
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lowercase hex of `bytes` (a digest).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names() {
        assert_eq!(meta_key("alice", "pid", 3), "v.alice.pid.3");
        assert_eq!(index_key("a+b@x", "pid"), "i.a=2Bb=40x.pid");
        assert_eq!(object_name("ab"), "sha256/ab");
        assert_eq!(part_name("bob", "ab", 524288), "part/bob/ab/524288");
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert!(is_sha256(&"a".repeat(64)));
        assert!(!is_sha256(&"A".repeat(64)));
    }
}
