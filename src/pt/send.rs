//! `dtaas pt send <pt> <command> <json>`: a thin client of `cmd.send` that then follows
//! the command's ledger status (`cmd.status`) until it is final or the wait is over.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use dtaas_runtime::Config;
use dtaas_schemas::command::{
    CommandStatusEvent, CommandStatusRequest, SendCommandReply, SendCommandRequest,
};

use super::SendArgs;

/// How long one request may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// How often the ledger is asked while waiting.
const POLL_EVERY: Duration = Duration::from_millis(200);

pub async fn run(args: SendArgs, config: &Config) -> anyhow::Result<()> {
    let payload: serde_json::Value = serde_json::from_str(&args.payload)
        .with_context(|| format!("the payload {:?} is not JSON", args.payload))?;
    let client = dtaas_runtime::nats::connect(config, "dtaas-pt-send").await?;
    let request = SendCommandRequest {
        dt: None,
        pt: args.pt.clone(),
        command: args.command.clone(),
        payload,
        ttl_ms: Some(args.ttl.as_millis() as u64),
    };
    let reply: SendCommandReply = call(&client, &config.user, "send", &request).await?;
    println!("{}", reply.id);
    if args.wait.is_zero() {
        return Ok(());
    }
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < args.wait {
        let status: CommandStatusEvent = call(
            &client,
            &config.user,
            "status",
            &CommandStatusRequest {
                id: reply.id.clone(),
            },
        )
        .await?;
        if last != Some(status.status) {
            match &status.reason {
                Some(reason) => println!("{}: {reason}", status.status.as_str()),
                None => println!("{}", status.status.as_str()),
            }
            last = Some(status.status);
        }
        if status.status.is_final() {
            return Ok(());
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    anyhow::bail!(
        "command {} has no final status after {:?} (is the PT {} connected?); \
         `nats req dtaas.v1.{}.cmd.status '{{\"id\":\"{}\"}}'` shows it later",
        reply.id,
        args.wait,
        args.pt,
        config.user,
        reply.id
    )
}

async fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    user: &str,
    verb: &str,
    body: &Req,
) -> anyhow::Result<Resp> {
    crate::reply::request(client, user, "cmd", verb, body, REQUEST_LIMIT).await
}
