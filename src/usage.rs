//! `dtaas usage`: what the caller's DTs used (CPU seconds, wall time, peak memory),
//! per DT and in total, from `dtaas.v1.<DTAAS_USER>.usage.get`.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use dtaas_runtime::Config;
use dtaas_schemas::exec::{UsageReply, UsageRequest, USAGE_SERVICE, USAGE_VERB_GET};
use dtaas_schemas::{subject, ErrorReply};

/// How long `usage.get` may take before the CLI gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `dtaas usage`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct UsageArgs {
    /// Start of the range: RFC 3339, `now`, or relative like `-7d`.
    #[arg(long, default_value = "-24h", allow_hyphen_values = true)]
    pub from: String,
    /// End of the range.
    #[arg(long, default_value = "now", allow_hyphen_values = true)]
    pub to: String,
    /// Another user's usage (admins only); `*` for every user.
    #[arg(long)]
    pub user: Option<String>,
    /// Print the reply as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Asks `usage.get` as `DTAAS_USER` and prints the answer.
pub async fn run(config: &Config, args: UsageArgs) -> anyhow::Result<()> {
    let client = dtaas_runtime::nats::connect(config, "dtaas-cli").await?;
    let subject = subject::request(&config.user, USAGE_SERVICE, USAGE_VERB_GET)
        .context("DTAAS_USER cannot be used in a subject")?;
    let request = UsageRequest {
        from: Some(args.from),
        to: Some(args.to),
        user: args.user,
    };
    let reply = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.request(subject.clone(), serde_json::to_vec(&request)?.into()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("{subject} did not answer within {REQUEST_TIMEOUT:?}; is an exec node (`dtaas exec` or `dtaas up`) running?"))?
    .map_err(|e| anyhow::anyhow!("{subject}: {e}; is an exec node (`dtaas exec` or `dtaas up`) running?"))?;
    if let Ok(error) = serde_json::from_slice::<ErrorReply>(&reply.payload) {
        anyhow::bail!("{}", error.error.message);
    }
    let usage: UsageReply = serde_json::from_slice(&reply.payload)
        .with_context(|| format!("{subject} sent a reply this CLI cannot read"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&usage)?);
    } else {
        print!("{}", table(&usage));
    }
    Ok(())
}

/// The reply as a table for people.
fn table(usage: &UsageReply) -> String {
    let mut out = format!(
        "{:<24} {:<12} {:>12} {:>12} {:>10} {:>6}\n",
        "DT", "USER", "CPU s", "WALL s", "PEAK MiB", "RUNS"
    );
    let row = |dt: &str, user: &str, u: &dtaas_schemas::exec::Usage| {
        format!(
            "{:<24} {:<12} {:>12.2} {:>12.1} {:>10.1} {:>6}\n",
            dt,
            user,
            u.cpu_seconds,
            u.wall_seconds,
            u.peak_memory_kib as f64 / 1024.0,
            u.runs
        )
    };
    for dt in &usage.dts {
        out.push_str(&row(&dt.dt, &dt.user, &dt.usage));
    }
    out.push_str(&row("total", "", &usage.total));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtaas_schemas::exec::{DtUsage, Usage};

    #[test]
    fn table_has_a_row_per_dt_and_a_total() {
        let usage = Usage {
            cpu_seconds: 1.5,
            wall_seconds: 10.0,
            peak_memory_kib: 2048,
            runs: 1,
        };
        let reply = UsageReply {
            from: 0,
            to: 1,
            dts: vec![DtUsage {
                user: "alice".into(),
                dt: "dbl-1".into(),
                usage: usage.clone(),
            }],
            total: usage,
        };
        let text = table(&reply);
        assert_eq!(text.lines().count(), 3);
        assert!(text.contains("dbl-1"), "{text}");
        assert!(text.lines().last().unwrap().starts_with("total"), "{text}");
        assert!(text.contains("2.0"), "{text}");
    }
}
