//! `dtaas pt sim`: the simulated incubator as an MQTT device on the default topic map.
//!
//! It is an independent MQTT client (not the bridge): one JSON sample per period on
//! `dtaas/pt/<pt>/tel/state` at QoS 1, commands from `dtaas/pt/<pt>/cmd/+`, each
//! answered on `dtaas/pt/<pt>/cmd/<command>/ack` with `{"id","ok"[,"error"]}`. The id
//! comes from the MQTT 5 properties the bridge sets (or an `id` in the payload).
//! Simulated time runs `time_scale` times as fast as the wall clock; sample
//! timestamps are simulated time, so with a time scale above 1 they run ahead of the
//! wall clock. When the broker is slow the simulation waits: no sample is skipped.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use dtaas_bridge::mqtt::COMMAND_ID_PROPERTY;
use dtaas_bridge::topic_map;
use dtaas_runtime::Config;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::incubator::{Incubator, Order};
use super::SimArgs;

/// The measurement every sample is published as.
pub const MEASUREMENT: &str = "state";

/// Commands waiting for the simulation loop; the poller never blocks on it.
const COMMAND_QUEUE: usize = 256;

/// A command as received.
struct Received {
    name: String,
    id: Option<String>,
    payload: Bytes,
}

/// Runs the simulator until `shutdown` or, with `--samples`, until that many were sent.
pub async fn run(
    args: SimArgs,
    config: &Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    dtaas_schemas::subject::validate_token("PT id", &args.pt)?;
    anyhow::ensure!(!args.period.is_zero(), "--period must be longer than zero");
    let url = &config.mqtt_url;
    anyhow::ensure!(
        !url.tls,
        "the simulator speaks plain MQTT only; point DTAAS_MQTT_URL at an mqtt:// listener"
    );
    let mut options = MqttOptions::new(format!("dtaas-pt-sim-{}", args.pt), &url.host, url.port);
    options
        .set_keep_alive(Duration::from_secs(10))
        .set_clean_start(true);
    if let Some(user) = &url.username {
        let password = url.password.as_ref().map(|p| p.expose()).unwrap_or("");
        options.set_credentials(user, password);
    }
    let (client, eventloop) = AsyncClient::new(options, 64);
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let poller = tokio::spawn(poll(eventloop, client.clone(), args.pt.clone(), tx));
    let result = simulate(&args, &client, rx, &shutdown).await;
    let _ = client.disconnect().await;
    // Give the DISCONNECT (and the last acks) a moment to go out.
    let _ = tokio::time::timeout(Duration::from_secs(2), poller).await;
    result
}

async fn simulate(
    args: &SimArgs,
    client: &AsyncClient,
    mut commands: mpsc::Receiver<Received>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let start_ns = dtaas_schemas::time::now_ns();
    let seed = args.seed.unwrap_or(start_ns as u64);
    let mut incubator = Incubator::new(args.room, args.noise, seed, start_ns);
    let period_s = args.period.as_secs_f64();
    let tick = args.period.div_f64(args.time_scale);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let topic = topic_map::telemetry_topic(&args.pt, MEASUREMENT);
    tracing::info!(pt = %args.pt, %topic, period = ?args.period, time_scale = args.time_scale, "Simulated incubator running.");
    let mut sent = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            Some(command) = commands.recv() => {
                answer(client, &args.pt, &mut incubator, command).await?;
            }
            _ = interval.tick() => {
                let sample = incubator.step(period_s);
                let body = serde_json::to_vec(&sample)?;
                client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, body)
                    .await
                    .context("the MQTT client stopped")?;
                sent += 1;
                if args.samples.is_some_and(|n| sent >= n) {
                    tracing::info!(sent, "All samples sent.");
                    return Ok(());
                }
            }
        }
    }
}

/// Applies one command and acknowledges it (also when it was refused, with the reason).
async fn answer(
    client: &AsyncClient,
    pt: &str,
    incubator: &mut Incubator,
    command: Received,
) -> anyhow::Result<()> {
    let result = Order::parse(&command.name, &command.payload).and_then(|order| {
        incubator.apply(&order)?;
        Ok(order)
    });
    let id = command.id.or_else(|| payload_id(&command.payload));
    match &result {
        Ok(order) => tracing::info!(command = %command.name, ?order, id = ?id, "Command applied."),
        Err(error) => tracing::warn!(command = %command.name, %error, id = ?id, "Command refused."),
    }
    let Some(id) = id else {
        tracing::warn!(command = %command.name, "The command carries no id; it cannot be acknowledged.");
        return Ok(());
    };
    let ack = match result {
        Ok(_) => serde_json::json!({ "id": id, "ok": true }),
        Err(error) => serde_json::json!({ "id": id, "ok": false, "error": error.to_string() }),
    };
    client
        .publish(
            topic_map::ack_topic(pt, &command.name),
            QoS::AtLeastOnce,
            false,
            serde_json::to_vec(&ack)?,
        )
        .await
        .context("the MQTT client stopped")
}

/// An `id` field of a JSON payload, for senders that cannot use MQTT 5 properties.
fn payload_id(payload: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    value.get("id")?.as_str().map(str::to_owned)
}

/// Polls the MQTT connection; subscribes on every CONNACK; hands commands over without
/// ever waiting (rumqttc deadlocks when the poller waits for the publisher).
async fn poll(
    mut eventloop: EventLoop,
    client: AsyncClient,
    pt: String,
    tx: mpsc::Sender<Received>,
) {
    let filter = topic_map::command_filter(&pt);
    let mut backoff = dtaas_runtime::backoff::Backoff::new();
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                tracing::info!(%filter, "Connected to the MQTT broker.");
                if let Err(error) = client.try_subscribe(filter.as_str(), QoS::AtLeastOnce) {
                    tracing::error!(%error, "Cannot subscribe to commands.");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if let Some(command) = received(&publish) {
                    if tx.try_send(command).is_err() {
                        tracing::error!("Command queue full or closed; command dropped.");
                    }
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(error) => {
                if tx.is_closed() {
                    return;
                }
                tracing::warn!(%error, attempt = backoff.attempt(), "MQTT connection lost; reconnecting.");
                backoff.sleep().await;
            }
        }
    }
}

/// The command name and id of a publish on `dtaas/pt/<pt>/cmd/<command>`.
fn received(publish: &Publish) -> Option<Received> {
    let topic = std::str::from_utf8(&publish.topic).ok()?;
    let name = topic.rsplit('/').next()?.to_owned();
    let id = publish.properties.as_ref().and_then(|p| {
        p.user_properties
            .iter()
            .find(|(key, _)| key == COMMAND_ID_PROPERTY)
            .map(|(_, value)| value.clone())
            .or_else(|| {
                p.correlation_data
                    .as_ref()
                    .and_then(|c| String::from_utf8(c.to_vec()).ok())
            })
    });
    Some(Received {
        name,
        id,
        payload: publish.payload.clone(),
    })
}
