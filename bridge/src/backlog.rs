//! The bridge's own durable backlog: where uplink messages wait while JetStream cannot
//! take them (a leader election, a short outage), so the bridge keeps acknowledging
//! MQTT at full rate and no broker queue overflows.
//!
//! Guarantee: a message is appended to one file under `DTAAS_DATA_DIR` and the file is
//! synced (`fdatasync`) before `append` returns, and only then is its MQTT message
//! acknowledged. Appends that arrive together share one sync. A drain task publishes
//! the entries in file order, each with its `Nats-Msg-Id` (JetStream drops what it
//! already has), and moves the drain position on only after JetStream acknowledged;
//! the position is written to a second file. After a crash the bridge resumes from
//! the position: entries are published at least once and stored once.
//!
//! Bounded in bytes (`backlog_max_bytes`): an entry that does not fit is refused, and
//! the uplink then waits for JetStream as it does without a backlog, so the broker's
//! queue takes over. The backlog is used only once a publish has failed or timed out:
//! while JetStream acknowledges in time nothing is written to disk.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::outgoing::Outgoing;

/// Most appends written and synced together.
const BATCH: usize = 512;
/// Bytes before each entry: payload length (u32) and checksum (u64).
const FRAME: u64 = 12;

/// The backlog is full, or its file cannot be written; the caller waits for JetStream.
#[derive(Debug, thiserror::Error)]
pub enum BacklogError {
    /// At start: `what` could not be done in `dir`.
    #[error("bridge backlog: {what} in {}: {source}", dir.display())]
    Open {
        what: &'static str,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("bridge backlog: full ({used} of {max} bytes)")]
    Full { used: u64, max: u64 },
    /// The writer task ended (shutdown).
    #[error("bridge backlog: writer stopped")]
    WriterStopped,
    /// Reading entries or moving the drain position failed.
    #[error("bridge backlog: {0}")]
    Io(#[from] std::io::Error),
    #[error("bridge backlog: damaged entry at offset {offset}")]
    Damaged { offset: u64 },
    /// Shared by every append of the batch that could not be written.
    #[error("bridge backlog: cannot write backlog.log: {0}")]
    Write(#[source] Arc<std::io::Error>),
}

/// How full the backlog is, for `bridge.stats`.
#[derive(Debug, Default)]
pub struct BacklogStats {
    /// Bytes of entries not yet drained.
    pub bytes: AtomicU64,
    /// Entries not yet drained.
    pub messages: AtomicU64,
    /// Append time (ns since the epoch) of the oldest entry not yet drained; 0: none.
    pub oldest_ns: AtomicI64,
    /// Entries drained since start.
    pub drained: AtomicU64,
    /// Entries drained in the last second.
    pub drain_rate: AtomicU64,
}

impl BacklogStats {
    /// Age of the oldest entry in milliseconds; 0 when empty.
    pub fn age_ms(&self) -> u64 {
        match self.oldest_ns.load(Relaxed) {
            0 => 0,
            oldest => ((dtaas_schemas::time::now_ns() - oldest).max(0) / 1_000_000) as u64,
        }
    }
}

/// One message waiting for JetStream.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub subject: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Telemetry records in `body`, counted when drained.
    pub records: u64,
    /// When it was appended (ns since the epoch), for the backlog's age.
    pub appended_ns: i64,
}

impl Entry {
    pub fn from_outgoing(message: &Outgoing) -> Self {
        let headers = message
            .headers
            .iter()
            .flat_map(|(name, values)| {
                values
                    .iter()
                    .map(move |v| (name.to_string(), v.as_str().to_owned()))
            })
            .collect();
        Self {
            subject: message.subject.clone(),
            headers,
            body: message.body.clone(),
            records: message.records as u64,
            appended_ns: dtaas_schemas::time::now_ns(),
        }
    }

    pub fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            map.append(name.as_str(), value.as_str());
        }
        map
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.subject.len() + self.body.len());
        put(&mut out, self.subject.as_bytes());
        out.extend_from_slice(&(self.headers.len() as u32).to_le_bytes());
        for (name, value) in &self.headers {
            put(&mut out, name.as_bytes());
            put(&mut out, value.as_bytes());
        }
        out.extend_from_slice(&self.records.to_le_bytes());
        out.extend_from_slice(&self.appended_ns.to_le_bytes());
        put(&mut out, &self.body);
        out
    }

    fn decode(mut bytes: &[u8]) -> Option<Self> {
        let subject = String::from_utf8(take(&mut bytes)?.to_vec()).ok()?;
        let count = u32::from_le_bytes(fixed(&mut bytes)?);
        let mut headers = Vec::with_capacity(count.min(64) as usize);
        for _ in 0..count {
            let name = String::from_utf8(take(&mut bytes)?.to_vec()).ok()?;
            let value = String::from_utf8(take(&mut bytes)?.to_vec()).ok()?;
            headers.push((name, value));
        }
        let records = u64::from_le_bytes(fixed(&mut bytes)?);
        let appended_ns = i64::from_le_bytes(fixed(&mut bytes)?);
        let body = Bytes::copy_from_slice(take(&mut bytes)?);
        Some(Self {
            subject,
            headers,
            body,
            records,
            appended_ns,
        })
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn fixed<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = bytes.split_first_chunk::<N>()?;
    *bytes = rest;
    Some(*head)
}

