//! A three-node (or any size) nats-server cluster with JetStream on loopback, every
//! node routing to every other, for tests that kill a stream leader.

use std::time::Duration;

use crate::http;
use crate::nats::{NatsOptions, NatsServer};
use crate::ports::{free_port, wait_until};

/// The nodes of one cluster; each is killed and removed on drop.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// `size` nodes of cluster `dtaas-test`, started and waited for until JetStream has
    /// a meta leader.
    pub fn start(size: usize) -> anyhow::Result<Self> {
        Self::start_with(size, NatsOptions::default())
    }

    /// Like `start`, every node also with `options` (authorization, MQTT, …).
    pub fn start_with(size: usize, options: NatsOptions) -> anyhow::Result<Self> {
        // Ports are free when picked but may be taken by another test before a node
        // binds them; a cluster whose node could not start is tried again on others.
        let mut attempt = 1;
        loop {
            match Self::start_once(size, options.clone()) {
                Ok(cluster) => return Ok(cluster),
                Err(error) if attempt < 3 => {
                    eprintln!("NATS cluster did not start (attempt {attempt}): {error:#}");
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn start_once(size: usize, options: NatsOptions) -> anyhow::Result<Self> {
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route)| format!("nats://127.0.0.1:{route}"))
            .collect();
        let id = ports[0].0;
        let mut nodes = Vec::with_capacity(size);
        for (index, (port, route)) in ports.iter().enumerate() {
            let cluster = format!(
                "cluster {{ name: dtaas-test-{id}, listen: 127.0.0.1:{route}, routes: [{}] }}",
                routes.join(", ")
            );
            let node = options
                .clone()
                .port(*port)
                .name(format!("n{}-{id}", index + 1))
                .config(&cluster)
                .start()?;
            nodes.push(node);
        }
        let cluster = Self { nodes };
        cluster.wait_for_meta_leader()?;
        Ok(cluster)
    }

    /// Waits until every node that answers (a killed one does not) knows a JetStream
    /// meta leader.
    pub fn wait_for_meta_leader(&self) -> anyhow::Result<()> {
        let ready = wait_until(Duration::from_secs(60), || {
            let answers: Vec<bool> = self
                .nodes
                .iter()
                .filter_map(|node| http::get(node.http_port, "/jsz").ok())
                .map(|(status, body)| status == 200 && has_leader(&body))
                .collect();
            !answers.is_empty() && answers.iter().all(|ok| *ok)
        });
        anyhow::ensure!(
            ready,
            "the NATS cluster elected no JetStream meta leader in 60 s"
        );
        Ok(())
    }

    /// Every node's URL, comma-separated: the seeds as `DTAAS_NATS_URL` takes them.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(NatsServer::url).collect();
        urls.join(",")
    }

    /// The node whose `server_name` is `name`.
    pub fn node_named(&mut self, name: &str) -> Option<&mut NatsServer> {
        self.nodes.iter_mut().find(|node| node.name == name)
    }
}

/// `/jsz` names a meta leader (`"leader": "n2-…"`, not empty).
fn has_leader(jsz: &str) -> bool {
    jsz.split("\"leader\":")
        .nth(1)
        .and_then(|rest| rest.trim_start().strip_prefix('"'))
        .is_some_and(|name| !name.starts_with('"'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn leader_is_read_from_jsz() {
        assert!(super::has_leader(
            r#"{"meta_cluster": {"name": "c", "leader": "n1-5"}}"#
        ));
        assert!(!super::has_leader(
            r#"{"meta_cluster": {"name": "c", "leader": ""}}"#
        ));
        assert!(!super::has_leader(r#"{"meta_cluster": {"name": "c"}}"#));
    }
}
