//! What is wrong with a payload: the DLQ reason of an MQTT message that is no
//! telemetry. Input is only ever quoted by its excerpt.

use dtaas_schemas::telemetry::RecordError;
use dtaas_schemas::CodecError;

/// A payload that yields no records.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is empty; send a JSON reading, an array of readings or line protocol")]
    Empty,
    #[error("payload is an empty array; send a reading or an array of readings")]
    EmptyArray,
    #[error("payload is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("payload is not valid MessagePack: {0}")]
    Msgpack(#[source] CodecError),
    #[error("line protocol payload is not UTF-8")]
    NotUtf8,
    #[error("line protocol payload has no lines")]
    NoLines,
    /// `line` counts from 1, blank and comment lines included.
    #[error("line protocol line {line}: {source}")]
    Line { line: usize, source: LineError },
    /// A line's timestamp cannot be scaled to nanoseconds.
    #[error(transparent)]
    LineTime(TimestampError),
    /// The payload's only reading.
    #[error(transparent)]
    Reading(ReadingError),
    /// One reading of an array, counted from 0.
    #[error("reading {index} of the array: {source}")]
    ArrayReading { index: usize, source: ReadingError },
    /// A record no store would take (an invalid identifier, no field).
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// A JSON or MessagePack reading that makes no record.
#[derive(Debug, thiserror::Error)]
pub enum ReadingError {
    #[error("a reading is an array; each reading is an object or a scalar")]
    Array,
    #[error("payload is JSON null")]
    Null,
    #[error("field {field:?}: {source}")]
    Timestamp {
        field: String,
        source: TimestampError,
    },
}

/// A timestamp that cannot be read; `value` is an excerpt.
#[derive(Debug, thiserror::Error)]
pub enum TimestampError {
    #[error("{value} is not an RFC 3339 time")]
    NotRfc3339 { value: String },
    #[error("{value} is neither a number nor an RFC 3339 string")]
    NotATime { value: String },
    #[error("not a number")]
    NotANumber,
    #[error("expected an RFC 3339 string")]
    ExpectedRfc3339,
    #[error("{value} is out of range")]
    OutOfRange { value: String },
}

/// A line-protocol line that cannot be read; quoted parts are excerpts.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("{line} has no fields")]
    NoFields { line: String },
    #[error("timestamp {value} is not an integer")]
    Timestamp { value: String },
    #[error("the measurement is empty")]
    NoMeasurement,
    #[error("tag {tag} lacks '='")]
    Tag { tag: String },
    #[error("field {field} lacks '='")]
    Field { field: String },
    #[error("field {field} has invalid value {value}")]
    FieldValue { field: String, value: String },
}
