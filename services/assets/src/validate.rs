//! Checks of a `put` before anything is stored, and the content digest of a version.
//!
//! Every check names the field that is wrong; a request that fails one changes nothing.

use std::collections::BTreeSet;

use dtaas_schemas::asset::{AssetFile, Interface, Param, Port, Run, LIFECYCLE_PHASES};
use dtaas_schemas::asset_address::validate_name;
use dtaas_schemas::asset_api::PutRequest;
use dtaas_schemas::asset_store::{hex, is_sha256};
use dtaas_schemas::ErrorReply;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::bad_request;

/// Longest file path inside an asset.
const PATH_MAX: usize = 1024;
/// Longest description.
const DESCRIPTION_MAX: usize = 64 * 1024;

/// A put, path or run section that breaks a rule; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<Invalid> for ErrorReply {
    fn from(invalid: Invalid) -> Self {
        bad_request(invalid.0)
    }
}

/// Checks a relative file path: `/`-separated, no empty, `.` or `..` component, no
/// leading `/`, no backslash or NUL.
pub fn validate_path(path: &str) -> Result<(), Invalid> {
    let why = if path.is_empty() {
        "it is empty"
    } else if path.len() > PATH_MAX {
        "it is longer than 1024 bytes"
    } else if path.contains('\0') {
        "it contains NUL"
    } else if path.contains('\\') {
        "it contains a backslash; use /"
    } else if path.starts_with('/') {
        "it is absolute; paths are relative to the asset"
    } else if path.split('/').any(|c| c == "..") {
        "it contains `..`; paths may not leave the asset"
    } else if path.split('/').any(|c| c.is_empty() || c == ".") {
        "it has an empty or `.` component"
    } else {
        return Ok(());
    };
    Err(Invalid(format!("file path {path:?} is invalid: {why}")))
}

/// Checks everything in `req` that can be checked without the stores; sorts its files.
pub fn put(req: &mut PutRequest, max_file_size: u64) -> Result<(), ErrorReply> {
    let bad = |m: String| bad_request(m);
    validate_name("asset name", &req.name).map_err(|e| bad(e.to_string()))?;
    if req.version == Some(0) {
        return Err(bad("`version` must be 1 or more".into()));
    }
    if req.description.len() > DESCRIPTION_MAX {
        return Err(bad("`description` is longer than 64 KiB".into()));
    }
    for tag in &req.tags {
        validate_name("tag", tag).map_err(|e| bad(e.to_string()))?;
    }
    if let Some(original) = &req.original_name {
        if original.is_empty() || original.contains(['/', '\\', '\0']) || original == ".." {
            return Err(bad(format!(
                "`original_name` {original:?} must be a plain file or folder name"
            )));
        }
    }
    files(&mut req.files, max_file_size)?;
    interface(&req.interface)?;
    if let Some(run) = &req.run {
        run_section(run, &req.files)?;
    }
    Ok(())
}

fn files(files: &mut [AssetFile], max_file_size: u64) -> Result<(), Invalid> {
    files.sort_by(|a, b| a.path.cmp(&b.path));
    for (i, file) in files.iter().enumerate() {
        validate_path(&file.path)?;
        if i > 0 && files[i - 1].path == file.path {
            return Err(Invalid(format!(
                "file path {:?} is listed twice",
                file.path
            )));
        }
        if !is_sha256(&file.sha256) {
            return Err(Invalid(format!(
                "file {:?}: `sha256` must be 64 lowercase hex digits",
                file.path
            )));
        }
        if file.size > max_file_size {
            return Err(Invalid(too_large(&file.path, file.size, max_file_size)));
        }
        if file.mode & !0o7777 != 0 {
            return Err(Invalid(format!(
                "file {:?}: `mode` {:o} has bits beyond the permission bits (0o7777)",
                file.path, file.mode
            )));
        }
    }
    // A file may not also be a folder of other files (`a` and `a/b`).
    let paths: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    for file in files.iter() {
        let mut prefix = file.path.as_str();
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            if paths.contains(parent) {
                return Err(Invalid(format!(
                    "file path {:?} is inside {parent:?}, which is a file",
                    file.path
                )));
            }
            prefix = parent;
        }
    }
    Ok(())
}

/// The message for a file over the maximum size.
pub fn too_large(path: &str, size: u64, max: u64) -> String {
    format!(
        "file {path:?} is {size} bytes; the library takes files up to {max} bytes \
         (`max_file_size` in [assets], DTAAS_ASSETS_MAX_FILE_SIZE)"
    )
}

fn ports(what: &str, ports: &[Port]) -> Result<(), Invalid> {
    let mut seen = BTreeSet::new();
    for port in ports {
        validate_name("port name", &port.name).map_err(|e| Invalid(format!("{what}: {e}")))?;
        if !seen.insert(port.name.as_str()) {
            return Err(Invalid(format!(
                "{what}: {:?} is declared twice",
                port.name
            )));
        }
    }
    Ok(())
}

fn param(p: &Param) -> Result<(), Invalid> {
    use dtaas_schemas::asset::ValueType;
    let numeric = matches!(p.value_type, ValueType::Number | ValueType::Integer);
    if !numeric && (p.min.is_some() || p.max.is_some()) {
        return Err(Invalid(format!(
            "params: {:?} is {} and cannot have `min` or `max`",
            p.name,
            p.value_type.as_str()
        )));
    }
    if let (Some(min), Some(max)) = (p.min, p.max) {
        if min > max {
            return Err(Invalid(format!(
                "params: {:?} has `min` {min} above `max` {max}",
                p.name
            )));
        }
    }
    if let Some(default) = &p.default {
        if !p.value_type.accepts(default) {
            return Err(Invalid(format!(
                "params: the default of {:?} is {default}, not of type {}",
                p.name,
                p.value_type.as_str()
            )));
        }
        if let Some(v) = default.as_f64() {
            if p.min.is_some_and(|min| v < min) || p.max.is_some_and(|max| v > max) {
                return Err(Invalid(format!(
                    "params: the default {v} of {:?} is outside its range",
                    p.name
                )));
            }
        }
    }
    Ok(())
}

