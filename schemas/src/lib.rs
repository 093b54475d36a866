//! Message types, subjects, names and codecs shared by every dtaas worker.
//!
//! Everything that crosses a NATS subject is defined here, so that workers agree on
//! the wire format without depending on each other.

pub mod asset;
pub mod asset_address;
pub mod asset_api;
pub mod asset_store;
pub mod bridge;
pub mod codec;
pub mod command;
pub mod dt_config;
pub mod error;
pub mod excerpt;
pub mod exec;
pub mod fork;
pub mod graph;
pub mod lifecycle;
pub mod names;
pub mod stats;
pub mod subject;
pub mod telemetry;
pub mod telemetry_batch;
pub mod time;
pub mod timeseries;

pub use codec::{CodecError, Encoding};
pub use error::{ErrorCode, ErrorReply};
pub use subject::SubjectError;
pub use telemetry::{FieldValue, TelemetryRecord};
