//! The people's commands piped into a reader that stops early (`| head -1`) end
//! quietly with status 141, as a shell shows SIGPIPE, instead of panicking.

mod assets_common;

use std::io::Read;
use std::process::{Command, Stdio};

use assets_common::{put, Library};

#[tokio::test(flavor = "multi_thread")]
async fn asset_list_into_a_closed_pipe_ends_quietly_with_141() {
    let lib = Library::start("").await;
    let alice = lib.client("alice").await;
    for i in 0..3 {
        let name = format!("asset-{i:03}");
        put(&alice, &name, "data", &[("x.csv", b"1", 0o644)], None)
            .await
            .unwrap();
    }
    // A pipe whose reader is gone before the command writes its answer.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = Command::new(env!("CARGO_BIN_EXE_dtaas"))
        .args(["asset", "list"])
        .env("DTAAS_NATS_URL", lib.nats.url())
        .env("DTAAS_USER", "alice")
        .env("RUST_BACKTRACE", "0")
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.code(), Some(141), "{status:?}: {stderr}");
    lib.stop().await;
}