fn interface(interface: &Interface) -> Result<(), Invalid> {
    ports("inputs", &interface.inputs)?;
    ports("outputs", &interface.outputs)?;
    let mut seen = BTreeSet::new();
    for p in &interface.params {
        validate_name("parameter name", &p.name).map_err(|e| Invalid(format!("params: {e}")))?;
        if !seen.insert(p.name.as_str()) {
            return Err(Invalid(format!("params: {:?} is declared twice", p.name)));
        }
        param(p)?;
    }
    Ok(())
}

fn run_section(run: &Run, files: &[AssetFile]) -> Result<(), Invalid> {
    if run.command.iter().any(|a| a.contains('\0')) {
        return Err(Invalid("run.command: an argument contains NUL".into()));
    }
    if run.command.first().is_some_and(|p| p.is_empty()) {
        return Err(Invalid("run.command: the program is empty".into()));
    }
    for (phase, script) in &run.lifecycle {
        if !LIFECYCLE_PHASES.contains(&phase.as_str()) {
            return Err(Invalid(format!(
                "run.lifecycle: unknown phase {phase:?}; phases are {}",
                LIFECYCLE_PHASES.join(", ")
            )));
        }
        if !files.iter().any(|f| &f.path == script) {
            return Err(Invalid(format!(
                "run.lifecycle: the {phase} script {script:?} is not among the files"
            )));
        }
    }
    Ok(())
}

/// SHA-256 over everything of a version but its number, time and shared flag: two
/// puts with equal digests hold the same content.
pub fn content_digest(req: &PutRequest) -> String {
    #[derive(Serialize)]
    struct Content<'a> {
        kind: &'a str,
        description: &'a str,
        tags: &'a [String],
        files: &'a [AssetFile],
        interface: &'a Interface,
        run: &'a Option<Run>,
        original_name: &'a Option<String>,
    }
    let content = Content {
        kind: req.kind.as_str(),
        description: &req.description,
        tags: &req.tags,
        files: &req.files,
        interface: &req.interface,
        run: &req.run,
        original_name: &req.original_name,
    };
    let json = serde_json::to_vec(&content).unwrap_or_default();
    hex(&Sha256::digest(&json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtaas_schemas::codec::decode;

    fn request(json: &str) -> PutRequest {
        decode(None, json.as_bytes()).unwrap()
    }

    const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn bad_paths_are_named() {
        for (path, why) in [
            ("../x", ".."),
            ("a/../../x", ".."),
            ("/etc/passwd", "absolute"),
            ("a\\b", "backslash"),
            ("a\0b", "NUL"),
            ("a//b", "empty"),
            ("", "empty"),
        ] {
            let err = validate_path(path).unwrap_err().to_string();
            assert!(err.contains(why), "{path:?}: {err}");
        }
        validate_path("lifecycle/create").unwrap();
    }

    #[test]
    fn put_checks_name_the_field() {
        let ok = format!(
            r#"{{"name":"pid","kind":"function","files":[{{"path":"b","size":1,"sha256":"{SHA}"}},{{"path":"a","size":2,"sha256":"{SHA}"}}],"run":{{"command":["./a"],"lifecycle":{{"create":"a"}}}}}}"#
        );
        let mut req = request(&ok);
        put(&mut req, 10).unwrap();
        assert_eq!(req.files[0].path, "a", "sorted");
        for (json, expected) in [
            (ok.replace("\"pid\"", "\"p.d\""), "asset name"),
            (ok.replace("\"size\":2", "\"size\":20"), "up to 10 bytes"),
            (ok.replace("\"path\":\"b\"", "\"path\":\"a\""), "twice"),
            (ok.replace("\"create\"", "\"launch\""), "unknown phase"),
            (
                ok.replace("\"create\":\"a\"", "\"create\":\"c\""),
                "not among",
            ),
            (ok.replace(SHA, "xyz"), "sha256"),
            (
                ok.replace("\"path\":\"b\"", "\"path\":\"a/b\""),
                "which is a file",
            ),
        ] {
            let err = put(&mut request(&json), 10).unwrap_err();
            assert!(err.error.message.contains(expected), "{json}: {err}");
        }
        let params = r#"{"name":"x","kind":"model","interface":{"params":[{"name":"k","type":"number","default":20,"min":0,"max":10}]}}"#;
        let err = put(&mut request(params), 10).unwrap_err();
        assert!(err.error.message.contains("outside its range"), "{err}");
    }

    #[test]
    fn digest_ignores_file_order_once_sorted() {
        let a = format!(
            r#"{{"name":"x","kind":"data","files":[{{"path":"a","size":1,"sha256":"{SHA}"}},{{"path":"b","size":1,"sha256":"{SHA}"}}]}}"#
        );
        let b = format!(
            r#"{{"name":"x","kind":"data","files":[{{"path":"b","size":1,"sha256":"{SHA}"}},{{"path":"a","size":1,"sha256":"{SHA}"}}]}}"#
        );
        let (mut a, mut b) = (request(&a), request(&b));
        put(&mut a, 10).unwrap();
        put(&mut b, 10).unwrap();
        assert_eq!(content_digest(&a), content_digest(&b));
        b.description = "changed".into();
        assert_ne!(content_digest(&a), content_digest(&b));
    }
}
