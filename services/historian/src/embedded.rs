//! The embedded backend: one SQLite file (WAL) under `DTAAS_DATA_DIR`.
//!
//! A point per field: the primary key (pt, measurement, field, ts, tags) makes writes
//! idempotent (`INSERT OR REPLACE`) and is the index every query scans in time order.
//! SQLite calls block, so they run on tokio's blocking pool; one writer connection,
//! a small pool of reader connections (WAL lets reads run beside the writer).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtaas_schemas::timeseries::{TsLatest, TsLatestReply, TsQueryReply, TsSeries};
use dtaas_schemas::{FieldValue, TelemetryRecord};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{params, Connection, OpenFlags};

use crate::error::OpenError;
use crate::query::{Agg, Query};
use crate::sink::{Sink, SinkError};

/// How long a write waits for a lock held by someone else before it counts as failed
/// (and the batch is retried with backoff).
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);
/// Reader connections kept open for queries.
const READERS: usize = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS points (
    pt TEXT NOT NULL,
    measurement TEXT NOT NULL,
    field TEXT NOT NULL,
    ts INTEGER NOT NULL,
    tags TEXT NOT NULL,
    value,
    kind INTEGER NOT NULL,
    PRIMARY KEY (pt, measurement, field, ts, tags)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series (
    pt TEXT NOT NULL,
    measurement TEXT NOT NULL,
    field TEXT NOT NULL,
    tags TEXT NOT NULL,
    PRIMARY KEY (pt, measurement, field, tags)
) WITHOUT ROWID;
";

/// Value kinds in the `kind` column, so booleans come back as booleans.
const KIND_F64: i64 = 0;
const KIND_I64: i64 = 1;
const KIND_BOOL: i64 = 2;
const KIND_STR: i64 = 3;

/// The SQLite store; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    path: Arc<PathBuf>,
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Mutex<Vec<Connection>>>,
}

fn unavailable(e: impl std::fmt::Display) -> SinkError {
    SinkError::Unavailable(e.to_string())
}

impl EmbeddedStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::DataDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let sqlite = |source| OpenError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let writer = Connection::open(path).map_err(sqlite)?;
        writer.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        writer
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        // FULL: a committed batch survives power loss before its messages are acked.
        writer
            .pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite)?;
        writer.execute_batch(SCHEMA).map_err(sqlite)?;
        Ok(Self {
            path: Arc::new(path.to_owned()),
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Writes `records` in one transaction, on the calling thread.
    pub fn write_blocking(&self, records: &[TelemetryRecord]) -> Result<(), SinkError> {
        let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO points (pt, measurement, field, ts, tags, value, kind) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(unavailable)?;
            let mut series = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO series (pt, measurement, field, tags) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(unavailable)?;
            // Tags are encoded once per record; the series seen in this batch are
            // registered once each.
            let tags: Vec<String> = records
                .iter()
                .map(|r| {
                    let mut text = String::new();
                    encode_tags(&r.tags, &mut text);
                    text
                })
                .collect();
            let mut seen: HashSet<(&str, &str, &str, &str)> = HashSet::new();
            for (record, tags) in records.iter().zip(&tags) {
                for (field, value) in &record.fields {
                    let (value, kind) = match value {
                        FieldValue::F64(v) => (ValueRef::Real(*v), KIND_F64),
                        FieldValue::I64(v) => (ValueRef::Integer(*v), KIND_I64),
                        FieldValue::Bool(v) => (ValueRef::Integer(*v as i64), KIND_BOOL),
                        FieldValue::Str(v) => (ValueRef::Text(v.as_bytes()), KIND_STR),
                    };
                    insert
                        .execute(params![
                            record.pt,
                            record.measurement,
                            field,
                            record.ts,
                            tags,
                            ToSqlOutput::Borrowed(value),
                            kind
                        ])
                        .map_err(unavailable)?;
                    let key = (
                        record.pt.as_str(),
                        record.measurement.as_str(),
                        field.as_str(),
                        tags.as_str(),
                    );
                    if seen.insert(key) {
                        series
                            .execute(params![key.0, key.1, key.2, key.3])
                            .map_err(unavailable)?;
                    }
                }
            }
        }
        tx.commit().map_err(unavailable)
    }

    fn reader(&self) -> Result<Connection, SinkError> {
        if let Some(conn) = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            self.path.as_ref(),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(unavailable)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if readers.len() < READERS {
            readers.push(conn);
        }
    }

    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, SinkError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = this.reader()?;
            let result = f(&conn).map_err(unavailable);
            if result.is_ok() {
                this.give_back(conn);
            }
            result
        })
        .await
        .map_err(unavailable)?
    }
}

