//! Accounting: usage samples into stream `DTAAS_USAGE`, and `usage.get` over them.
//!
//! Each node publishes, for every run of a process, a sample every `usage_interval`
//! and one when the run ends, each carrying what the run used since the previous
//! stored sample; a sample that JetStream did not acknowledge is not lost, its usage
//! goes into the next one. `usage.get` sums the samples whose time lies in the range,
//! so figures are exact to within one `usage_interval` at the range's edges.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use dtaas_runtime::provision::{ensure_stream, retrying, ProvisionError};
use dtaas_runtime::{Context, RequestInfo};

use crate::error::{failed, timed_out, NatsError};
use dtaas_schemas::exec::{DtUsage, Usage, UsageReply, UsageRequest, UsageSample};
use dtaas_schemas::names::{header, STREAM_USAGE};
use dtaas_schemas::{subject, time, ErrorCode, ErrorReply};
use futures::StreamExt;

/// The default range of `usage.get`: the last day.
const DEFAULT_RANGE_NS: i64 = 86_400 * 1_000_000_000;
/// How long one read of the stream may wait for its next sample.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Provisions `DTAAS_USAGE`, waiting for JetStream as the other streams are
/// (`nats_provision_timeout`).
pub async fn provision(ctx: &Context, retention: Duration) -> Result<(), ProvisionError> {
    let wanted = stream::Config {
        name: STREAM_USAGE.to_owned(),
        description: Some("Usage samples of DT processes (accounting)".to_owned()),
        subjects: vec![subject::usage_all()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        max_age: retention,
        num_replicas: ctx.config.replicas,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let deadline = ctx.config.nats_provision_timeout;
    retrying(deadline, &ctx.shutdown, || {
        ensure_stream(&ctx.js, wanted.clone())
    })
    .await
}

/// Stores one sample; `Ok` once JetStream acknowledged it.
pub async fn publish(js: &jetstream::Context, sample: &UsageSample) -> Result<(), NatsError> {
    let subject = subject::usage_sample(&sample.user, &sample.dt)?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, "application/json");
    headers.insert(
        header::MSG_ID,
        format!(
            "{}.{}.{}.{}",
            sample.node, sample.pid, sample.run_started_at, sample.at
        )
        .as_str(),
    );
    let body = serde_json::to_vec(sample)?;
    const WHAT: &str = "cannot publish a usage sample";
    let wait = Duration::from_secs(5);
    let ack = tokio::time::timeout(wait, js.publish_with_headers(subject, headers, body.into()))
        .await
        .map_err(timed_out(WHAT, wait))?
        .map_err(failed(WHAT))?;
    tokio::time::timeout(wait, ack)
        .await
        .map_err(timed_out(WHAT, wait))?
        .map_err(failed(WHAT))?;
    Ok(())
}

/// Who asked for whose usage: the caller, another user, or everybody (`None`).
fn whose(
    info: &RequestInfo,
    request: &UsageRequest,
    admins: &[String],
) -> Result<Option<String>, ErrorReply> {
    match request.user.as_deref() {
        None => Ok(Some(info.user.clone())),
        Some(user) if user == info.user => Ok(Some(info.user.clone())),
        Some(user) if admins.iter().any(|a| a == &info.user) => {
            Ok((user != "*").then(|| user.to_owned()))
        }
        Some(_) => Err(ErrorReply::new(
            ErrorCode::Forbidden,
            format!(
                "{} may only read their own usage; admins (`[exec] admins`) may read another user's or `*`",
                info.user
            ),
        )),
    }
}

/// Answers `usage.get`.
pub async fn get(
    js: &jetstream::Context,
    admins: &[String],
    info: RequestInfo,
    request: UsageRequest,
) -> Result<UsageReply, ErrorReply> {
    let user = whose(&info, &request, admins)?;
    let now = time::now_ns();
    let bad = |field: &str, m: String| {
        ErrorReply::new(ErrorCode::BadRequest, format!("field `{field}`: {m}"))
    };
    let from = match &request.from {
        Some(text) => time::parse_time(text, now).map_err(|e| bad("from", e.to_string()))?,
        None => now - DEFAULT_RANGE_NS,
    };
    let to = match &request.to {
        Some(text) => time::parse_time(text, now).map_err(|e| bad("to", e.to_string()))?,
        None => now,
    };
    if from > to {
        return Err(bad("from", "lies after `to`".into()));
    }
    let filter = match &user {
        Some(user) => subject::usage_user_all(user)
            .map_err(|e| ErrorReply::new(ErrorCode::BadRequest, e.to_string()))?,
        None => subject::usage_all(),
    };
    let samples = read(js, filter, from).await.map_err(|e| {
        ErrorReply::new(
            ErrorCode::Unavailable,
            format!("cannot read {STREAM_USAGE}: {e:#}"),
        )
    })?;
    Ok(sum(
        samples.iter().filter(|s| s.at >= from && s.at <= to),
        from,
        to,
    ))
}

/// A run of a process: its node, pid and start.
type Run = (String, u32, i64);

/// Sums samples per user and DT, and in total.
pub fn sum<'a>(samples: impl Iterator<Item = &'a UsageSample>, from: i64, to: i64) -> UsageReply {
    let mut per_dt: BTreeMap<(String, String), (Usage, HashSet<Run>)> = BTreeMap::new();
    for sample in samples {
        let (usage, runs) = per_dt
            .entry((sample.user.clone(), sample.dt.clone()))
            .or_default();
        usage.cpu_seconds += sample.cpu_seconds;
        usage.wall_seconds += sample.wall_seconds;
        usage.peak_memory_kib = usage.peak_memory_kib.max(sample.peak_memory_kib);
        runs.insert((sample.node.clone(), sample.pid, sample.run_started_at));
    }
    let mut total = Usage::default();
    let dts = per_dt
        .into_iter()
        .map(|((user, dt), (mut usage, runs))| {
            usage.runs = runs.len() as u64;
            total.cpu_seconds += usage.cpu_seconds;
            total.wall_seconds += usage.wall_seconds;
            total.peak_memory_kib = total.peak_memory_kib.max(usage.peak_memory_kib);
            total.runs += usage.runs;
            DtUsage { user, dt, usage }
        })
        .collect();
    UsageReply {
        from,
        to,
        dts,
        total,
    }
}

