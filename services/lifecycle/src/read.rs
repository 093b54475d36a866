//! `dt.get`, `dt.list`, `dt.logs`: reading the registry and the processes' logs (from
//! the exec nodes' bounded histories).

use dtaas_schemas::exec::{self, LogLine, LogsReply, LogsRequest};
use dtaas_schemas::lifecycle::{DtReply, DtSummary, ListReply};

use crate::core::Core;
use crate::error::Result;
use crate::peers;

impl Core {
    pub async fn get(&self, user: &str, id: &str) -> Result<DtReply> {
        let dt = self.registry.get_owned(user, id).await?.dt;
        let logs = self.log_lines(&dt, self.config.get_log_lines).await;
        Ok(DtReply::new(dt, logs))
    }

    pub async fn list(&self, user: &str) -> Result<ListReply> {
        let mut dts: Vec<DtSummary> = self
            .registry
            .all()
            .await?
            .into_iter()
            .filter(|d| d.owner == user)
            .map(|d| DtSummary {
                processes: d.processes.len(),
                id: d.id,
                state: d.state,
                config_version: d.config_version,
                parent: d.parent,
                fork_of: d.fork_of,
                updated_at: d.updated_at,
            })
            .collect();
        dts.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(ListReply { dts })
    }

    pub async fn logs(&self, user: &str, id: &str, lines: usize) -> Result<Vec<LogLine>> {
        let dt = self.registry.get_owned(user, id).await?.dt;
        Ok(self.log_lines(&dt, lines).await)
    }

    /// The newest `lines` lines of `dt`'s processes from every node that ran them,
    /// oldest first; a node that does not answer contributes nothing.
    async fn log_lines(
        &self,
        dt: &dtaas_schemas::dt_config::DtState,
        lines: usize,
    ) -> Vec<LogLine> {
        let mut nodes: Vec<&str> = dt.processes.iter().map(|p| p.node.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let request = LogsRequest {
            dt: dt.id.clone(),
            role: None,
            lines: Some(lines),
        };
        let timeout = self.config.request_timeout;
        let replies = futures::future::join_all(nodes.iter().map(|node| {
            peers::exec_node::<_, LogsReply>(&self.nats, node, exec::VERB_LOGS, &request, timeout)
        }))
        .await;
        let mut all: Vec<LogLine> = replies
            .into_iter()
            .filter_map(Result::ok)
            .flat_map(|r| r.lines)
            .collect();
        all.sort_by_key(|l| l.at);
        let skip = all.len().saturating_sub(lines);
        all.split_off(skip)
    }
}
