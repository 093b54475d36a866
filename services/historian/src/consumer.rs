//! Telemetry from `DTAAS_TEL` into the time-series store, through the runtime's batch
//! consumer (`dtaas_runtime::consumer`): this file says how a message becomes records
//! and how records are written; the consumer batches, retries a store that is down,
//! dead-letters what the store refuses (to `dtaas.v1.dlq.historian`) and acknowledges
//! only what the store confirmed, under the durable's ack policy (`all` by default with
//! the embedded store: one acknowledgement per batch, see `ack_floor`).

use std::sync::Arc;

use async_nats::jetstream::Message;
use dtaas_runtime::consumer::{self, ConsumerConfig, DeliverPolicy, Handler, Invalid, WriteError};
use dtaas_schemas::codec::Encoding;
use dtaas_schemas::excerpt::excerpt;
use dtaas_schemas::names;
use dtaas_schemas::telemetry_batch::decode_records_into;
use dtaas_schemas::{subject, TelemetryRecord};

use crate::config::HistorianConfig;
use crate::sink::{Sink, SinkError};
use crate::WORKER;

/// The historian's consumer: telemetry records into `S`.
pub type Consumer<S> = consumer::Consumer<Records<S>>;

/// Builds the consumer the configuration describes.
pub fn new<S: Sink>(config: &HistorianConfig, sink: S) -> Consumer<S> {
    consumer::Consumer::new(consumer_config(config), Records { sink })
}

/// The durable on `DTAAS_TEL` the configuration names.
pub fn consumer_config(config: &HistorianConfig) -> ConsumerConfig {
    ConsumerConfig {
        stream: names::STREAM_TELEMETRY.into(),
        durable: config.durable_name(),
        description: "dtaas historian: telemetry into the time-series store".into(),
        filter_subject: None,
        deliver_policy: DeliverPolicy::All,
        ack_policy: config.ack_policy(),
        ack_policy_setting: "[historian] ack_policy (DTAAS_HISTORIAN_ACK_POLICY)".into(),
        ack_wait: config.ack_wait,
        max_ack_pending: config.max_ack_pending,
        batch_size: config.batch_size,
        max_delay: config.max_delay,
        dlq_source: WORKER.into(),
    }
}

/// Decodes telemetry messages into records and writes them to the sink.
pub struct Records<S> {
    sink: S,
}

/// The records of a batch, shared with the store's write without copying (an SQLite
/// write runs on a blocking thread).
#[derive(Default)]
pub struct RecordBatch(Arc<Vec<TelemetryRecord>>);

impl<S: Sink> Handler for Records<S> {
    type Batch = RecordBatch;
    const STORE: &'static str = "Time-series store";

    fn decode(&self, message: &Message, batch: &mut RecordBatch) -> Result<usize, Invalid> {
        // Unique while the batch is being collected, so this never copies.
        decode_into(message, Arc::make_mut(&mut batch.0))
    }

    async fn write(&self, batch: &mut RecordBatch) -> Result<(), WriteError> {
        self.sink.write(batch.0.clone()).await.map_err(|e| match e {
            SinkError::Unavailable(reason) => WriteError::Unavailable(reason),
            SinkError::Rejected(reason) => WriteError::Rejected(reason),
        })
    }
}

/// Decodes and checks one message's records, appending them to `records`; a message
/// with one bad record is refused whole (it is acknowledged as a unit). A record on
/// `dtaas.v1.tel.<pt>.<measurement>` must be for that PT and measurement, so that who
/// may publish for one PT cannot write into another's series. DT outputs
/// (`dtaas.v1.dt.<dt>.out.<output>`) are stored under pt = the DT and measurement =
/// the output, whatever the records say.
fn decode_into(message: &Message, records: &mut Vec<TelemetryRecord>) -> Result<usize, Invalid> {
    let content_type = dtaas_runtime::headers::content_type(message.headers.as_ref());
    let start = records.len();
    let count = Encoding::detect(content_type, &message.payload)
        .and_then(|encoding| decode_records_into(encoding, &message.payload, records))
        .map_err(|e| Invalid(format!("cannot decode telemetry: {e}")))?;
    let dt_output = subject::parse_dt_output(&message.subject).ok();
    let telemetry = subject::parse_telemetry(&message.subject).ok();
    let mut fault = None;
    for (index, record) in records[start..].iter_mut().enumerate() {
        if let Some((dt, output)) = dt_output {
            dt.clone_into(&mut record.pt);
            output.clone_into(&mut record.measurement);
        }
        let error = match telemetry {
            Some(names) if names != (record.pt.as_str(), record.measurement.as_str()) => {
                Some(format!(
                    "the record is for PT {} measurement {}, but its subject is for PT {:?} \
                     measurement {:?}; publish each record on its own PT's subject",
                    excerpt(&record.pt),
                    excerpt(&record.measurement),
                    names.0,
                    names.1
                ))
            }
            _ => record.validate().err().map(|e| e.to_string()),
        };
        if let Some(error) = error {
            fault = Some(match count {
                1 => error,
                _ => format!("record {index} of the array: {error}"),
            });
            break;
        }
    }
    match fault {
        Some(reason) => {
            records.truncate(start);
            Err(Invalid(reason))
        }
        None => Ok(count),
    }
}
