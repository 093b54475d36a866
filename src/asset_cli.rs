//! `dtaas asset …`: the people's side of the asset library. Identity from
//! `DTAAS_USER`; tables by default, `--json` for scripts; progress on stderr for long
//! transfers; errors that say what to do.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use dtaas_assets::client::{AssetClient, ClientError};
use dtaas_assets::layout::{self, Entry};
use dtaas_runtime::Config;
use dtaas_schemas::asset::{AssetKind, AssetMeta};
use dtaas_schemas::asset_api::{
    self as api, DeleteReply, GetReply, ListReply, ListRequest, NameRequest, PutReply, PutRequest,
    ShareReply,
};
use serde::Serialize;

/// `dtaas asset …`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct AssetArgs {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AssetCommand,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum AssetCommand {
    /// Your assets and those shared with you.
    List {
        /// data, model, function, tool or dt.
        #[arg(long)]
        kind: Option<AssetKind>,
        #[arg(long)]
        tag: Option<String>,
        /// Only this owner's assets (shared ones, unless they are yours).
        #[arg(long)]
        owner: Option<String>,
        /// Only shared (true) or private (false) assets.
        #[arg(long)]
        shared: Option<bool>,
        /// Text in the name or description.
        #[arg(long)]
        text: Option<String>,
    },
    /// One version's metadata and files: `owner/name@version`, `owner/name`, `name`.
    Show { name: String },
    /// Put a folder (or a single file) as a new version of your asset.
    Put {
        /// The folder or file; an `asset.toml` in the folder declares kind, run, interface.
        path: PathBuf,
        /// The asset's name [default: the folder's or file's name, made a valid name].
        #[arg(long)]
        name: Option<String>,
        /// data, model, function, tool or dt [default: asset.toml, else the parent folder
        /// (functions/, models/, …)].
        #[arg(long)]
        kind: Option<AssetKind>,
        /// The version to create [default: the next one].
        #[arg(long)]
        version: Option<u64>,
    },
    /// Download a version's files into a folder.
    Fetch {
        name: String,
        /// Where to write [default: ./<name>].
        dir: Option<PathBuf>,
        /// Only this file.
        #[arg(long)]
        file: Option<String>,
    },
    /// Share every version of your asset with everyone.
    Share { name: String },
    /// Make every version of your asset private again.
    Unshare { name: String },
    /// Delete one version (`name@version`) or every version (`name`).
    Delete { name: String },
    /// Import a DTaaS library folder (data/, models/, functions/, tools/,
    /// digital_twins/, and common/ as shared).
    Import { dir: PathBuf },
    /// Export assets to a DTaaS library folder, byte for byte with modes.
    Export {
        /// Assets to export, then the folder: `dtaas asset export a b ./lib`.
        #[arg(required = true, num_args = 1..)]
        names_then_dir: Vec<String>,
        /// Export every asset you own (then give only the folder).
        #[arg(long)]
        all: bool,
    },
}