/// Every sample under `filter` stored since `from` (ns).
async fn read(
    js: &jetstream::Context,
    filter: String,
    from: i64,
) -> Result<Vec<UsageSample>, NatsError> {
    const WHAT: &str = "cannot read the usage stream";
    let stream = js.get_stream(STREAM_USAGE).await.map_err(failed(WHAT))?;
    let start_time = ::time::OffsetDateTime::from_unix_timestamp_nanos(from as i128)
        .map_err(failed("the range starts outside of what a timestamp holds"))?;
    let mut consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time },
            ..Default::default()
        })
        .await
        .map_err(failed(WHAT))?;
    let mut samples = Vec::new();
    if consumer.info().await.map_err(failed(WHAT))?.num_pending == 0 {
        return Ok(samples);
    }
    let mut messages = consumer.messages().await.map_err(failed(WHAT))?;
    loop {
        let message = tokio::time::timeout(READ_TIMEOUT, messages.next())
            .await
            .map_err(timed_out(WHAT, READ_TIMEOUT))?
            .ok_or_else(|| failed(WHAT)("the consumer ended"))?
            .map_err(failed(WHAT))?;
        let pending = message.info().map(|i| i.pending).unwrap_or(0);
        match serde_json::from_slice::<UsageSample>(&message.payload) {
            Ok(sample) => samples.push(sample),
            Err(error) => {
                tracing::warn!(subject = %message.subject, %error, "Skipping a usage sample that does not decode.")
            }
        }
        if pending == 0 {
            return Ok(samples);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dt: &str, pid: u32, cpu: f64, peak: u64) -> UsageSample {
        UsageSample {
            user: "alice".into(),
            dt: dt.into(),
            role: "r".into(),
            node: "n1".into(),
            pid,
            run_started_at: 1,
            at: 5,
            cpu_seconds: cpu,
            wall_seconds: 1.0,
            peak_memory_kib: peak,
            ended: false,
        }
    }

    #[test]
    fn sums_per_dt_and_in_total() {
        let samples = [
            sample("a", 1, 1.5, 10),
            sample("a", 1, 0.5, 30),
            sample("b", 2, 2.0, 20),
        ];
        let reply = sum(samples.iter(), 0, 10);
        assert_eq!(reply.dts.len(), 2);
        assert_eq!(reply.dts[0].usage.cpu_seconds, 2.0);
        assert_eq!(reply.dts[0].usage.runs, 1);
        assert_eq!(reply.dts[0].usage.peak_memory_kib, 30);
        assert_eq!(reply.total.cpu_seconds, 4.0);
        assert_eq!(reply.total.runs, 2);
    }

    #[test]
    fn only_admins_read_others() {
        let info = RequestInfo {
            user: "bob".into(),
            subject: String::new(),
        };
        let mut request = UsageRequest {
            user: Some("alice".into()),
            ..Default::default()
        };
        assert_eq!(
            whose(&info, &request, &[]).unwrap_err().error.code,
            ErrorCode::Forbidden
        );
        assert_eq!(
            whose(&info, &request, &["bob".into()]).unwrap(),
            Some("alice".into())
        );
        request.user = Some("*".into());
        assert_eq!(whose(&info, &request, &["bob".into()]).unwrap(), None);
    }
}
