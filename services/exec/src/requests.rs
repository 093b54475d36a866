//! The exec node's endpoints: `dtaas.v1.exec.<node>.{start,stop,list,logs}` on the
//! supervisor, `dtaas.v1.<user>.usage.get` on the usage stream, and the node's stats.

use std::sync::Arc;

use async_nats::jetstream;
use dtaas_runtime::service::{ServiceError, StatsFn};
use dtaas_runtime::WorkerService;
use dtaas_schemas::exec::{
    ListRequest, LogsRequest, ProcessSpec, StopRequest, UsageRequest, USAGE_SERVICE,
    USAGE_VERB_GET, VERB_LIST, VERB_LOGS, VERB_START, VERB_STOP,
};
use dtaas_schemas::stats::ExecStats;
use dtaas_schemas::subject;

use crate::supervisor::Supervisor;
use crate::usage;

/// What `usage.get` needs: where the samples are and who may read everyone's.
#[derive(Clone)]
pub struct Accounting {
    pub js: jetstream::Context,
    pub admins: Arc<Vec<String>>,
}

/// The node's `$SRV.STATS` data: what it runs now.
pub fn stats(supervisor: &Arc<Supervisor>) -> StatsFn {
    let supervisor = supervisor.clone();
    Arc::new(move || {
        let (processes, cpus_used, memory_mb_used) = supervisor.load();
        serde_json::json!(ExecStats {
            node: supervisor.node.clone(),
            processes,
            cpus_used,
            memory_mb_used,
        })
    })
}

/// Serves the node verbs of `node` with `supervisor`, and `usage.get` with `accounting`.
pub async fn register(
    service: &mut WorkerService,
    node: &str,
    supervisor: &Arc<Supervisor>,
    accounting: Accounting,
) -> Result<(), ServiceError> {
    let at = |verb: &str| subject::exec_node(node, verb);
    service
        .endpoint_at_with(
            supervisor,
            &format!("exec-{VERB_START}"),
            at(VERB_START)?,
            |s, _, spec: ProcessSpec| async move { s.start(spec).await },
        )
        .await?;
    service
        .endpoint_at_with(
            supervisor,
            &format!("exec-{VERB_STOP}"),
            at(VERB_STOP)?,
            |s, _, r: StopRequest| async move { s.stop(r).await },
        )
        .await?;
    service
        .endpoint_at_with(
            supervisor,
            &format!("exec-{VERB_LIST}"),
            at(VERB_LIST)?,
            |s, _, r: ListRequest| async move { Ok(s.list(r.dt.as_deref())) },
        )
        .await?;
    service
        .endpoint_at_with(
            supervisor,
            &format!("exec-{VERB_LOGS}"),
            at(VERB_LOGS)?,
            |s, _, r: LogsRequest| async move { Ok(s.logs(&r)) },
        )
        .await?;
    service
        .endpoint_with(
            &accounting,
            USAGE_SERVICE,
            USAGE_VERB_GET,
            |a, info, request: UsageRequest| async move {
                usage::get(&a.js, &a.admins, info, request).await
            },
        )
        .await
}