/// Runs one `dtaas asset` command.
pub async fn run(args: AssetArgs, config: &Config) -> anyhow::Result<()> {
    let nats = dtaas_runtime::nats::connect(config, "dtaas-cli").await?;
    let client = AssetClient::new(nats, config.user.clone());
    let json = args.json;
    match args.command {
        AssetCommand::List {
            kind,
            tag,
            owner,
            shared,
            text,
        } => {
            let req = ListRequest {
                kind,
                tag,
                owner,
                shared,
                text,
            };
            let reply: ListReply = call(&client, api::VERB_LIST, &req).await?;
            if json {
                return print_json(&reply);
            }
            let rows: Vec<Vec<String>> = reply
                .assets
                .iter()
                .map(|a| {
                    vec![
                        format!("{}/{}", a.owner, a.name),
                        a.version.to_string(),
                        a.kind.to_string(),
                        if a.shared { "shared" } else { "private" }.into(),
                        first_line(&a.description),
                    ]
                })
                .collect();
            table(
                &["ASSET", "LATEST", "KIND", "VISIBILITY", "DESCRIPTION"],
                &rows,
            );
            if rows.is_empty() {
                eprintln!("No assets yet; add one with `dtaas asset put <folder>` or `dtaas asset import <library>`.");
            }
        }
        AssetCommand::Show { name } => {
            let reply: GetReply = call(&client, api::VERB_GET, &NameRequest { name }).await?;
            if json {
                return print_json(&reply);
            }
            show(&reply);
        }
        AssetCommand::Put {
            path,
            name,
            kind,
            version,
        } => {
            let mut entry = layout::entry_at(&path, kind).map_err(anyhow::Error::from)?;
            if let Some(name) = name {
                entry.name = name;
            }
            let reply = put_entry(&client, &entry, version).await?;
            if json {
                return print_json(&reply);
            }
            report_put(&reply, &entry.origin);
        }
        AssetCommand::Fetch { name, dir, file } => {
            let reply: GetReply = call(&client, api::VERB_GET, &NameRequest { name }).await?;
            let meta = reply.asset;
            let dir = dir.unwrap_or_else(|| PathBuf::from(&meta.name));
            let mut written = Vec::new();
            for f in meta
                .files
                .iter()
                .filter(|f| file.as_ref().is_none_or(|p| &f.path == p))
            {
                let dest = dir.join(&f.path);
                fetch(&client, &meta, f, &dest).await?;
                written.push(dest.display().to_string());
            }
            if written.is_empty() {
                anyhow::bail!(
                    "{} has no file {:?}; `dtaas asset show {}` lists its files",
                    meta.address(),
                    file.unwrap_or_default(),
                    meta.address()
                );
            }
            if json {
                return print_json(
                    &serde_json::json!({"asset": meta.address(), "written": written}),
                );
            }
            println!(
                "Fetched {} ({} files) into {}",
                meta.address(),
                written.len(),
                dir.display()
            );
        }
        AssetCommand::Share { name } => share(&client, api::VERB_SHARE, name, json).await?,
        AssetCommand::Unshare { name } => share(&client, api::VERB_UNSHARE, name, json).await?,
        AssetCommand::Delete { name } => {
            let reply: DeleteReply = call(&client, api::VERB_DELETE, &NameRequest { name }).await?;
            if json {
                return print_json(&reply);
            }
            for address in reply.deleted {
                println!("Deleted {address}");
            }
        }
        AssetCommand::Import { dir } => import(&client, &dir, json).await?,
        AssetCommand::Export {
            mut names_then_dir,
            all,
        } => {
            let dir = PathBuf::from(names_then_dir.pop().unwrap_or_default());
            let mut names = names_then_dir;
            if all {
                if !names.is_empty() {
                    anyhow::bail!("give either asset names or --all, not both");
                }
                let req = ListRequest {
                    owner: Some(client.user().to_owned()),
                    ..Default::default()
                };
                let reply: ListReply = call(&client, api::VERB_LIST, &req).await?;
                names = reply
                    .assets
                    .iter()
                    .map(|a| format!("{}/{}", a.owner, a.name))
                    .collect();
            } else if names.is_empty() {
                anyhow::bail!("name the assets to export, then the folder: `dtaas asset export doubler ./lib` (or --all ./lib)");
            }
            let mut exported = Vec::new();
            for name in names {
                let reply: GetReply = call(&client, api::VERB_GET, &NameRequest { name }).await?;
                let target = export(&client, &reply.asset, &dir).await?;
                if !json {
                    println!("Exported {} to {}", reply.asset.address(), target.display());
                }
                exported.push(serde_json::json!({"asset": reply.asset.address(), "path": target}));
            }
            if json {
                return print_json(&exported);
            }
        }
    }
    Ok(())
}

