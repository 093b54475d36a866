//! A DT function in Rust, the process contract's example (docs/process-contract.md):
//! input `x` times the parameter `factor` as output `y`; it answers ready requests once
//! subscribed, answers save requests with the number of inputs it has seen and starts
//! from that number when restored.
//!
//! Build it with `cargo build --release --example doubler` (or copy it into a crate of
//! its own with async-nats, tokio, futures and serde_json), put the binary in an asset
//! with `run.command = ["./doubler"]`, and use the asset in a DT.

use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let nats = async_nats::connect(env("DTAAS_NATS_URL")?).await?;
    let (dt, role) = (env("DTAAS_DT")?, env("DTAAS_ROLE")?);
    let params: Value = serde_json::from_str(&env("DTAAS_PARAMS").unwrap_or("{}".into()))?;
    let factor = params["factor"].as_f64().unwrap_or(2.0);
    // A restored process starts from its saved state.
    let mut seen: u64 = match std::env::var("DTAAS_STATE") {
        Ok(file) => std::fs::read_to_string(file)?.trim().parse()?,
        Err(_) => 0,
    };
    let out = env("DTAAS_OUT_Y")?;
    let mut inputs = nats.subscribe(env("DTAAS_IN_X")?).await?;
    let mut saves = nats.subscribe(format!("dtaas.v1.dt.{dt}.ctl.save")).await?;
    // Subscribed after the input (one connection, in order): answering means the
    // input's records reach this process, so a replay may start.
    let mut readies = nats
        .subscribe(format!("dtaas.v1.dt.{dt}.ctl.ready"))
        .await?;
    println!("doubler ready, factor {factor}, {seen} inputs seen before");
    loop {
        tokio::select! {
            Some(msg) = inputs.next() => {
                // One telemetry record, or an array of them (the newest last), in
                // MessagePack (what the bridge sends PT telemetry as) or JSON.
                let record: Value = match msg.payload.first() {
                    Some(b'{' | b'[') => serde_json::from_slice(&msg.payload)?,
                    _ => rmp_serde::from_slice(&msg.payload)?,
                };
                let record = match record {
                    Value::Array(mut all) => all.pop().unwrap_or(Value::Null),
                    one => one,
                };
                let Some(x) = record["fields"]
                    .as_object()
                    .and_then(|f| f.values().find_map(Value::as_f64))
                else {
                    continue;
                };
                seen += 1;
                let ts = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as i64;
                let y = json!({"pt": dt, "measurement": "y", "ts": ts, "fields": {"y": factor * x}});
                nats.publish(out.clone(), y.to_string().into()).await?;
            }
            Some(msg) = saves.next() => {
                if let Some(reply) = msg.reply {
                    nats.publish_with_headers(reply, role_header(&role), seen.to_string().into()).await?;
                }
            }
            Some(msg) = readies.next() => {
                if let Some(reply) = msg.reply {
                    nats.publish_with_headers(reply, role_header(&role), "{}".into()).await?;
                }
            }
            else => return Ok(()),
        }
    }
}

/// The `Dtaas-Role` header control answers (`ctl.save`, `ctl.ready`) carry.
fn role_header(role: &str) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Dtaas-Role", role);
    headers
}
