//! The DTaaS folder layout, both ways: `data/`, `models/`, `functions/`, `tools/`,
//! `digital_twins/` (and the same under `common/`, imported as shared), one asset per
//! entry, an entry being a folder or a single file.
//!
//! Rules: entry names that are not valid asset names become one by
//! `asset_address::name_token` (the original is kept and written back on export);
//! `.gitkeep` files are skipped; symlinks are refused (they could leave the tree);
//! an optional `asset.toml` manifest declares what the folder cannot say, and stays
//! one of the asset's files, so export writes it back byte for byte. Descriptions
//! come from the manifest, else `description.md`, else the first paragraph of
//! `README.md`. A DT's `lifecycle/<phase>` scripts become its `run.lifecycle`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dtaas_schemas::asset::{AssetKind, AssetMeta, Interface, Param, Port, Run, LIFECYCLE_PHASES};
use dtaas_schemas::asset_address::{name_token, validate_name};
use serde::{Deserialize, Serialize};

/// The manifest file of an asset folder.
pub const MANIFEST: &str = "asset.toml";
/// The folder DTaaS keeps team-shared assets in.
pub const COMMON: &str = "common";
/// Placeholder files that keep empty folders in git.
const PLACEHOLDERS: [&str; 1] = [".gitkeep"];

/// `asset.toml`: what a folder alone cannot say.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<AssetKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<ManifestRun>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Port>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<Port>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
}

/// `[run]` of a manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestRun {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// A layout problem; nothing was imported.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One file of an entry on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalFile {
    /// Path inside the asset, `/`-separated.
    pub path: String,
    pub local: PathBuf,
    pub mode: u32,
}

/// One entry of the layout: one asset.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    /// The entry's name when it is not `name`, or when the entry is a single file.
    pub original_name: Option<String>,
    pub kind: AssetKind,
    /// Under `common/`.
    pub shared: bool,
    /// Where it is, for messages: `functions/doubler`.
    pub origin: String,
    pub files: Vec<LocalFile>,
    pub description: String,
    pub tags: Vec<String>,
    pub interface: Interface,
    pub run: Option<Run>,
}

/// Every entry of the layout at `root` (then of `common/`), in folder order. Refuses the whole tree when
/// one entry is unacceptable, so an import changes nothing or everything.
pub fn scan(root: &Path) -> Result<(Vec<Entry>, Vec<String>), LayoutError> {
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    for (base, shared, prefix) in [
        (root.to_owned(), false, ""),
        (root.join(COMMON), true, "common/"),
    ] {
        if !base.is_dir() {
            continue;
        }
        for item in read_dir_sorted(&base)? {
            let name = file_name(&item);
            let kind = AssetKind::ALL.into_iter().find(|k| k.folder() == name);
            match kind {
                Some(kind) => {
                    refuse_symlink(&item, &format!("{prefix}{name}"))?;
                    for entry in read_dir_sorted(&item)? {
                        let entry_name = file_name(&entry);
                        let origin = format!("{prefix}{name}/{entry_name}");
                        if PLACEHOLDERS.contains(&entry_name.as_str()) {
                            continue;
                        }
                        entries.push(read_entry(&entry, kind, shared, origin)?);
                    }
                }
                None if shared || name == COMMON => {
                    if shared {
                        skipped.push(format!("{prefix}{name}"));
                    }
                }
                None => skipped.push(name),
            }
        }
    }
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for entry in &entries {
        if let Some(other) = seen.insert(&entry.name, &entry.origin) {
            return Err(LayoutError::Refused(format!(
                "{other} and {} would both become asset {:?}; rename one of them",
                entry.origin, entry.name
            )));
        }
    }
    Ok((entries, skipped))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, LayoutError> {
    let mut items: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    items.sort();
    Ok(items)
}

fn refuse_symlink(path: &Path, shown: &str) -> Result<(), LayoutError> {
    let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
    if meta.file_type().is_symlink() {
        return Err(LayoutError::Refused(format!(
            "{shown} is a symbolic link; links may leave the tree, so they are refused: replace it with the file or folder it points to"
        )));
    }
    Ok(())
}

fn mode_of(path: &Path) -> Result<u32, LayoutError> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)
        .map_err(io(path))?
        .permissions()
        .mode()
        & 0o7777)
}

/// Every regular file under `dir`, with paths relative to it.
fn walk(dir: &Path, rel: &str, origin: &str, out: &mut Vec<LocalFile>) -> Result<(), LayoutError> {
    for item in read_dir_sorted(dir)? {
        let name = file_name(&item);
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let shown = format!("{origin}/{path}");
        refuse_symlink(&item, &shown)?;
        if item.is_dir() {
            walk(&item, &path, origin, out)?;
        } else if item.is_file() {
            if PLACEHOLDERS.contains(&name.as_str()) {
                continue;
            }
            crate::validate::validate_path(&path)
                .map_err(|e| LayoutError::Refused(format!("{shown}: {e}")))?;
            out.push(LocalFile {
                mode: mode_of(&item)?,
                local: item,
                path,
            });
        } else {
            return Err(LayoutError::Refused(format!(
                "{shown} is neither a file nor a folder"
            )));
        }
    }
    Ok(())
}

