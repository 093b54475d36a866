//! The README's main command, `dtaas up --demo incubator`, run as a user runs it: with
//! nothing listening at the configured URLs it starts nats-server and mosquitto itself,
//! then the workers, the DT and the simulated PT; samples and the DT's estimates are
//! stored; Ctrl-C (SIGINT) ends it with status 0 and leaves no process behind.

mod incubator_support;

use std::time::Duration;

use dtaas_test_harness::ports::{free_port, is_listening};
use dtaas_test_harness::Process;
use incubator_support::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Processes whose command line or work directory mentions `needle` (the test's own
/// directory or ports).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        // DT processes run with relative argv in their work directory.
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        if cmdline.contains(needle) || cwd.to_string_lossy().contains(needle) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn up_demo_runs_the_incubator_and_ctrl_c_leaves_nothing_behind() {
    let (nats_port, mqtt_port) = (free_port(), free_port());
    let data = tempfile::tempdir().unwrap();
    let mut up = Process::spawn(
        "up-demo",
        env!("CARGO_BIN_EXE_dtaas").as_ref(),
        ["up", "--demo", "incubator", "--time-scale", "20"]
            .iter()
            .map(Into::into)
            .collect(),
        vec![
            (
                "DTAAS_NATS_URL".into(),
                format!("nats://127.0.0.1:{nats_port}").into(),
            ),
            (
                "DTAAS_MQTT_URL".into(),
                format!("mqtt://127.0.0.1:{mqtt_port}").into(),
            ),
            ("DTAAS_DATA_DIR".into(), data.path().join("data").into()),
            ("DTAAS_USER".into(), "alice".into()),
        ],
        data.path().join("up.log"),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !is_listening(nats_port) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no nats-server:\n{}",
            up.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let client = async_nats::connect(format!("nats://127.0.0.1:{nats_port}"))
        .await
        .unwrap();
    let logs = [&up];
    query_until(
        &client,
        "inc1",
        "state",
        |r| values(r, "t2").len() >= 5,
        &logs,
    )
    .await;
    let estimate = query_until(
        &client,
        "incubator",
        "estimate",
        |r| values(r, "t_heater").len() >= 3,
        &logs,
    )
    .await;
    assert!(values(&estimate, "t_box")
        .iter()
        .all(|t| (15.0..60.0).contains(t)));
    // Plain log lines when stdout is not a terminal.
    assert!(up.log().contains("setpoint 35.00 °C"), "{}", up.log_tail());

    kill(Pid::from_raw(up.pid().unwrap() as i32), Signal::SIGINT).unwrap();
    let status = up.wait(WAIT).unwrap();
    assert_eq!(status, Some(0), "{}", up.log_tail());
    let dir = data.path().display().to_string();
    for needle in [
        dir.as_str(),
        &format!(":{nats_port}"),
        &format!(" {mqtt_port}"),
    ] {
        let left = processes_mentioning(needle);
        assert!(left.is_empty(), "left behind ({needle}): {left:?}");
    }
    assert!(!is_listening(nats_port) && !is_listening(mqtt_port));
}
