//! Output lines of DT processes: each one to `dtaas.v1.dt.<dt>.log.<role>` and into a
//! bounded history per process that `logs` requests read.
//!
//! A process that writes faster than NATS takes its lines is slowed down (its pipe
//! fills while a publish waits); no line is dropped on the way to NATS. The history
//! keeps the last `log_history` lines of each process and is dropped when the
//! process is stopped.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_nats::Client;
use dtaas_schemas::exec::{LogLine, LogStream};
use dtaas_schemas::{subject, time};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use crate::supervisor::Key;

/// Longer lines are cut here (and marked), so one line cannot take unbounded memory.
const MAX_LINE: usize = 16 * 1024;

/// The last lines of every supervised process.
#[derive(Debug)]
pub struct LogHistory {
    capacity: usize,
    lines: Mutex<HashMap<Key, VecDeque<LogLine>>>,
}

impl LogHistory {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            lines: Mutex::new(HashMap::new()),
        }
    }

    fn push(&self, key: &Key, line: LogLine) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let history = lines.entry(key.clone()).or_default();
        if history.len() == self.capacity {
            history.pop_front();
        }
        history.push_back(line);
    }

    /// The last `count` lines of `dt` (one role or all), oldest first.
    pub fn last(&self, dt: &str, role: Option<&str>, count: usize) -> Vec<LogLine> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<LogLine> = lines
            .iter()
            .filter(|((d, r), _)| d == dt && role.is_none_or(|role| role == r))
            .flat_map(|(_, history)| history.iter().cloned())
            .collect();
        found.sort_by_key(|l| l.at);
        let skip = found.len().saturating_sub(count);
        found.split_off(skip)
    }

    /// Forgets a stopped process.
    pub fn remove(&self, key: &Key) {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Reads `pipe` line by line until it closes, publishing and keeping each line.
pub async fn forward(
    pipe: impl AsyncRead + Unpin,
    stream: LogStream,
    key: Key,
    nats: Client,
    history: std::sync::Arc<LogHistory>,
) {
    let Ok(subject) = subject::dt_log(&key.0, &key.1) else {
        return;
    };
    let mut reader = BufReader::new(pipe);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buffer)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let cut = buffer.last() != Some(&b'\n') && buffer.len() == MAX_LINE;
        let mut text = String::from_utf8_lossy(&buffer)
            .trim_end_matches(['\n', '\r'])
            .to_owned();
        if cut {
            text.push_str(" […]");
        }
        let line = LogLine {
            dt: key.0.clone(),
            role: key.1.clone(),
            stream,
            at: time::now_ns(),
            line: text,
        };
        if let Ok(body) = serde_json::to_vec(&line) {
            if let Err(error) = nats.publish(subject.clone(), body.into()).await {
                tracing::debug!(%error, subject, "Cannot publish a log line.");
            }
        }
        history.push(&key, line);
    }
}
