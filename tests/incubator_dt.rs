//! The incubator DT's functions as processes under the process contract, against the
//! simulated PT, `dtaas up`, real nats-server and mosquitto, with time 30 times faster:
//! estimates are stored; opening the lid raises `anomaly` within a few samples and none
//! before; the supervisor's command reaches the PT and ends `acknowledged`; closing the
//! lid clears it; a saved filter restored in a new process continues without a jump;
//! every process answers the ready request a replay asks.
//! The processes are started here the way exec starts them (same environment), so this
//! checks the assets and the contract independently of lifecycle and exec.
//! Also: the Python unit tests of the functions, and the vendored client being one file.

mod incubator_support;

use std::time::Duration;

use futures::StreamExt;
use incubator_support::*;
use serde_json::{json, Value};

const DT: &str = "inc-test";
const SAMPLE_NS: i64 = 3_000_000_000;

#[test]
fn python_unit_tests_of_the_functions_pass() {
    let output = std::process::Command::new("python3")
        .args(["-m", "unittest", "discover", "-s"])
        .arg(example_dir().join("tests"))
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_function_vendors_the_same_process_module() {
    let functions = example_dir().join("library/functions");
    let reference = std::fs::read(functions.join("incubator_kalman/dtaas_process.py")).unwrap();
    for name in ["incubator_anomaly", "incubator_supervisor"] {
        let copy = std::fs::read(functions.join(name).join("dtaas_process.py")).unwrap();
        assert!(
            copy == reference,
            "{name}/dtaas_process.py differs from incubator_kalman's; copy it over"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lid_open_is_detected_and_the_supervisor_retunes_the_pt() {
    let platform = Platform::start("alice");
    let sim = platform.dtaas("sim", &["pt", "sim", "--time-scale", "30", "--seed", "5"]);
    let client = async_nats::connect(platform.nats.url()).await.unwrap();
    let mut events = client
        .subscribe(format!("dtaas.v1.evt.dt.{DT}.*"))
        .await
        .unwrap();
    let mut acks = client
        .subscribe("dtaas.v1.evt.cmd.*.acknowledged")
        .await
        .unwrap();
    let filter = start_filter(&platform, None);
    let detector = platform.function(
        DT,
        "detector",
        "incubator_anomaly/anomaly.py",
        &[("ERROR", format!("dtaas.v1.dt.{DT}.out.prediction_error"))],
        &[("warmup_s", json!(60))],
        None,
    );
    let supervisor = platform.function(
        DT,
        "supervisor",
        "incubator_supervisor/supervisor.py",
        &[("ANOMALY", format!("dtaas.v1.dt.{DT}.out.anomaly"))],
        &[("user", json!("alice"))],
        None,
    );
    let logs = [&sim, &filter, &detector, &supervisor];
    // Each answers the ready request once its inputs are subscribed.
    assert_eq!(
        ready(&client, DT).await,
        ["detector", "filter", "supervisor"],
        "{}",
        tails(&logs)
    );

    // Estimates are stored by the historian, at the samples' own timestamps.
    let estimate = query_until(
        &client,
        DT,
        "estimate",
        |r| values(r, "t_heater").len() >= 10,
        &logs,
    )
    .await;
    assert!(values(&estimate, "t_box").len() >= 10);
    // Warm enough that an open lid makes a difference (≥ 27 °C, the room is 21 °C).
    let warm = query_until(
        &client,
        "inc1",
        "state",
        |r| {
            values(r, "average_temperature")
                .last()
                .is_some_and(|t| *t >= 27.0)
        },
        &logs,
    )
    .await;
    let before_lid = last_ts(&warm);

    // Open the lid as a person would; the anomaly follows within ten samples.
    let out = platform.send("lid", r#"{"open":true}"#);
    assert!(out.contains("acknowledged"), "{out}");
    let opened =
        last_ts(&query_until(&client, "inc1", "state", |r| last_ts(r) > before_lid, &logs).await);
    let anomaly = next_event(&mut events, &logs).await;
    assert_eq!(anomaly.0, "anomaly", "{anomaly:?}");
    let ts = anomaly.1["ts"].as_i64().unwrap();
    assert!(
        ts >= before_lid,
        "anomaly at {ts} before the lid opened ({before_lid})"
    );
    assert!(
        ts <= opened + 10 * SAMPLE_NS,
        "anomaly at {ts}, lid open since ~{opened}"
    );

    // The supervisor's command reached the PT and the ledger says acknowledged.
    let ack = next_ack(&mut acks, "controller", &logs).await;
    assert_eq!(ack["pt"], "inc1");
    query_until(
        &client,
        "inc1",
        "state",
        |r| values(r, "heating_time").last() == Some(&50.0),
        &logs,
    )
    .await;

    // Closing the lid clears it, and the normal parameters return.
    let out = platform.send("lid", r#"{"open":false}"#);
    assert!(out.contains("acknowledged"), "{out}");
    let cleared = next_event(&mut events, &logs).await;
    assert_eq!(cleared.0, "anomaly_cleared", "{cleared:?}");
    assert!(cleared.1["ts"].as_i64().unwrap() > ts);
    next_ack(&mut acks, "controller", &logs).await;
    query_until(
        &client,
        "inc1",
        "state",
        |r| values(r, "heating_time").last() == Some(&20.0),
        &logs,
    )
    .await;

    // Save: every process answers with its state; the filter's is restored in a new
    // process, which continues the estimate without a jump.
    let states = save(&client, DT).await;
    let filter_state = states
        .get("filter")
        .expect("the filter answered the save request")
        .clone();
    let mut filter = filter;
    let _ = filter.stop();
    let before = query_until(
        &client,
        DT,
        "estimate",
        |r| !values(r, "t_heater").is_empty(),
        &[&sim, &detector, &supervisor],
    )
    .await;
    let last_before = last_ts(&before);
    let t_heater_before = *values(&before, "t_heater").last().unwrap();
    let state_file = platform.dir().join("filter.state.json");
    std::fs::write(&state_file, serde_json::to_vec(&filter_state).unwrap()).unwrap();
    let filter = start_filter(&platform, Some(&state_file));
    let after = query_until(
        &client,
        DT,
        "estimate",
        |r| last_ts(r) > last_before,
        &[&filter],
    )
    .await;
    let next = points_after(&after, "t_heater", last_before);
    let first_after = next.first().unwrap().1;
    assert!(
        (first_after - t_heater_before).abs() < 2.0,
        "the estimate jumped from {t_heater_before} to {first_after} after the restore"
    );
    assert!(
        filter.log().contains("restored its state"),
        "{}",
        filter.log()
    );

    // A plot of the run, anomaly shaded (DTAAS_TEST_PLOT=<file> keeps a copy, e.g. for
    // docs/incubator-lid-open.png).
    let png = platform.dir().join("lid.png");
    let mut plot = platform.dtaas(
        "plot",
        &[
            "plot",
            "--dt",
            DT,
            "--last",
            "3h",
            "--title",
            "Incubator inc1: lid opened and closed",
            "-o",
            png.to_str().unwrap(),
        ],
    );
    assert_eq!(plot.wait(WAIT).unwrap(), Some(0), "{}", plot.log());
    assert!(plot.log().contains("1 anomaly period"), "{}", plot.log());
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{} bytes",
        bytes.len()
    );
    if let Ok(keep) = std::env::var("DTAAS_TEST_PLOT") {
        std::fs::copy(&png, keep).unwrap();
    }

    for mut process in [sim, filter, detector, supervisor] {
        let _ = process.stop();
    }
    // Only the two decisions were events: nothing else on the DT's event subject.
    let extra = tokio::time::timeout(Duration::from_millis(500), events.next()).await;
    assert!(
        extra.is_err(),
        "unexpected event {:?}",
        extra
            .ok()
            .flatten()
            .map(|m| (m.subject, String::from_utf8_lossy(&m.payload).into_owned()))
    );
    drop(platform);
}

/// The Kalman filter on the PT's samples, restored from `state` when given.
fn start_filter(
    platform: &Platform,
    state: Option<&std::path::Path>,
) -> dtaas_test_harness::Process {
    let input = [("STATE", "dtaas.v1.tel.inc1.state".to_owned())];
    platform.function(
        DT,
        "filter",
        "incubator_kalman/kalman.py",
        &input,
        &[],
        state,
    )
}

/// The next event on the DT's subject: (event name, JSON body).
async fn next_event(
    events: &mut async_nats::Subscriber,
    logs: &[&dtaas_test_harness::Process],
) -> (String, Value) {
    let message = tokio::time::timeout(WAIT, events.next())
        .await
        .unwrap_or_else(|_| panic!("no DT event within {WAIT:?}\n{}", tails(logs)))
        .unwrap();
    let name = message.subject.rsplit('.').next().unwrap().to_owned();
    (name, serde_json::from_slice(&message.payload).unwrap())
}

/// The next `acknowledged` ledger event of `command`.
async fn next_ack(
    acks: &mut async_nats::Subscriber,
    command: &str,
    logs: &[&dtaas_test_harness::Process],
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = tokio::time::timeout_at(deadline, acks.next())
            .await
            .unwrap_or_else(|_| {
                panic!("no acknowledged {command} within {WAIT:?}\n{}", tails(logs))
            })
            .unwrap();
        let event: Value = dtaas_schemas::codec::decode(None, &message.payload).unwrap();
        if event["command"] == command {
            return event;
        }
    }
}

/// Asks every process of `dt` for its state, as lifecycle's save does.
async fn save(client: &async_nats::Client, dt: &str) -> serde_json::Map<String, Value> {
    let replies = ask_all(client, dt, "save", Duration::from_secs(10)).await;
    replies
        .into_iter()
        .map(|(role, body)| (role, serde_json::from_slice(&body).unwrap()))
        .collect()
}

/// Asks `dt`'s processes whether they subscribed to their inputs, as a replay does:
/// again every 200 ms until all three answered; answers the roles that did.
async fn ready(client: &async_nats::Client, dt: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut answered = std::collections::BTreeSet::new();
    while answered.len() < 3 && tokio::time::Instant::now() < deadline {
        let replies = ask_all(client, dt, "ready", Duration::from_millis(200)).await;
        answered.extend(replies.into_keys());
    }
    answered.into_iter().collect()
}

/// One control request to every process of `dt` on `dtaas.v1.dt.<dt>.ctl.<action>`:
/// role (`Dtaas-Role`) → body of each answer within `wait`, up to three.
async fn ask_all(
    client: &async_nats::Client,
    dt: &str,
    action: &str,
    wait: Duration,
) -> std::collections::BTreeMap<String, bytes::Bytes> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    let subject = dtaas_schemas::subject::dt_control(dt, action).unwrap();
    client
        .publish_with_reply(subject, inbox, "{}".into())
        .await
        .unwrap();
    let mut answers = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + wait;
    while answers.len() < 3 {
        match tokio::time::timeout_at(deadline, replies.next()).await {
            // The server's "no responders": nobody listens yet.
            Ok(Some(reply)) if reply.status.is_some() => {}
            Ok(Some(reply)) => {
                let role = reply
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(dtaas_schemas::names::header::ROLE))
                    .unwrap_or_else(|| panic!("a {action} reply names its role"))
                    .to_string();
                answers.insert(role, reply.payload);
            }
            _ => break,
        }
    }
    answers
}
