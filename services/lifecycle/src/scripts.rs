//! DTaaS-layout DTs: their `lifecycle/` scripts (`create`, `terminate`, `clean`,
//! `save`, `evolve`, …) run through exec like any process, one after the other in use
//! order, in the asset's work directory with the DT's environment. A script that
//! ends with success is a completed step; one that fails fails the operation.

use dtaas_schemas::asset::AssetMeta;
use dtaas_schemas::codec::decode;
use dtaas_schemas::dt_config::{DtState, RestartPolicy};
use dtaas_schemas::exec::{self, ProcessEvent, ProcessEventKind, StartReply};
use dtaas_schemas::subject;
use dtaas_schemas::time::now_ns;
use futures::StreamExt;

use crate::core::Core;
use crate::error::{Error, Result};
use crate::placement::{place, Demand};
use crate::{peers, spec};

/// Whether any of `metas` has a `phase` script.
pub fn has_phase(metas: &[AssetMeta], phase: &str) -> bool {
    metas.iter().any(|m| {
        m.run
            .as_ref()
            .is_some_and(|r| r.lifecycle.contains_key(phase))
    })
}

/// Runs the `phase` script of every use of `dt` that has one; answers the processes
/// (`<role>-<phase>`) that ran, in use order.
pub async fn run_phase(
    core: &Core,
    dt: &DtState,
    metas: &[AssetMeta],
    phase: &str,
) -> Result<Vec<String>> {
    let planned = spec::plan(&dt.owner, &dt.config, metas)?;
    let mut ran = Vec::new();
    for p in planned {
        let Some(meta) = metas.iter().find(|m| m.address() == p.spec.asset) else {
            continue;
        };
        let Some(script) = meta.run.as_ref().and_then(|r| r.lifecycle.get(phase)) else {
            continue;
        };
        let mut spec = p.spec.clone();
        let role = spec.role.clone();
        spec.role = format!("{role}-{phase}");
        spec.argv = vec!["bash".into(), script.clone()];
        spec.restart = RestartPolicy::Never;
        let nodes = peers::nodes(&core.js).await?;
        let demand = Demand {
            role: &spec.role,
            labels: &p.labels,
            resources: p.resources,
        };
        let node = place(&nodes, now_ns(), &[demand], &[])?.remove(0);
        let mut events = core
            .nats
            .subscribe(subject::event_id_all(exec::EVENT_KIND, &dt.id)?)
            .await
            .map_err(|e| Error::unavailable("cannot follow process events", e))?;
        let _: StartReply = peers::exec_node(
            &core.nats,
            &node,
            exec::VERB_START,
            &spec,
            core.config.request_timeout,
        )
        .await?;
        let timeout = core.config.script_timeout;
        let ended = tokio::time::timeout(timeout, async {
            while let Some(message) = events.next().await {
                let Ok(event) = decode::<ProcessEvent>(None, &message.payload) else {
                    continue;
                };
                if event.role == spec.role && event.status != ProcessEventKind::Started {
                    return Some(event);
                }
            }
            None
        })
        .await;
        match ended {
            Ok(Some(event)) if event.status == ProcessEventKind::Exited => ran.push(spec.role),
            Ok(Some(event)) => {
                return Err(Error::Conflict(format!(
                    "the {phase} script of role {role} ({script}) ended {} (exit code {:?}); \
                     `dtaas dt logs {}` shows its output",
                    event.status.as_str(),
                    event.exit_code,
                    dt.id
                )))
            }
            Ok(None) => return Err(Error::Unavailable("process events stopped".into())),
            Err(_) => {
                core.stop_on(&dt.id, &node, Some(&spec.role)).await;
                return Err(Error::Conflict(format!(
                    "the {phase} script of role {role} ({script}) did not end within {timeout:?}"
                )));
            }
        }
    }
    Ok(ran)
}
