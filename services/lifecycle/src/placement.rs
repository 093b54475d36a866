//! Placement: which live exec node runs each process. A node fits when it has every
//! label the process needs and free CPU and memory for it (what the node reports in
//! use, plus what this round placed); among those the one with the most free CPU wins,
//! so processes spread.

use std::collections::BTreeMap;

use dtaas_schemas::dt_config::Resources;
use dtaas_schemas::exec::NodeInfo;

use crate::error::Error;

/// What one process needs.
#[derive(Debug, Clone)]
pub struct Demand<'a> {
    pub role: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub resources: Resources,
}

/// The node of each demand, in order; an error names the first that fits nowhere.
pub fn place(
    nodes: &[NodeInfo],
    now_ns: i64,
    demands: &[Demand<'_>],
    avoid: &[String],
) -> Result<Vec<String>, Error> {
    let mut free: Vec<(&NodeInfo, f64, i64, u32)> = nodes
        .iter()
        .filter(|n| !n.is_stale(now_ns) && !avoid.contains(&n.id))
        .map(|n| {
            (
                n,
                n.cpus - n.cpus_used,
                n.memory_mb as i64 - n.memory_mb_used as i64,
                n.processes,
            )
        })
        .collect();
    let mut placed = Vec::with_capacity(demands.len());
    for demand in demands {
        let cpu = demand.resources.cpu.unwrap_or(0.0);
        let memory = demand.resources.memory_mb.unwrap_or(0) as i64;
        let best = free
            .iter_mut()
            .filter(|(n, c, m, _)| {
                demand
                    .labels
                    .iter()
                    .all(|(k, v)| n.labels.get(k) == Some(v))
                    && *c + 1e-9 >= cpu
                    && *m >= memory
            })
            .max_by(|a, b| {
                a.1.total_cmp(&b.1)
                    .then(b.3.cmp(&a.3))
                    .then(b.0.id.cmp(&a.0.id))
            });
        let Some(best) = best else {
            return Err(Error::Unavailable(format!(
                "no live exec node has labels {:?} and free cpu {cpu} and memory {memory} MiB \
                 for role {}; live nodes: {}",
                demand.labels,
                demand.role,
                describe(nodes, now_ns)
            )));
        };
        best.1 -= cpu;
        best.2 -= memory;
        best.3 += 1;
        placed.push(best.0.id.clone());
    }
    Ok(placed)
}

fn describe(nodes: &[NodeInfo], now_ns: i64) -> String {
    let live: Vec<String> = nodes
        .iter()
        .filter(|n| !n.is_stale(now_ns))
        .map(|n| {
            format!(
                "{} ({:.1}/{} cpus used, {}/{} MiB, {:?})",
                n.id, n.cpus_used, n.cpus, n.memory_mb_used, n.memory_mb, n.labels
            )
        })
        .collect();
    if live.is_empty() {
        "none (start one with `dtaas exec`)".into()
    } else {
        live.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, cpus: f64, used: f64, labels: &[(&str, &str)], at: i64) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            cpus,
            memory_mb: 1024,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            heartbeat_at: at,
            started_at: 1,
            processes: 0,
            cpus_used: used,
            memory_mb_used: 0,
        }
    }

    #[test]
    fn spreads_respects_labels_capacity_and_staleness() {
        let now = 100_000_000_000;
        let nodes = [
            node("a", 2.0, 0.0, &[], now),
            node("b", 4.0, 1.0, &[("gpu", "yes")], now),
            node("c", 8.0, 0.0, &[("gpu", "yes")], 0),
        ];
        let none = BTreeMap::new();
        let gpu: BTreeMap<_, _> = [("gpu".to_string(), "yes".to_string())].into();
        let one = Resources {
            cpu: Some(1.0),
            memory_mb: None,
        };
        let d = |role, labels| Demand {
            role,
            labels,
            resources: one,
        };
        let placed = place(
            &nodes,
            now,
            &[d("x", &none), d("y", &none), d("g", &gpu)],
            &[],
        );
        assert_eq!(placed.unwrap(), ["b", "a", "b"]);
        let four = ["g1", "g2", "g3", "g4"].map(|r| d(r, &gpu));
        let err = place(&nodes, now, &four, &[]).unwrap_err().to_string();
        assert!(err.contains("g4") && err.contains("gpu"), "{err}");
        assert!(place(&nodes, now, &[d("x", &none)], &["a".into(), "b".into()]).is_err());
    }
}
