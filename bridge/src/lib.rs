//! The dtaas bridge worker: MQTT telemetry in, commands out, command ledger.
//!
//! Tasks: the MQTT poller (`mqtt::poll`), the uplink (`uplink`), the downlink
//! (`downlink`) and the request endpoints (`requests`). See `docs/bridge.md`.

pub mod backlog;
pub mod config;
pub mod downlink;
pub mod dt_commands;
pub mod error;
pub mod ledger;
pub mod mqtt;
pub mod msg_id;
pub mod outgoing;
pub mod payload;
pub mod requests;
pub mod stats;
pub mod throttle;
pub mod topic_map;
pub mod uplink;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use dtaas_runtime::service::{StatsFn, WorkerService};
use dtaas_runtime::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::BridgeConfig;
pub use crate::error::RunError;
use crate::stats::Stats;

/// The worker's name: `dtaas bridge`, service `dtaas-bridge`.
pub const WORKER: &str = "bridge";

/// Environment variables this worker reads, for `dtaas bridge --help`.
pub const ENV_HELP: &str = config::ENV_HELP;

/// Runs the worker until `ctx.shutdown` is cancelled, then drains and disconnects.
pub async fn run(ctx: Context) -> Result<(), RunError> {
    let bridge = BridgeConfig::load(&ctx.config)?;
    let stats = Arc::new(Stats::default());
    let ledger = ledger::Ledger::open(&ctx.js).await?;
    let maps = topic_map::TopicMaps::new(&bridge);
    let filters = maps
        .filters()
        .map(|f| (f.to_owned(), mqtt::qos(bridge.qos)))
        .collect();
    let settings = mqtt::Settings::new(&ctx.config, &bridge)?;
    let (client, eventloop) = mqtt::client(&settings);
    let acks = Arc::new(mqtt::BrokerAcks::default());
    // Room for the whole receive window plus QoS 0 messages: see `mqtt`.
    let (tx, rx) = mpsc::channel(bridge.in_flight as usize + 64);
    let poll_stop = CancellationToken::new();
    let mut poller = dtaas_runtime::task::spawn(
        "mqtt poller",
        &ctx.shutdown,
        mqtt::poll(
            mqtt::Poller {
                settings,
                client: client.clone(),
                filters,
                incoming: tx,
                stats: stats.clone(),
                acks: acks.clone(),
            },
            eventloop,
            poll_stop.clone(),
        ),
    );
    tracing::info!(
        client_id = bridge.client_id(),
        broker = %ctx.config.mqtt_url,
        mqtt_protocol = bridge.mqtt_protocol.name(),
        mqtt_username = bridge.mqtt_username.as_deref().unwrap_or("(none)"),
        "Bridge starting."
    );

    let backlog = match bridge.backlog_max_bytes {
        0 => None,
        max => Some(backlog::Backlog::open(
            &ctx.config.data_dir.join("bridge-backlog"),
            max,
            stats.backlog.clone(),
        )?),
    };
    let uplink = Arc::new(uplink::Uplink {
        js: ctx.publisher(),
        client: client.clone(),
        maps,
        ledger: ledger.clone(),
        stats: stats.clone(),
        known_pts: bridge
            .reject_unknown_pts
            .then(|| bridge.known_pts.iter().cloned().collect::<HashSet<_>>()),
        window: bridge.in_flight as usize,
        msg_ids: msg_id::MsgIds::default(),
        backlog: backlog.clone(),
    });
    let drain_task = backlog.map(|backlog| {
        dtaas_runtime::task::spawn(
            "backlog drain",
            &ctx.shutdown,
            uplink.clone().drain_backlog(backlog, ctx.shutdown.clone()),
        )
    });
    let uplink_task = dtaas_runtime::task::spawn(
        "uplink",
        &ctx.shutdown,
        uplink.run(rx, ctx.shutdown.clone()),
    );
    let downlink_task = dtaas_runtime::task::spawn(
        "downlink",
        &ctx.shutdown,
        downlink::Downlink {
            js: ctx.js.clone(),
            client: client.clone(),
            ledger: ledger.clone(),
            stats: stats.clone(),
            acks,
            qos: mqtt::qos(bridge.command_qos),
            consumer: bridge.command_consumer.clone(),
        }
        .run(ctx.shutdown.clone()),
    );

    let stats_fn: StatsFn = {
        let stats = stats.clone();
        Arc::new(move || serde_json::to_value(stats.snapshot()).unwrap_or_default())
    };
    let mut svc =
        WorkerService::start(&ctx, WORKER, "MQTT <-> NATS bridge", Some(stats_fn)).await?;
    let limits = requests::Limits {
        max_payload: bridge.max_command_payload,
        max_ttl_ms: bridge.max_command_ttl_ms,
    };
    requests::register(&mut svc, ctx.js.clone(), ledger, stats.clone(), limits).await?;
    let svc_task = tokio::spawn(svc.run());

    // A task that panics cancels the shutdown token too (`dtaas_runtime::task`).
    ctx.shutdown.cancelled().await;
    tracing::info!("Bridge stopping: finishing in-flight messages.");
    // What the backlog drain did not finish stays on disk for the next run.
    let links = dtaas_runtime::task::join_all(
        std::iter::once(uplink_task)
            .chain(drain_task)
            .chain([downlink_task]),
    )
    .await;
    // Acks queued by the uplink go out before the DISCONNECT, which ends the poller.
    let _ = tokio::time::timeout(Duration::from_secs(2), client.disconnect()).await;
    let polled = match tokio::time::timeout(Duration::from_secs(5), &mut poller).await {
        Ok(polled) => polled,
        Err(_) => {
            poll_stop.cancel();
            poller.await
        }
    };
    let served = svc_task.await;
    if let Err(error) = ctx.nats.flush().await {
        tracing::warn!(%error, "Cannot flush NATS.");
    }
    tracing::info!(stats = ?stats.snapshot(), "Bridge stopped.");
    links?;
    polled??;
    served??;
    Ok(())
}