/// Tags as one canonical text (sorted JSON object), part of the point's identity.
fn encode_tags(tags: &std::collections::BTreeMap<String, String>, out: &mut String) {
    if tags.is_empty() {
        out.push_str("{}");
    } else {
        out.push_str(&serde_json::to_string(tags).unwrap_or_default());
    }
}

fn field_value(value: Value, kind: i64) -> Option<FieldValue> {
    Some(match (value, kind) {
        (Value::Integer(v), KIND_BOOL) => FieldValue::Bool(v != 0),
        (Value::Integer(v), _) => FieldValue::I64(v),
        (Value::Real(v), _) => FieldValue::F64(v),
        (Value::Text(v), _) => FieldValue::Str(v),
        _ => return None,
    })
}

fn query_fields(conn: &Connection, q: &Query) -> rusqlite::Result<Vec<String>> {
    if !q.fields.is_empty() {
        return Ok(q.fields.clone());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT field FROM series WHERE pt = ?1 AND measurement = ?2 ORDER BY field",
    )?;
    let rows = stmt.query_map(params![q.pt, q.measurement], |row| row.get(0))?;
    rows.collect()
}

fn query_series(conn: &Connection, q: &Query, field: &str) -> rusqlite::Result<TsSeries> {
    let limit = q.limit as i64;
    let base =
        "FROM points WHERE pt = ?1 AND measurement = ?2 AND field = ?3 AND ts BETWEEN ?4 AND ?5";
    let points = match q.window {
        None => {
            let sql = format!("SELECT ts, value, kind {base} ORDER BY ts LIMIT ?6");
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![q.pt, q.measurement, field, q.from, q.to, limit],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Value>(1)?, row.get(2)?)),
            )?;
            let mut points = Vec::new();
            for row in rows {
                let (ts, value, kind) = row?;
                if let Some(value) = field_value(value, kind) {
                    points.push((ts, value));
                }
            }
            points
        }
        Some((every, agg)) => {
            // ?7 is the window length; without one, the whole range is one window that
            // starts at `from`.
            let window = match every {
                Some(_) => "(ts - (((ts % ?7) + ?7) % ?7))",
                None => "(?4 + 0 * ?7)",
            };
            let numeric = "AND kind != 3";
            let (select, filter) = match agg {
                Agg::Mean => ("AVG(value), 0", numeric),
                Agg::Min => ("MIN(value), kind", numeric),
                Agg::Max => ("MAX(value), kind", numeric),
                Agg::Last => ("value, kind, MAX(ts)", ""),
                Agg::Count => ("COUNT(*), 1", ""),
            };
            let sql = format!(
                "SELECT {window} AS w, {select} {base} {filter} GROUP BY w ORDER BY w LIMIT ?6"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let every = every.unwrap_or(1);
            let rows = stmt.query_map(
                params![q.pt, q.measurement, field, q.from, q.to, limit, every],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Value>(1)?, row.get(2)?)),
            )?;
            let mut points = Vec::new();
            for row in rows {
                let (ts, value, kind) = row?;
                let value = match (agg, value) {
                    (Agg::Mean, Value::Integer(v)) => Some(FieldValue::F64(v as f64)),
                    (_, value) => field_value(value, kind),
                };
                if let Some(value) = value {
                    points.push((ts, value));
                }
            }
            points
        }
    };
    Ok(TsSeries {
        field: field.to_owned(),
        points,
    })
}

fn latest(conn: &Connection, pt: &str) -> rusqlite::Result<TsLatestReply> {
    let mut series = conn.prepare_cached(
        "SELECT DISTINCT measurement, field FROM series WHERE pt = ?1 ORDER BY measurement, field",
    )?;
    let keys: Vec<(String, String)> = series
        .query_map(params![pt], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut last = conn.prepare_cached(
        "SELECT ts, value, kind FROM points WHERE pt = ?1 AND measurement = ?2 AND field = ?3 \
         ORDER BY ts DESC LIMIT 1",
    )?;
    let mut reply = TsLatestReply::default();
    for (measurement, field) in keys {
        let row = last.query_row(params![pt, measurement, field], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, Value>(1)?, row.get(2)?))
        });
        let (ts, value, kind) = match row {
            Ok(row) => row,
            Err(rusqlite::Error::QueryReturnedNoRows) => continue,
            Err(e) => return Err(e),
        };
        if let Some(value) = field_value(value, kind) {
            reply.latest.push(TsLatest {
                measurement,
                field,
                ts,
                value,
            });
        }
    }
    Ok(reply)
}

