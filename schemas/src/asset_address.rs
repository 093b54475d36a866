//! Asset names and addresses: `owner/name@version`, `owner/name` (latest version) or
//! `name` (the caller's own asset).
//!
//! A name is 1–100 characters of `A–Z a–z 0–9 - _`, not starting with `-`: a subject
//! token that is also a valid KV key token and a safe folder name. An entry of a DTaaS
//! layout whose name is not one becomes one by [`name_token`], and the original name
//! is kept in the metadata. Versions are the integers 1, 2, 3, … the library assigns.

use std::fmt;
use std::str::FromStr;

/// Longest asset name.
pub const NAME_MAX: usize = 100;

/// An address, name or version is not acceptable; the message names the part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {text:?} is invalid: {why}")]
pub struct AddressError {
    pub what: &'static str,
    pub text: String,
    pub why: String,
}

fn error(what: &'static str, text: &str, why: impl Into<String>) -> AddressError {
    AddressError {
        what,
        text: text.to_owned(),
        why: why.into(),
    }
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Checks an asset name (or tag, parameter, port name: `what` says which).
pub fn validate_name(what: &'static str, name: &str) -> Result<(), AddressError> {
    if name.is_empty() {
        return Err(error(what, name, "it is empty"));
    }
    if name.len() > NAME_MAX {
        return Err(error(
            what,
            name,
            format!("it is longer than {NAME_MAX} characters"),
        ));
    }
    if let Some(c) = name.chars().find(|&c| !name_char(c)) {
        return Err(error(
            what,
            name,
            format!("it contains {c:?}; use only A-Z a-z 0-9 - _"),
        ));
    }
    if name.starts_with('-') {
        return Err(error(what, name, "it starts with '-'"));
    }
    Ok(())
}

/// The documented rule that makes any entry name a valid asset name: every character
/// outside `A–Z a–z 0–9 - _` becomes `_`, a leading `-` becomes `_`, and the result
/// is cut to 100 characters. `MassSpringDamper1.fmu` → `MassSpringDamper1_fmu`.
pub fn name_token(original: &str) -> String {
    let mut token: String = original
        .chars()
        .map(|c| if name_char(c) { c } else { '_' })
        .take(NAME_MAX)
        .collect();
    if token.starts_with('-') {
        token.replace_range(..1, "_");
    }
    if token.is_empty() {
        token.push('_');
    }
    token
}

/// Parses a version: a decimal integer from 1.
pub fn parse_version(text: &str) -> Result<u64, AddressError> {
    match text.parse::<u64>() {
        Ok(v) if v >= 1 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(v),
        _ => Err(error(
            "version",
            text,
            "versions are whole numbers from 1 (the library numbers them 1, 2, 3, …)",
        )),
    }
}

/// Where an asset is: owner (the caller's when absent), name and version (the
/// latest when absent).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssetAddress {
    pub owner: Option<String>,
    pub name: String,
    pub version: Option<u64>,
}

impl AssetAddress {
    /// The owner, or `caller` when the address names none.
    pub fn owner_or<'a>(&'a self, caller: &'a str) -> &'a str {
        self.owner.as_deref().unwrap_or(caller)
    }

    /// The same address with the owner filled in from `caller`.
    pub fn with_owner(mut self, caller: &str) -> Self {
        self.owner.get_or_insert_with(|| caller.to_owned());
        self
    }
}

impl FromStr for AssetAddress {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, AddressError> {
        let (rest, version) = match text.rsplit_once('@') {
            Some((rest, version)) => (rest, Some(parse_version(version)?)),
            None => (text, None),
        };
        let (owner, name) = match rest.split_once('/') {
            Some((owner, name)) => {
                crate::subject::validate_token("owner", owner)
                    .map_err(|e| error("asset address", text, e.to_string()))?;
                if owner.contains('@') {
                    return Err(error("asset address", text, "the owner contains '@'"));
                }
                (Some(owner.to_owned()), name)
            }
            None => (None, rest),
        };
        validate_name("asset name", name)
            .map_err(|e| error("asset address", text, e.to_string()))?;
        Ok(Self {
            owner,
            name: name.to_owned(),
            version,
        })
    }
}

impl fmt::Display for AssetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(owner) = &self.owner {
            write!(f, "{owner}/")?;
        }
        f.write_str(&self.name)?;
        if let Some(version) = self.version {
            write!(f, "@{version}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms() {
        let a: AssetAddress = "alice/pid@3".parse().unwrap();
        assert_eq!(
            (a.owner.as_deref(), a.name.as_str(), a.version),
            (Some("alice"), "pid", Some(3))
        );
        assert_eq!(a.to_string(), "alice/pid@3");
        let a: AssetAddress = "alice/pid".parse().unwrap();
        assert_eq!(a.version, None);
        let a: AssetAddress = "pid".parse().unwrap();
        assert_eq!(a.owner_or("bob"), "bob");
        assert_eq!(a.with_owner("bob").to_string(), "bob/pid");
        let a: AssetAddress = "pid@12".parse().unwrap();
        assert_eq!(a.version, Some(12));
    }

    #[test]
    fn bad_addresses_are_named() {
        for (text, part) in [
            ("", "empty"),
            ("alice/", "empty"),
            ("/pid", "owner"),
            ("pid@", "version"),
            ("pid@0", "version"),
            ("pid@1.2.0", "version"),
            ("pid@+1", "version"),
            ("alice/p.d", "'.'"),
            ("a b/pid", "whitespace"),
            ("alice/x/y", "'/'"),
            ("-pid", "'-'"),
        ] {
            let err = text.parse::<AssetAddress>().unwrap_err().to_string();
            assert!(err.contains(part), "{text}: {err}");
        }
    }

    #[test]
    fn entry_names_become_tokens() {
        assert_eq!(name_token("MassSpringDamper1.fmu"), "MassSpringDamper1_fmu");
        assert_eq!(name_token("-x y"), "_x_y");
        assert_eq!(name_token(""), "_");
        assert_eq!(name_token(&"a".repeat(300)).len(), NAME_MAX);
        validate_name("asset name", &name_token("ü ber.fmu")).unwrap();
    }
}