async fn share(client: &AssetClient, verb: &str, name: String, json: bool) -> anyhow::Result<()> {
    let reply: ShareReply = call(client, verb, &NameRequest { name }).await?;
    if json {
        return print_json(&reply);
    }
    let a = reply.asset;
    let state = if a.shared {
        "shared with everyone"
    } else {
        "private"
    };
    println!(
        "{}/{} (every version, latest {}) is now {state}",
        a.owner, a.name, a.version
    );
    Ok(())
}

/// A request whose error becomes a message with the code and the service's advice.
async fn call<Req: Serialize, Resp: serde::de::DeserializeOwned>(
    client: &AssetClient,
    verb: &str,
    req: &Req,
) -> anyhow::Result<Resp> {
    client.call(verb, req).await.map_err(describe)
}

fn describe(error: ClientError) -> anyhow::Error {
    match &error {
        ClientError::Reply(reply) => {
            let code = serde_json::to_value(reply.error.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            anyhow::anyhow!("{code}: {}", reply.error.message)
        }
        _ => anyhow::Error::from(error),
    }
}

/// Uploads an entry's files and puts it; shares it when it came from `common/`.
async fn put_entry(
    client: &AssetClient,
    entry: &Entry,
    version: Option<u64>,
) -> anyhow::Result<PutReply> {
    let mut files = Vec::new();
    for file in &entry.files {
        let size = std::fs::metadata(&file.local)
            .with_context(|| file.local.display().to_string())?
            .len();
        let bar = Bar::new(format!("upload {}/{}", entry.origin, file.path), size);
        let uploaded = client
            .upload_file(&file.local, &file.path, file.mode, &|done| bar.show(done))
            .await
            .map_err(describe)?;
        bar.finish();
        files.push(uploaded);
    }
    let req = PutRequest {
        name: entry.name.clone(),
        version,
        kind: entry.kind,
        description: entry.description.clone(),
        tags: entry.tags.clone(),
        files,
        interface: entry.interface.clone(),
        run: entry.run.clone(),
        original_name: entry.original_name.clone(),
    };
    let mut reply: PutReply = call(client, api::VERB_PUT, &req).await?;
    if entry.shared && !reply.asset.shared {
        let _: ShareReply = call(
            client,
            api::VERB_SHARE,
            &NameRequest {
                name: entry.name.clone(),
            },
        )
        .await?;
        reply.asset.shared = true;
    }
    Ok(reply)
}

fn report_put(reply: &PutReply, origin: &str) {
    let what = if reply.created {
        "new version"
    } else {
        "unchanged"
    };
    println!("{origin} → {} ({what})", reply.asset.address());
}

pub(crate) async fn import(client: &AssetClient, dir: &Path, json: bool) -> anyhow::Result<()> {
    let (entries, skipped) = layout::scan(dir).map_err(anyhow::Error::from)?;
    if entries.is_empty() {
        anyhow::bail!(
            "{} holds no DTaaS entries; expected data/, models/, functions/, tools/ or digital_twins/ (or the same under common/)",
            dir.display()
        );
    }
    for item in &skipped {
        eprintln!("Skipped {item}: not part of the DTaaS layout.");
    }
    let mut results = Vec::new();
    for entry in &entries {
        let reply = put_entry(client, entry, None)
            .await
            .with_context(|| format!("importing {}", entry.origin))?;
        if !json {
            report_put(&reply, &entry.origin);
        }
        results.push(serde_json::json!({
            "entry": entry.origin, "asset": reply.asset.address(), "created": reply.created,
        }));
    }
    if json {
        print_json(&results)?;
    }
    Ok(())
}

async fn fetch(
    client: &AssetClient,
    meta: &AssetMeta,
    file: &dtaas_schemas::asset::AssetFile,
    dest: &Path,
) -> anyhow::Result<()> {
    let bar = Bar::new(format!("fetch {}", file.path), file.size);
    client
        .fetch_file(&meta.address(), file, dest, &|done| bar.show(done))
        .await
        .map_err(describe)?;
    bar.finish();
    Ok(())
}

/// Writes `meta` into the layout under `root`; returns the entry's path.
async fn export(client: &AssetClient, meta: &AssetMeta, root: &Path) -> anyhow::Result<PathBuf> {
    let (target, single) = layout::export_target(root, meta);
    if single {
        fetch(client, meta, &meta.files[0], &target).await?;
        return Ok(target);
    }
    std::fs::create_dir_all(&target).with_context(|| target.display().to_string())?;
    for file in &meta.files {
        fetch(client, meta, file, &target.join(&file.path)).await?;
    }
    if let Some(manifest) = layout::manifest_for(meta) {
        let path = target.join(layout::MANIFEST);
        std::fs::write(&path, manifest).with_context(|| path.display().to_string())?;
    }
    Ok(target)
}

fn show(reply: &GetReply) {
    let a = &reply.asset;
    println!(
        "{}  ({}, {})",
        a.address(),
        a.kind,
        if a.shared { "shared" } else { "private" }
    );
    if !a.description.is_empty() {
        println!("{}", a.description);
    }
    let versions: Vec<String> = reply.versions.iter().map(u64::to_string).collect();
    println!("versions: {}", versions.join(", "));
    if !a.tags.is_empty() {
        println!("tags: {}", a.tags.join(", "));
    }
    if let Some(original) = &a.original_name {
        println!("original name: {original}");
    }
    if let Some(run) = &a.run {
        if !run.command.is_empty() {
            println!("run: {}", run.command.join(" "));
        }
        if let Some(platform) = &run.platform {
            println!("platform: {platform}");
        }
        for (phase, script) in &run.lifecycle {
            println!("lifecycle {phase}: {script}");
        }
    }
    for (what, ports) in [
        ("input", &a.interface.inputs),
        ("output", &a.interface.outputs),
    ] {
        for p in ports {
            let unit = p
                .unit
                .as_deref()
                .map(|u| format!(" [{u}]"))
                .unwrap_or_default();
            println!("{what} {}: {}{unit}", p.name, p.value_type.as_str());
        }
    }
    for p in &a.interface.params {
        let default = p
            .default
            .as_ref()
            .map(|d| format!(" = {d}"))
            .unwrap_or_default();
        let range = match (p.min, p.max) {
            (None, None) => String::new(),
            (min, max) => format!(
                " in {}..{}",
                min.map(|m| m.to_string()).unwrap_or_default(),
                max.map(|m| m.to_string()).unwrap_or_default()
            ),
        };
        println!(
            "param {}: {}{default}{range}",
            p.name,
            p.value_type.as_str()
        );
    }
    let rows: Vec<Vec<String>> = a
        .files
        .iter()
        .map(|f| {
            vec![
                format!("{:o}", f.mode),
                f.size.to_string(),
                f.sha256[..12].to_owned(),
                f.path.clone(),
            ]
        })
        .collect();
    println!();
    table(&["MODE", "SIZE", "SHA256", "PATH"], &rows);
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > 60 {
        format!("{}…", line.chars().take(59).collect::<String>())
    } else {
        line.to_owned()
    }
}

fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A one-line progress display on stderr, for files over 1 MiB on a terminal.
struct Bar {
    label: String,
    total: u64,
    active: bool,
}

impl Bar {
    fn new(label: String, total: u64) -> Self {
        let active = total > 1 << 20 && std::io::stderr().is_terminal();
        Self {
            label,
            total,
            active,
        }
    }

    fn show(&self, done: u64) {
        if !self.active {
            return;
        }
        let percent = done * 100 / self.total.max(1);
        let filled = (percent / 5) as usize;
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r{} [{}{}] {percent:>3}% {:.1}/{:.1} MiB",
            self.label,
            "#".repeat(filled),
            " ".repeat(20 - filled.min(20)),
            done as f64 / 1048576.0,
            self.total as f64 / 1048576.0
        );
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.active {
            eprintln!();
        }
    }
}