impl Sink for EmbeddedStore {
    async fn write(&self, records: Arc<Vec<TelemetryRecord>>) -> Result<(), SinkError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.write_blocking(&records))
            .await
            .map_err(unavailable)?
    }

    async fn query(&self, query: Query) -> Result<TsQueryReply, SinkError> {
        self.with_reader(move |conn| {
            let mut reply = TsQueryReply::default();
            for field in query_fields(conn, &query)? {
                reply.series.push(query_series(conn, &query, &field)?);
            }
            Ok(reply)
        })
        .await
    }

    async fn latest(&self, pt: String) -> Result<TsLatestReply, SinkError> {
        self.with_reader(move |conn| latest(conn, &pt)).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn record(pt: &str, ts: i64, temp: f64) -> TelemetryRecord {
        TelemetryRecord {
            pt: pt.into(),
            measurement: "env".into(),
            ts,
            tags: BTreeMap::new(),
            fields: BTreeMap::from([
                ("temp".into(), FieldValue::F64(temp)),
                ("on".into(), FieldValue::Bool(ts % 2 == 0)),
                ("state".into(), FieldValue::Str(format!("s{ts}"))),
            ]),
        }
    }

    fn query(pt: &str, window: Option<(Option<i64>, Agg)>, limit: usize) -> Query {
        Query {
            pt: pt.into(),
            measurement: "env".into(),
            fields: vec!["temp".into()],
            from: 0,
            to: 100,
            window,
            limit,
        }
    }

    #[tokio::test]
    async fn writes_are_idempotent_and_queries_aggregate() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("ts.sqlite")).unwrap();
        let records: Vec<_> = (0..20).map(|i| record("a", i, i as f64)).collect();
        store.write(Arc::new(records.clone())).await.unwrap();
        store.write(Arc::new(records)).await.unwrap();

        let raw = store.query(query("a", None, 1000)).await.unwrap();
        assert_eq!(raw.series.len(), 1);
        assert_eq!(raw.series[0].points.len(), 20, "no point twice");
        let limited = store.query(query("a", None, 5)).await.unwrap();
        assert_eq!(limited.series[0].points.last().unwrap().0, 4);

        let mean = store
            .query(query("a", Some((Some(10), Agg::Mean)), 1000))
            .await
            .unwrap();
        assert_eq!(
            mean.series[0].points,
            vec![(0, FieldValue::F64(4.5)), (10, FieldValue::F64(14.5))]
        );
        let last = store
            .query(query("a", Some((Some(10), Agg::Last)), 1000))
            .await
            .unwrap();
        assert_eq!(last.series[0].points[1], (10, FieldValue::F64(19.0)));
        let count = store
            .query(query("a", Some((None, Agg::Count)), 1000))
            .await
            .unwrap();
        assert_eq!(count.series[0].points, vec![(0, FieldValue::I64(20))]);

        let mut all = query("a", None, 1000);
        all.fields.clear();
        let all = store.query(all).await.unwrap();
        let names: Vec<_> = all.series.iter().map(|s| s.field.as_str()).collect();
        assert_eq!(names, ["on", "state", "temp"]);
        assert_eq!(all.series[0].points[0].1, FieldValue::Bool(true));

        let latest = store.latest("a".into()).await.unwrap();
        assert_eq!(latest.latest.len(), 3);
        assert_eq!(latest.latest[2].value, FieldValue::F64(19.0));
        assert!(store.latest("nope".into()).await.unwrap().latest.is_empty());
        let empty = store.query(query("nope", None, 10)).await.unwrap();
        assert!(empty.series[0].points.is_empty());
    }

    #[tokio::test]
    async fn a_locked_database_is_unavailable_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ts.sqlite");
        let store = EmbeddedStore::open(&path).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let err = store
            .write(Arc::new(vec![record("a", 1, 1.0)]))
            .await
            .unwrap_err();
        assert!(matches!(err, SinkError::Unavailable(_)), "{err}");
        other.execute_batch("COMMIT").unwrap();
        store
            .write(Arc::new(vec![record("a", 1, 1.0)]))
            .await
            .unwrap();
    }
}
