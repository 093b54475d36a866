//! `dtaas asset import` and `export` as a user runs them: a DTaaS library tree with
//! all five kinds (and `common/`, an FMU kept as a file, placeholders, executable
//! scripts, a manifest) goes in and comes back out identical, contents and modes;
//! importing again adds nothing; a changed file adds a version; a symlink is refused
//! and the library stays unchanged. Also a 50 MB file's round trip, timed.

mod assets_common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use assets_common::{Library, T};
use dtaas_schemas::asset_api::{self as api, GetReply, NameRequest, PutReply, PutRequest};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::time::timeout;

fn write(path: &Path, content: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A DTaaS library with every kind, shared entries and the awkward cases.
fn library_tree(root: &Path) {
    write(&root.join("data/.gitkeep"), b"", 0o644);
    write(
        &root.join("data/incubator-temps/temps.csv"),
        b"t,temp\n0,21.5\n",
        0o644,
    );
    write(
        &root.join("data/incubator-temps/description.md"),
        b"Recorded temperatures\n",
        0o644,
    );
    write(
        &root.join("models/MassSpringDamper1.fmu"),
        &[0x50, 0x4b, 3, 4, 0, 255],
        0o644,
    );
    write(
        &root.join("models/plant/plant.mo"),
        b"model Plant end Plant;",
        0o600,
    );
    write(
        &root.join("functions/doubler/doubler.py"),
        b"import sys\nprint(2)\n",
        0o755,
    );
    write(
        &root.join("functions/doubler/asset.toml"),
        br#"kind = "function"
description = "Doubles its input"
tags = ["demo"]
[run]
command = ["python3", "doubler.py"]
[[inputs]]
name = "x"
type = "number"
[[outputs]]
name = "y"
type = "number"
[[params]]
name = "factor"
type = "number"
default = 2.0
min = 0.0
max = 10.0
"#,
        0o644,
    );
    write(
        &root.join("tools/plotter/bin/plot.sh"),
        b"#!/bin/sh\necho plot\n",
        0o750,
    );
    write(&root.join("tools/plotter/.gitkeep"), b"", 0o644);
    for phase in ["create", "execute", "terminate"] {
        write(
            &root.join(format!("digital_twins/incubator/lifecycle/{phase}")),
            format!("#!/bin/bash\necho {phase}\n").as_bytes(),
            0o755,
        );
    }
    write(
        &root.join("digital_twins/incubator/README.md"),
        b"# Incubator\n\nThe incubator twin.\n",
        0o644,
    );
    write(
        &root.join("digital_twins/incubator/config/params.json"),
        b"{\"t\": 35}",
        0o644,
    );
    write(
        &root.join("common/functions/shared-fn/f.py"),
        b"pass\n",
        0o644,
    );
    write(&root.join("common/models/Shared Model.fmu"), b"fmu", 0o644);
}

/// path → (content, mode) of every file under `root` but placeholders.
fn contents(root: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, (Vec<u8>, u32)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.file_name().unwrap() != ".gitkeep" {
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, (std::fs::read(&path).unwrap(), mode));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Runs `dtaas asset <args>` as `user`; returns (success, stdout, stderr).
async fn cli(lib: &Library, user: &str, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_dtaas"))
        .arg("asset")
        .args(args)
        .env("DTAAS_NATS_URL", lib.nats.url())
        .env("DTAAS_USER", user)
        .env("RUST_LOG", "warn")
        .env_remove("DTAAS_CONFIG")
        .output();
    let output = timeout(T, output).await.unwrap().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn dtaas_layout_round_trip() {
    let lib = Library::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("library");
    library_tree(&tree);

    let (ok, out, err) = cli(&lib, "alice", &["import", tree.to_str().unwrap(), "--json"]).await;
    assert!(ok, "import failed: {err}");
    let imported: Value = serde_json::from_str(&out).unwrap();
    let imported = imported.as_array().unwrap();
    assert_eq!(imported.len(), 8, "{out}");
    assert!(imported.iter().all(|i| i["created"] == true), "{out}");

    // What the folders said is in the metadata.
    let alice = lib.client("alice").await;
    let get = |name: &str| {
        let alice = alice.clone();
        let req = NameRequest { name: name.into() };
        async move {
            timeout(T, alice.call::<_, GetReply>(api::VERB_GET, &req))
                .await
                .unwrap()
                .unwrap()
                .asset
        }
    };
    let fmu = get("MassSpringDamper1_fmu").await;
    assert_eq!(fmu.original_name.as_deref(), Some("MassSpringDamper1.fmu"));
    assert_eq!(fmu.kind.as_str(), "model");
    let doubler = get("doubler").await;
    assert_eq!(doubler.description, "Doubles its input");
    assert_eq!(
        doubler.run.as_ref().unwrap().command,
        ["python3", "doubler.py"]
    );
    assert_eq!(doubler.interface.params[0].max, Some(10.0));
    let twin = get("incubator").await;
    assert_eq!(twin.kind.as_str(), "dt");
    assert_eq!(twin.description, "The incubator twin.");
    let phases: Vec<&str> = twin
        .run
        .as_ref()
        .unwrap()
        .lifecycle
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(phases, ["create", "execute", "terminate"]);
    assert_eq!(
        get("incubator-temps").await.description,
        "Recorded temperatures"
    );
    assert!(get("shared-fn").await.shared && get("Shared_Model_fmu").await.shared);
    assert!(!get("plotter").await.shared);
    // bob sees the common/ entries only.
    let (ok, out, _) = cli(&lib, "bob", &["list"]).await;
    assert!(
        ok && out.contains("alice/shared-fn") && !out.contains("doubler"),
        "{out}"
    );

    // Export: the same tree, byte for byte and with modes.
    let exported = dir.path().join("exported");
    let (ok, _, err) = cli(
        &lib,
        "alice",
        &["export", "--all", exported.to_str().unwrap()],
    )
    .await;
    assert!(ok, "export failed: {err}");
    assert_eq!(contents(&exported), contents(&tree));

    // Importing again adds nothing; a changed file adds a version.
    let (ok, out, err) = cli(&lib, "alice", &["import", tree.to_str().unwrap(), "--json"]).await;
    assert!(ok, "{err}");
    let again: Value = serde_json::from_str(&out).unwrap();
    assert!(
        again
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["created"] == false),
        "{out}"
    );
    write(
        &tree.join("functions/doubler/doubler.py"),
        b"print(3)\n",
        0o755,
    );
    let (ok, out, _) = cli(&lib, "alice", &["import", tree.to_str().unwrap(), "--json"]).await;
    assert!(ok);
    let third: Value = serde_json::from_str(&out).unwrap();
    let changed: Vec<&Value> = third
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["created"] == true)
        .collect();
    assert_eq!(changed.len(), 1, "{out}");
    assert_eq!(changed[0]["asset"], "alice/doubler@2");

    // A symlink anywhere refuses the whole import; nothing changes.
    let before = lib.snapshot().await;
    std::os::unix::fs::symlink("/etc/passwd", tree.join("data/incubator-temps/pw")).unwrap();
    write(
        &tree.join("functions/doubler/doubler.py"),
        b"print(4)\n",
        0o755,
    );
    let (ok, _, err) = cli(&lib, "alice", &["import", tree.to_str().unwrap()]).await;
    assert!(
        !ok && err.contains("symbolic link") && err.contains("incubator-temps/pw"),
        "{err}"
    );
    assert_eq!(lib.snapshot().await, before);

    // put, fetch, share and delete by hand.
    std::fs::remove_file(tree.join("data/incubator-temps/pw")).unwrap();
    let doubler_dir = tree.join("functions/doubler");
    let (ok, out, err) = cli(&lib, "alice", &["put", doubler_dir.to_str().unwrap()]).await;
    assert!(
        ok && out.contains("alice/doubler@3 (new version)"),
        "{out}{err}"
    );
    let fetched = dir.path().join("fetched");
    let (ok, _, err) = cli(
        &lib,
        "alice",
        &["fetch", "doubler@3", fetched.to_str().unwrap()],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        contents(&fetched)["doubler.py"],
        (b"print(4)\n".to_vec(), 0o755)
    );
    let (ok, out, _) = cli(&lib, "alice", &["share", "plotter"]).await;
    assert!(ok && out.contains("shared with everyone"), "{out}");
    let (ok, out, _) = cli(&lib, "alice", &["delete", "doubler@1"]).await;
    assert!(ok && out.contains("Deleted alice/doubler@1"), "{out}");
    let (ok, _, err) = cli(
        &lib,
        "alice",
        &["put", tree.join("nowhere").to_str().unwrap()],
    )
    .await;
    assert!(!ok && err.contains("does not exist"), "{err}");

    // People's errors say what to do.
    let (ok, _, err) = cli(&lib, "alice", &["show", "alice/nothing"]).await;
    assert!(
        !ok && err.contains("not_found") && err.contains("dtaas asset list"),
        "{err}"
    );
    let (ok, out, _) = cli(&lib, "alice", &["show", "doubler@2"]).await;
    assert!(
        ok && out.contains("alice/doubler@2")
            && out.contains("param factor: number = 2.0 in 0..10"),
        "{out}"
    );
    lib.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_megabytes_round_trip_with_matching_checksum() {
    let lib = Library::start("").await;
    let alice = lib.client("alice").await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("big.bin");
    let mut rng = fastrand::Rng::with_seed(12);
    let data: Vec<u8> = (0..50 * 1024 * 1024).map(|_| rng.u8(..)).collect();
    std::fs::write(&source, &data).unwrap();
    let expected = dtaas_schemas::asset_store::hex(&Sha256::digest(&data));

    let started = Instant::now();
    let file = timeout(T * 3, alice.upload_file(&source, "big.bin", 0o644, &|_| {}))
        .await
        .unwrap()
        .unwrap();
    let upload = started.elapsed();
    assert_eq!(file.sha256, expected);
    let req = PutRequest {
        name: "big".into(),
        version: None,
        kind: "data".parse().unwrap(),
        description: String::new(),
        tags: vec![],
        files: vec![file.clone()],
        interface: Default::default(),
        run: None,
        original_name: None,
    };
    let put: PutReply = timeout(T, alice.call(api::VERB_PUT, &req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(put.asset.files[0].size, 50 * 1024 * 1024);

    let dest = dir.path().join("back.bin");
    let started = Instant::now();
    timeout(
        T * 3,
        alice.fetch_file("big", &put.asset.files[0], &dest, &|_| {}),
    )
    .await
    .unwrap()
    .unwrap();
    let fetch = started.elapsed();
    let back = std::fs::read(&dest).unwrap();
    assert_eq!(
        dtaas_schemas::asset_store::hex(&Sha256::digest(&back)),
        expected
    );
    assert!(back == data);
    // Uploading the same content again sends nothing but a probe.
    let started = Instant::now();
    timeout(T, alice.upload_file(&source, "big.bin", 0o644, &|_| {}))
        .await
        .unwrap()
        .unwrap();
    let again = started.elapsed();
    eprintln!(
        "50 MiB: upload {:.2} s ({:.1} MiB/s), fetch {:.2} s ({:.1} MiB/s), upload of known content {:.2} s",
        upload.as_secs_f64(),
        50.0 / upload.as_secs_f64(),
        fetch.as_secs_f64(),
        50.0 / fetch.as_secs_f64(),
        again.as_secs_f64()
    );
    lib.stop().await;
}