fn take<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(fixed(bytes)?) as usize;
    let (head, rest) = bytes.split_at_checked(len)?;
    *bytes = rest;
    Some(head)
}

/// FNV-1a, to tell a torn last entry (a crash mid-write) from a whole one.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The file, its synced end, and where draining stands.
struct Files {
    log: File,
    log_path: PathBuf,
    position_path: PathBuf,
    /// Offset of the first entry not yet drained.
    read: u64,
    /// Offset after the last synced entry.
    end: u64,
}

/// One entry for the writer task, answered once it is synced.
struct Append {
    payload: Vec<u8>,
    appended_ns: i64,
    done: oneshot::Sender<Result<(), BacklogError>>,
}

/// The backlog; cheap to share.
pub struct Backlog {
    appends: mpsc::Sender<Append>,
    files: Arc<Mutex<Files>>,
    /// Wakes the drain task when entries were appended.
    pub appended: Arc<Notify>,
    pub stats: Arc<BacklogStats>,
    max_bytes: u64,
}

impl Backlog {
    /// Opens (or creates) the backlog in `dir`, recovering what a previous run left.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        stats: Arc<BacklogStats>,
    ) -> Result<Arc<Self>, BacklogError> {
        let io = |what: &'static str, source: std::io::Error| BacklogError::Open {
            what,
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create the directory", e))?;
        let log_path = dir.join("backlog.log");
        let position_path = dir.join("backlog.pos");
        let mut log = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| io("cannot open backlog.log", e))?;
        let read = read_position(&position_path);
        let (read, end) =
            recover(&mut log, read, &stats).map_err(|e| io("cannot read backlog.log", e))?;
        let files = Arc::new(Mutex::new(Files {
            log,
            log_path,
            position_path,
            read,
            end,
        }));
        let (appends, rx) = mpsc::channel(BATCH * 4);
        let appended = Arc::new(Notify::new());
        tokio::spawn(write_batches(
            rx,
            files.clone(),
            appended.clone(),
            stats.clone(),
        ));
        Ok(Arc::new(Self {
            appends,
            files,
            appended,
            stats,
            max_bytes,
        }))
    }

    /// Whether entries wait; new messages then queue behind them, in order.
    pub fn is_empty(&self) -> bool {
        self.stats.messages.load(Relaxed) == 0
    }

    /// Appends `entry` and returns once it is synced to disk.
    pub async fn append(&self, entry: &Entry) -> Result<(), BacklogError> {
        let encoded = entry.encode();
        let size = encoded.len() as u64 + FRAME;
        if self.stats.bytes.load(Relaxed) + size > self.max_bytes {
            return Err(BacklogError::Full {
                used: self.stats.bytes.load(Relaxed),
                max: self.max_bytes,
            });
        }
        let (done, synced) = oneshot::channel();
        self.appends
            .send(Append {
                payload: encoded,
                appended_ns: entry.appended_ns,
                done,
            })
            .await
            .map_err(|_| BacklogError::WriterStopped)?;
        synced.await.map_err(|_| BacklogError::WriterStopped)?
    }

    /// Up to `max` of the oldest entries not yet drained, each with its size.
    pub fn peek(&self, max: usize) -> Result<Vec<(Entry, u64)>, BacklogError> {
        let files = self.files.lock().unwrap();
        let mut entries = Vec::new();
        if files.read >= files.end {
            return Ok(entries);
        }
        let mut file = File::open(&files.log_path)?;
        file.seek(SeekFrom::Start(files.read))?;
        let mut reader = BufReader::new(file);
        let mut offset = files.read;
        while offset < files.end && entries.len() < max {
            let Some((entry, size)) = read_entry(&mut reader)? else {
                return Err(BacklogError::Damaged { offset });
            };
            offset += size;
            entries.push((entry, size));
        }
        Ok(entries)
    }

    /// Marks the `count` oldest entries (`bytes` in all) drained; empties the file once
    /// all are.
    pub fn pop(&self, count: u64, bytes: u64) -> Result<(), BacklogError> {
        let mut files = self.files.lock().unwrap();
        files.read += bytes;
        let left = self
            .stats
            .messages
            .fetch_sub(count, Relaxed)
            .saturating_sub(count);
        self.stats.bytes.fetch_sub(bytes, Relaxed);
        self.stats.drained.fetch_add(count, Relaxed);
        if left == 0 && files.read == files.end {
            // Everything drained: start the file over, so it does not grow forever.
            files.log.set_len(0)?;
            files.log.sync_data()?;
            files.read = 0;
            files.end = 0;
            self.stats.oldest_ns.store(0, Relaxed);
        } else {
            let mut file = File::open(&files.log_path)?;
            file.seek(SeekFrom::Start(files.read))?;
            if let Some((next, _)) = read_entry(&mut file)? {
                self.stats.oldest_ns.store(next.appended_ns, Relaxed);
            }
        }
        // Not synced: after a crash an older position only publishes entries again,
        // and JetStream drops them by their ids.
        std::fs::write(&files.position_path, files.read.to_le_bytes())?;
        Ok(())
    }
}

