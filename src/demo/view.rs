//! The demo's live view: the PT's samples, the DT's estimate and anomaly state, its
//! events and the last commands with their ledger status. On a terminal it is redrawn
//! in place; otherwise every change is one plain log line.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use dtaas_schemas::command::CommandStatusEvent;
use dtaas_schemas::subject;
use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Commands shown.
const COMMANDS_SHOWN: usize = 5;

/// What the view shows.
#[derive(Debug, Default)]
struct Screen {
    /// The PT's last sample's fields.
    sample: serde_json::Map<String, Value>,
    sample_ts: i64,
    t_heater: Option<f64>,
    t_box_estimated: Option<f64>,
    anomaly: Option<bool>,
    /// Last DT events (lifecycle, anomaly), newest last.
    events: VecDeque<String>,
    /// Last commands: (id, command, status).
    commands: VecDeque<(String, String, String)>,
}

/// Runs the view until `stop`.
pub async fn run(
    client: async_nats::Client,
    pt: &str,
    dt: &str,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut samples = client.subscribe(subject::telemetry(pt, "state")?).await?;
    let mut outputs = client.subscribe(subject::dt_outputs(dt)?).await?;
    let mut dt_events = client.subscribe(subject::event_id_all("dt", dt)?).await?;
    let mut commands = client.subscribe(subject::event_kind_all("cmd")?).await?;
    let tty = std::io::stdout().is_terminal();
    let mut screen = Screen::default();
    let mut redraw = tokio::time::interval(Duration::from_millis(500));
    let mut dirty = true;
    let header = format!("dtaas up --demo incubator: PT {pt}, DT {dt}");
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            Some(m) = samples.next() => {
                for record in records(&m) {
                    if let Some(fields) = record["fields"].as_object() {
                        screen.sample = fields.clone();
                        screen.sample_ts = record["ts"].as_i64().unwrap_or(0);
                    }
                }
                if !tty {
                    println!("{}", sample_line(&screen));
                }
                dirty = true;
            }
            Some(m) = outputs.next() => {
                let output = m.subject.rsplit('.').next().unwrap_or_default().to_owned();
                for record in records(&m) {
                    let fields = &record["fields"];
                    match output.as_str() {
                        "estimate" => {
                            screen.t_heater = fields["t_heater"].as_f64();
                            screen.t_box_estimated = fields["t_box"].as_f64();
                        }
                        "anomaly" => screen.anomaly = fields["active"].as_bool(),
                        _ => {}
                    }
                }
                dirty = true;
            }
            Some(m) = dt_events.next() => {
                let event = m.subject.rsplit('.').next().unwrap_or_default().to_owned();
                let body: Value = dtaas_schemas::codec::decode(None, &m.payload).unwrap_or_default();
                let line = match body["ts"].as_i64() {
                    Some(ts) => format!("{event} at data time {}", clock(ts)),
                    None => event,
                };
                if !tty {
                    println!("event: {line}");
                }
                push(&mut screen.events, line, 4);
                dirty = true;
            }
            Some(m) = commands.next() => {
                if let Ok(event) = dtaas_schemas::codec::decode::<CommandStatusEvent>(None, &m.payload) {
                    if event.pt == pt {
                        if !tty {
                            println!("command {} {}: {}", event.command, event.id, event.status.as_str());
                        }
                        let status = event.status.as_str().to_owned();
                        match screen.commands.iter_mut().find(|c| c.0 == event.id) {
                            Some(entry) => entry.2 = status,
                            None => push(&mut screen.commands, (event.id, event.command, status), COMMANDS_SHOWN),
                        }
                        dirty = true;
                    }
                }
            }
            _ = redraw.tick() => {
                if tty && dirty {
                    draw(&header, &screen)?;
                    dirty = false;
                }
            }
        }
    }
}

fn push<T>(list: &mut VecDeque<T>, item: T, keep: usize) {
    list.push_back(item);
    while list.len() > keep {
        list.pop_front();
    }
}

/// The records of a telemetry message (one, or an array), as JSON values.
fn records(message: &async_nats::Message) -> Vec<Value> {
    let content_type = dtaas_runtime::headers::content_type(message.headers.as_ref());
    match dtaas_schemas::codec::decode::<Value>(content_type, &message.payload) {
        Ok(Value::Array(records)) => records,
        Ok(record) => vec![record],
        Err(_) => Vec::new(),
    }
}

fn clock(ts: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ts)
        .format("%H:%M:%S")
        .to_string()
}

fn number(fields: &serde_json::Map<String, Value>, name: &str) -> String {
    fields
        .get(name)
        .and_then(Value::as_f64)
        .map_or("–".into(), |v| format!("{v:.2}"))
}

fn sample_line(s: &Screen) -> String {
    format!(
        "{} T {} °C  setpoint {} °C  heater {}  T_h est {}  anomaly {}",
        clock(s.sample_ts),
        number(&s.sample, "average_temperature"),
        number(&s.sample, "temperature_desired"),
        heater(s),
        s.t_heater.map_or("–".into(), |v| format!("{v:.2} °C")),
        anomaly(s)
    )
}

fn heater(s: &Screen) -> &'static str {
    match s.sample.get("heater_on").and_then(Value::as_bool) {
        Some(true) => "ON",
        Some(false) => "off",
        None => "–",
    }
}

fn anomaly(s: &Screen) -> &'static str {
    match s.anomaly {
        Some(true) => "LID OPEN?",
        Some(false) => "none",
        None => "(warming up)",
    }
}

fn draw(header: &str, s: &Screen) -> std::io::Result<()> {
    let mut out = String::new();
    out.push_str("\x1b[H\x1b[2J");
    out.push_str(&format!("{header}   (Ctrl-C stops everything)\n\n"));
    out.push_str(&format!("  data time            {}\n", clock(s.sample_ts)));
    out.push_str(&format!(
        "  T box, measured      {} °C\n",
        number(&s.sample, "average_temperature")
    ));
    out.push_str(&format!(
        "  T box, estimated     {}\n",
        s.t_box_estimated
            .map_or("–".into(), |v| format!("{v:.2} °C"))
    ));
    out.push_str(&format!(
        "  T heater, estimated  {}\n",
        s.t_heater.map_or("–".into(), |v| format!("{v:.2} °C"))
    ));
    out.push_str(&format!(
        "  room                 {} °C\n",
        number(&s.sample, "t1")
    ));
    out.push_str(&format!(
        "  setpoint             {} °C\n",
        number(&s.sample, "temperature_desired")
    ));
    out.push_str(&format!(
        "  heater               {}  ({}, bursts {} s, gaps {} s)\n",
        heater(s),
        s.sample
            .get("controller_state")
            .and_then(Value::as_str)
            .unwrap_or("–"),
        number(&s.sample, "heating_time"),
        number(&s.sample, "heating_gap")
    ));
    out.push_str(&format!("  anomaly              {}\n\n", anomaly(s)));
    out.push_str("  DT events:\n");
    for event in &s.events {
        out.push_str(&format!("    {event}\n"));
    }
    out.push_str("\n  last commands (ledger status):\n");
    for (id, command, status) in &s.commands {
        out.push_str(&format!("    {command:<12} {status:<13} {id}\n"));
    }
    out.push_str("\n  try: dtaas pt send inc1 lid '{\"open\":true}'   then   '{\"open\":false}'\n");
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()
}
