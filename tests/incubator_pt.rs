//! The simulated incubator (`dtaas pt sim`) as a PT on real mosquitto and nats-server
//! behind `dtaas up`: its samples are stored with the INTO-CPS fields, and commands sent
//! with `dtaas pt send` reach it, change it and end `acknowledged` in the ledger.

mod incubator_support;

use incubator_support::*;

#[tokio::test(flavor = "multi_thread")]
async fn simulated_incubator_publishes_samples_and_obeys_commands() {
    let platform = Platform::start("alice");
    let mut sim = platform.dtaas(
        "sim",
        &[
            "pt",
            "sim",
            "--time-scale",
            "30",
            "--seed",
            "7",
            "--noise",
            "0.05",
        ],
    );
    let client = async_nats::connect(platform.nats.url()).await.unwrap();
    let logs = [&platform.up, &sim];

    let reply = query_until(
        &client,
        "inc1",
        "state",
        |r| values(r, "t2").len() >= 20,
        &logs,
    )
    .await;
    let fields: Vec<&str> = reply["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["field"].as_str())
        .collect();
    for field in [
        "t1",
        "t2",
        "t3",
        "average_temperature",
        "heater_on",
        "fan_on",
        "controller_state",
        "temperature_desired",
        "heating_time",
        "heating_gap",
        "lower_bound",
    ] {
        assert!(fields.contains(&field), "no field {field} in {fields:?}");
    }
    // Three simulated seconds between samples, and the box warming from the room.
    let box_t = points(&reply, "average_temperature");
    assert_eq!(box_t[1].0 - box_t[0].0, 3_000_000_000);
    assert!(box_t.last().unwrap().1 > box_t[0].1, "{box_t:?}");

    // A controller command is applied and acknowledged; a refused one is acknowledged
    // too (with the reason in the device's reply and log).
    let out = platform.send("controller", r#"{"heating_time":40}"#);
    assert!(out.contains("acknowledged"), "{out}");
    // The id, then one status a line, without a dangling space when there is no reason.
    assert!(out.lines().skip(1).any(|l| l == "acknowledged"), "{out:?}");
    query_until(
        &client,
        "inc1",
        "state",
        |r| values(r, "heating_time").last() == Some(&40.0),
        &logs,
    )
    .await;
    let out = platform.send("lid", r#"{"open":true}"#);
    assert!(out.contains("acknowledged"), "{out}");
    let out = platform.send("controller", r#"{"heating_time":0}"#);
    assert!(out.contains("acknowledged"), "{out}");
    assert!(
        sim.log().contains("heating_time must lie in"),
        "{}",
        sim.log()
    );

    assert_eq!(sim.stop(), Some(0), "{}", sim.log_tail());
    let mut platform = platform;
    assert_eq!(platform.up.stop(), Some(0), "{}", platform.up.log_tail());
}
