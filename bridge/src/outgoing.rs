//! One MQTT payload's records → the NATS messages that carry them.
//!
//! Consecutive records for one subject (the lines of a line-protocol payload, say)
//! travel together as one MessagePack array, within the limits of
//! `dtaas_schemas::telemetry_batch`: each message costs nats-server and every reader
//! about the same whatever it carries, so this makes a batch from a device several
//! times cheaper per record all the way to the store.

use async_nats::HeaderMap;
use bytes::Bytes;
use dtaas_schemas::codec::Encoding;
use dtaas_schemas::names::header;
use dtaas_schemas::telemetry_batch::{
    msgpack_body, MAX_BYTES_PER_MESSAGE, MAX_RECORDS_PER_MESSAGE,
};

use crate::payload::Parsed;

/// A record that cannot be put into a NATS message.
#[derive(Debug, thiserror::Error)]
pub enum OutgoingError {
    #[error(transparent)]
    Subject(#[from] dtaas_schemas::SubjectError),
    #[error("cannot encode a record: {0}")]
    Encode(#[from] dtaas_schemas::CodecError),
}

/// A telemetry message to publish to JetStream.
#[derive(Debug)]
pub struct Outgoing {
    pub subject: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// How many records the body carries.
    pub records: usize,
}

/// The messages for `parsed`, in order. A record with its own de-duplication id travels
/// alone under that id (suffixed by its index when it is not the first record), as it
/// always did; records without one share messages. The error names what is wrong.
pub fn messages(parsed: &[Parsed]) -> Result<Vec<Outgoing>, OutgoingError> {
    let mut encoded = Vec::with_capacity(parsed.len());
    for p in parsed {
        let subject = p.record.subject()?;
        let body = Encoding::MsgPack.encode(&p.record)?;
        encoded.push((subject, body));
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start < encoded.len() {
        let mut end = start + 1;
        let mut bytes = encoded[start].1.len();
        if parsed[start].msg_id.is_none() {
            while end < encoded.len()
                && end - start < MAX_RECORDS_PER_MESSAGE
                && parsed[end].msg_id.is_none()
                && encoded[end].0 == encoded[start].0
                && bytes + encoded[end].1.len() <= MAX_BYTES_PER_MESSAGE
            {
                bytes += encoded[end].1.len();
                end += 1;
            }
        }
        let body = match &encoded[start..end] {
            [(_, one)] => one.clone(),
            group => {
                let parts: Vec<&[u8]> = group.iter().map(|(_, body)| body.as_ref()).collect();
                Bytes::from(msgpack_body(&parts))
            }
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, Encoding::MsgPack.content_type());
        if let Some(id) = &parsed[start].msg_id {
            let id = match start {
                0 => id.clone(),
                i => format!("{id}.{i}"),
            };
            headers.insert(header::MSG_ID, id.as_str());
        }
        out.push(Outgoing {
            subject: std::mem::take(&mut encoded[start].0),
            headers,
            body,
            records: end - start,
        });
        start = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use dtaas_schemas::telemetry_batch::decode_records_into;
    use dtaas_schemas::{FieldValue, TelemetryRecord};

    use super::*;

    fn parsed(measurement: &str, ts: i64, msg_id: Option<&str>) -> Parsed {
        Parsed {
            record: TelemetryRecord {
                pt: "inc1".into(),
                measurement: measurement.into(),
                ts,
                tags: BTreeMap::new(),
                fields: BTreeMap::from([("v".into(), FieldValue::I64(ts))]),
            },
            msg_id: msg_id.map(str::to_owned),
        }
    }

    fn decoded(message: &Outgoing) -> Vec<i64> {
        let mut records = Vec::new();
        decode_records_into(Encoding::MsgPack, &message.body, &mut records).unwrap();
        records.iter().map(|r| r.ts).collect()
    }

    #[test]
    fn runs_of_one_subject_share_a_message() {
        let input: Vec<Parsed> = [("env", 1), ("env", 2), ("env", 3), ("hum", 4), ("env", 5)]
            .into_iter()
            .map(|(m, ts)| parsed(m, ts, None))
            .collect();
        let out = messages(&input).unwrap();
        let shape: Vec<(&str, Vec<i64>, usize)> = out
            .iter()
            .map(|m| (m.subject.as_str(), decoded(m), m.records))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("dtaas.v1.tel.inc1.env", vec![1, 2, 3], 3),
                ("dtaas.v1.tel.inc1.hum", vec![4], 1),
                ("dtaas.v1.tel.inc1.env", vec![5], 1),
            ]
        );
        // A lone record is a map, as it always was.
        assert_eq!(out[1].body[0] & 0xf0, 0x80);
        assert!(out.iter().all(|m| m.headers.get(header::MSG_ID).is_none()));
    }

    #[test]
    fn large_runs_are_split_and_ids_stay_per_record() {
        let input: Vec<Parsed> = (0..2_500).map(|ts| parsed("env", ts, None)).collect();
        let counts: Vec<usize> = messages(&input)
            .unwrap()
            .iter()
            .map(|m| m.records)
            .collect();
        assert_eq!(counts, vec![1000, 1000, 500]);
        let input = vec![parsed("env", 1, Some("a")), parsed("env", 2, Some("a"))];
        let out = messages(&input).unwrap();
        let ids: Vec<&str> = out
            .iter()
            .map(|m| m.headers.get(header::MSG_ID).unwrap().as_str())
            .collect();
        assert_eq!(ids, vec!["a", "a.1"]);
    }
}