/// Entries waiting in the backlog in `dir`, read without changing it (for tests and
/// operators while the bridge is down).
pub fn entries_in(dir: &Path) -> std::io::Result<u64> {
    let mut log = File::open(dir.join("backlog.log"))?;
    let len = log.metadata()?.len();
    let mut offset = read_position(&dir.join("backlog.pos"));
    let mut count = 0;
    log.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(log);
    while offset < len {
        let Some((_, size)) = read_entry(&mut reader)? else {
            break;
        };
        offset += size;
        count += 1;
    }
    Ok(count)
}

/// The drain position `backlog.pos` holds; 0 when there is none yet.
fn read_position(path: &Path) -> u64 {
    std::fs::read(path)
        .ok()
        .and_then(|b| b.first_chunk::<8>().copied())
        .map_or(0, u64::from_le_bytes)
}

/// Scans the file from `read`: counts whole entries, cuts a torn tail.
fn recover(log: &mut File, read: u64, stats: &BacklogStats) -> std::io::Result<(u64, u64)> {
    let len = log.metadata()?.len();
    let read = if read > len { 0 } else { read };
    let mut offset = read;
    log.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(&*log);
    while offset < len {
        match read_entry(&mut reader)? {
            Some((entry, size)) => {
                if stats.messages.fetch_add(1, Relaxed) == 0 {
                    stats.oldest_ns.store(entry.appended_ns, Relaxed);
                }
                stats.bytes.fetch_add(size, Relaxed);
                offset += size;
            }
            None => {
                tracing::warn!(offset, "Cut a torn entry at the end of the bridge backlog (a crash while writing; its MQTT message was not acknowledged).");
                drop(reader);
                log.set_len(offset)?;
                break;
            }
        }
    }
    if stats.messages.load(Relaxed) > 0 {
        tracing::info!(
            messages = stats.messages.load(Relaxed),
            bytes = stats.bytes.load(Relaxed),
            "Bridge backlog left by the previous run; draining it to JetStream."
        );
    }
    Ok((read, offset))
}

