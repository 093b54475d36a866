//! `dtaas pt send <pt> <command> <json>`: a thin client of `cmd.send` that then follows
//! the command's ledger status (`cmd.status`) until it is final or the wait is over.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use dtaas_runtime::Config;
use dtaas_schemas::command::{
    CommandStatusEvent, CommandStatusRequest, SendCommandReply, SendCommandRequest,
};
use dtaas_schemas::subject;

use super::SendArgs;

/// How often the ledger is asked while waiting.
const POLL_EVERY: Duration = Duration::from_millis(200);

pub async fn run(args: SendArgs, config: &Config) -> anyhow::Result<()> {
    let payload: serde_json::Value = serde_json::from_str(&args.payload)
        .with_context(|| format!("the payload {:?} is not JSON", args.payload))?;
    let client = dtaas_runtime::nats::connect(config, "dtaas-pt-send").await?;
    let request = SendCommandRequest {
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
            let reason = status.reason.as_deref().unwrap_or("");
            println!("{} {reason}", status.status.as_str());
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

/// One `cmd.<verb>` request in JSON; an error reply becomes an error naming its code.
async fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    user: &str,
    verb: &str,
    request: &Req,
) -> anyhow::Result<Resp> {
    let subject = subject::request(user, "cmd", verb)?;
    let body = serde_json::to_vec(request)?;
    let message = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(subject.clone(), body.into()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no reply on {subject} within 10 s"))?
    .with_context(|| format!("no reply on {subject}; is the bridge running (`dtaas up`)?"))?;
    crate::reply::decode(&message.payload)
}