fn read_entry(
    path: &Path,
    kind: AssetKind,
    shared: bool,
    origin: String,
) -> Result<Entry, LayoutError> {
    refuse_symlink(path, &origin)?;
    let original = file_name(path);
    let name = name_token(&original);
    let single = path.is_file();
    let mut files = Vec::new();
    if single {
        files.push(LocalFile {
            path: original.clone(),
            local: path.to_owned(),
            mode: mode_of(path)?,
        });
    } else {
        walk(path, "", &origin, &mut files)?;
    }
    let original_name = (single || name != original).then(|| original.clone());
    let mut entry = Entry {
        name,
        original_name,
        kind,
        shared,
        origin,
        files,
        description: String::new(),
        tags: Vec::new(),
        interface: Interface::default(),
        run: None,
    };
    if !single {
        describe(path, &mut entry)?;
    }
    Ok(entry)
}

/// The entry for `dtaas asset put <path>`: a folder or a single file. The kind is
/// `kind`, else the manifest's, else the parent folder's (`functions/`, …).
pub fn entry_at(path: &Path, kind: Option<AssetKind>) -> Result<Entry, LayoutError> {
    if !path.exists() {
        return Err(LayoutError::Refused(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let from_manifest = || -> Option<AssetKind> {
        let text = std::fs::read_to_string(path.join(MANIFEST)).ok()?;
        toml::from_str::<Manifest>(&text).ok()?.kind
    };
    let from_parent = || {
        let parent = path.canonicalize().ok()?.parent().map(file_name)?;
        AssetKind::ALL.into_iter().find(|k| k.folder() == parent)
    };
    let kind = kind
        .or_else(from_manifest)
        .or_else(from_parent)
        .ok_or_else(|| {
            LayoutError::Refused(format!(
                "cannot tell the kind of {}: pass --kind (data, model, function, tool, dt) or set `kind` in its {MANIFEST}",
                path.display()
            ))
        })?;
    read_entry(path, kind, false, path.display().to_string())
}

/// Fills description, manifest fields and lifecycle scripts of a folder entry.
fn describe(dir: &Path, entry: &mut Entry) -> Result<(), LayoutError> {
    let manifest_path = dir.join(MANIFEST);
    let manifest: Manifest = if manifest_path.is_file() {
        let text = std::fs::read_to_string(&manifest_path).map_err(io(&manifest_path))?;
        toml::from_str(&text).map_err(|e| {
            LayoutError::Refused(format!("{}/{MANIFEST}: {}", entry.origin, e.message()))
        })?
    } else {
        Manifest::default()
    };
    if let Some(kind) = manifest.kind {
        if kind != entry.kind {
            return Err(LayoutError::Refused(format!(
                "{}/{MANIFEST} says kind {kind}, but the folder holds {}s",
                entry.origin, entry.kind
            )));
        }
    }
    entry.description = match manifest.description {
        Some(d) => d,
        None => folder_description(dir)?,
    };
    for tag in &manifest.tags {
        validate_name("tag", tag)
            .map_err(|e| LayoutError::Refused(format!("{}/{MANIFEST}: {e}", entry.origin)))?;
    }
    entry.tags = manifest.tags;
    entry.interface = Interface {
        inputs: manifest.inputs,
        outputs: manifest.outputs,
        params: manifest.params,
    };
    let mut run = Run::default();
    if let Some(r) = manifest.run {
        run.command = r.command;
        run.platform = r.platform;
    }
    for file in &entry.files {
        if let Some(script) = file.path.strip_prefix("lifecycle/") {
            let stem = script.split('.').next().unwrap_or(script);
            if !script.contains('/') && LIFECYCLE_PHASES.contains(&stem) {
                run.lifecycle.insert(stem.to_owned(), file.path.clone());
            }
        }
    }
    entry.run = (!run.is_empty()).then_some(run);
    Ok(())
}

/// `description.md`, else the first paragraph of `README.md`, else nothing.
fn folder_description(dir: &Path) -> Result<String, LayoutError> {
    let description = dir.join("description.md");
    if description.is_file() {
        let text = std::fs::read_to_string(&description).map_err(io(&description))?;
        return Ok(text.trim().to_owned());
    }
    let readme = dir.join("README.md");
    if readme.is_file() {
        let text = std::fs::read_to_string(&readme).map_err(io(&readme))?;
        let paragraph: Vec<&str> = text
            .lines()
            .map(str::trim)
            .skip_while(|l| l.is_empty() || l.starts_with('#'))
            .take_while(|l| !l.is_empty())
            .collect();
        return Ok(paragraph.join(" "));
    }
    Ok(String::new())
}

/// Where an asset goes in a layout under `root`: the entry's folder (or file, for a
/// single-file entry), under `common/` when shared.
pub fn export_target(root: &Path, meta: &AssetMeta) -> (PathBuf, bool) {
    let base = if meta.shared {
        root.join(COMMON)
    } else {
        root.to_owned()
    };
    let entry = meta
        .original_name
        .clone()
        .unwrap_or_else(|| meta.name.clone());
    let single =
        meta.files.len() == 1 && meta.original_name.as_deref() == Some(meta.files[0].path.as_str());
    (base.join(meta.kind.folder()).join(entry), single)
}

/// The manifest export writes for an asset that has none among its files but holds
/// what its folder cannot say (interface, command, platform, tags); `None` otherwise.
pub fn manifest_for(meta: &AssetMeta) -> Option<String> {
    if meta.files.iter().any(|f| f.path == MANIFEST) {
        return None;
    }
    let run = meta
        .run
        .as_ref()
        .filter(|r| !r.command.is_empty() || r.platform.is_some());
    if meta.interface.is_empty() && run.is_none() && meta.tags.is_empty() {
        return None;
    }
    let manifest = Manifest {
        kind: Some(meta.kind),
        description: Some(meta.description.clone()).filter(|d| !d.is_empty()),
        tags: meta.tags.clone(),
        run: run.map(|r| ManifestRun {
            command: r.command.clone(),
            platform: r.platform.clone(),
        }),
        inputs: meta.interface.inputs.clone(),
        outputs: meta.interface.outputs.clone(),
        params: meta.interface.params.clone(),
    };
    toml::to_string(&manifest).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        crate::client::set_mode(path, mode).unwrap();
    }

    #[test]
    fn entries_of_every_kind() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("data/.gitkeep"), "", 0o644);
        write(&root.join("data/temps/temps.csv"), "t\n1\n", 0o644);
        write(&root.join("models/MassSpringDamper1.fmu"), "PK", 0o644);
        write(
            &root.join("functions/doubler/doubler.py"),
            "print(2)",
            0o755,
        );
        write(
            &root.join("functions/doubler/asset.toml"),
            "description = \"Doubles\"\n[run]\ncommand = [\"python3\", \"doubler.py\"]\n[[inputs]]\nname = \"x\"\ntype = \"number\"\n",
            0o644,
        );
        write(
            &root.join("digital_twins/inc/lifecycle/create"),
            "#!/bin/sh",
            0o755,
        );
        write(
            &root.join("digital_twins/inc/README.md"),
            "# Incubator\n\nA twin\nof an incubator.\n\nMore.",
            0o644,
        );
        write(&root.join("common/tools/plot/plot.sh"), "echo", 0o755);
        write(&root.join("notes.txt"), "", 0o644);
        let (entries, skipped) = scan(root).unwrap();
        let names: Vec<_> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.kind, e.shared))
            .collect();
        assert_eq!(
            names,
            [
                ("temps", AssetKind::Data, false),
                ("inc", AssetKind::Dt, false),
                ("doubler", AssetKind::Function, false),
                ("MassSpringDamper1_fmu", AssetKind::Model, false),
                ("plot", AssetKind::Tool, true),
            ]
        );
        assert_eq!(skipped, ["notes.txt"]);
        let fmu = &entries[3];
        assert_eq!(fmu.original_name.as_deref(), Some("MassSpringDamper1.fmu"));
        let doubler = &entries[2];
        assert_eq!(doubler.description, "Doubles");
        assert_eq!(
            doubler.run.as_ref().unwrap().command,
            ["python3", "doubler.py"]
        );
        assert_eq!(
            doubler
                .files
                .iter()
                .find(|f| f.path == "doubler.py")
                .unwrap()
                .mode,
            0o755
        );
        let inc = &entries[1];
        assert_eq!(inc.description, "A twin of an incubator.");
        assert_eq!(
            inc.run.as_ref().unwrap().lifecycle["create"],
            "lifecycle/create"
        );
    }

    #[test]
    fn links_and_clashes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("functions/f/a.py"), "", 0o644);
        std::os::unix::fs::symlink("/etc/passwd", root.join("functions/f/pw")).unwrap();
        let err = scan(root).unwrap_err().to_string();
        assert!(
            err.contains("functions/f/pw") && err.contains("symbolic link"),
            "{err}"
        );
        std::fs::remove_file(root.join("functions/f/pw")).unwrap();
        write(&root.join("models/f"), "", 0o644);
        let err = scan(root).unwrap_err().to_string();
        assert!(
            err.contains("functions/f") && err.contains("models/f"),
            "{err}"
        );
    }
}