/// The entry `file` is at and its size with framing; `None` if torn or damaged.
fn read_entry(file: &mut impl Read) -> std::io::Result<Option<(Entry, u64)>> {
    let mut frame = [0u8; FRAME as usize];
    if file.read_exact(&mut frame).is_err() {
        return Ok(None);
    }
    let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
    let sum = u64::from_le_bytes(frame[4..].try_into().unwrap());
    let mut payload = vec![0u8; len];
    if file.read_exact(&mut payload).is_err() || checksum(&payload) != sum {
        return Ok(None);
    }
    Ok(Entry::decode(&payload).map(|entry| (entry, FRAME + len as u64)))
}

/// Writes appends in batches, one sync per batch, then answers each.
async fn write_batches(
    mut rx: mpsc::Receiver<Append>,
    files: Arc<Mutex<Files>>,
    appended: Arc<Notify>,
    stats: Arc<BacklogStats>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut buffer = Vec::new();
        for Append { payload, .. } in &batch {
            buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buffer.extend_from_slice(&checksum(payload).to_le_bytes());
            buffer.extend_from_slice(payload);
        }
        let sizes: Vec<(u64, i64)> = batch
            .iter()
            .map(|append| (append.payload.len() as u64 + FRAME, append.appended_ns))
            .collect();
        let (files_for_write, stats_for_write) = (files.clone(), stats.clone());
        let written = tokio::task::spawn_blocking(move || {
            let mut files = files_for_write.lock().unwrap();
            files.log.write_all(&buffer)?;
            files.log.sync_data()?;
            files.end += buffer.len() as u64;
            // Counted under the lock, so the drain task never sees an entry uncounted.
            for (size, appended_ns) in sizes {
                if stats_for_write.messages.fetch_add(1, Relaxed) == 0 {
                    stats_for_write.oldest_ns.store(appended_ns, Relaxed);
                }
                stats_for_write.bytes.fetch_add(size, Relaxed);
            }
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(Arc::new);
        for Append { done, .. } in batch.drain(..) {
            let _ = done.send(written.clone().map_err(BacklogError::Write));
        }
        appended.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> Entry {
        Entry {
            subject: "dtaas.v1.tel.p.m".into(),
            headers: vec![("Nats-Msg-Id".into(), format!("run.{n}"))],
            body: Bytes::from(vec![n; 10]),
            records: 1,
            appended_ns: i64::from(n),
        }
    }

    #[tokio::test]
    async fn entries_survive_a_restart_in_order_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let backlog = Backlog::open(dir.path(), 1 << 20, Default::default()).unwrap();
        for n in 0..3 {
            backlog.append(&entry(n)).await.unwrap();
        }
        let first = backlog.peek(1).unwrap();
        assert_eq!(first[0].0, entry(0));
        backlog.pop(1, first[0].1).unwrap();
        drop(backlog);
        // A crash in the middle of writing a fourth entry.
        let mut log = OpenOptions::new()
            .append(true)
            .open(dir.path().join("backlog.log"))
            .unwrap();
        log.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        let backlog = Backlog::open(dir.path(), 1 << 20, Default::default()).unwrap();
        assert_eq!(backlog.stats.messages.load(Relaxed), 2);
        let rest = backlog.peek(10).unwrap();
        let entries: Vec<Entry> = rest.iter().map(|(e, _)| e.clone()).collect();
        assert_eq!(entries, [entry(1), entry(2)]);
        backlog
            .pop(2, rest.iter().map(|(_, size)| size).sum())
            .unwrap();
        assert!(backlog.is_empty() && backlog.peek(10).unwrap().is_empty());
        assert_eq!(
            std::fs::metadata(dir.path().join("backlog.log"))
                .unwrap()
                .len(),
            0
        );
    }

    #[tokio::test]
    async fn a_full_backlog_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let backlog = Backlog::open(dir.path(), 100, Default::default()).unwrap();
        backlog.append(&entry(1)).await.unwrap();
        let err = backlog.append(&entry(2)).await.unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
    }
}
