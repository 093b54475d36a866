//! A telemetry message's body: one record, or an array of records (a batch).
//!
//! Every message costs the broker and each reader about the same whatever it carries,
//! so a writer with many records at hand (a line-protocol payload, a DT writing its
//! outputs) sends them as one array: per record that is several times cheaper than a
//! message each. Readers take both shapes.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::codec::{CodecError, Encoding};
use crate::telemetry::TelemetryRecord;

/// Most records a writer puts in one message: small enough that a message with one bad
/// record (refused whole) takes little with it.
pub const MAX_RECORDS_PER_MESSAGE: usize = 1000;
/// Most bytes of records a writer puts in one message: well under the 1 MiB that NATS
/// servers accept by default.
pub const MAX_BYTES_PER_MESSAGE: usize = 256 * 1024;

/// The MessagePack body of a message carrying `records`, each already encoded as a
/// map: the record itself when there is one, else an array of them.
pub fn msgpack_body(records: &[&[u8]]) -> Vec<u8> {
    if let [one] = records {
        return one.to_vec();
    }
    let len: usize = records.iter().map(|r| r.len()).sum();
    let mut out = Vec::with_capacity(len + 5);
    match records.len() {
        n if n < 16 => out.push(0x90 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(0xdc);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0xdd);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    for record in records {
        out.extend_from_slice(record);
    }
    out
}

/// Decodes the record or the array of records in `body` and appends them to `out`;
/// returns how many were appended. On error `out` is left as it was, and the message
/// names the record at fault by its index in the array.
pub fn decode_records_into(
    encoding: Encoding,
    body: &[u8],
    out: &mut Vec<TelemetryRecord>,
) -> Result<usize, CodecError> {
    let before = out.len();
    match encoding.decode_seed(body, AppendRecords(out)) {
        Ok(()) => Ok(out.len() - before),
        Err(error) => {
            out.truncate(before);
            Err(error)
        }
    }
}

/// A seed that appends the records it decodes to a vector the caller keeps.
struct AppendRecords<'a>(&'a mut Vec<TelemetryRecord>);

impl<'de> DeserializeSeed<'de> for AppendRecords<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AppendRecords<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a telemetry record (a map) or an array of telemetry records")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let record = TelemetryRecord::deserialize(de::value::MapAccessDeserializer::new(map))?;
        self.0.push(record);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // The length comes from the sender: a 5-byte MessagePack header can claim four
        // billion records, and reserving that aborts the process. So reserve no more
        // than a well-formed message holds; a longer array still decodes, growing.
        if let Some(len) = seq.size_hint() {
            self.0.reserve(len.min(MAX_RECORDS_PER_MESSAGE));
        }
        let mut index = 0;
        while let Some(record) = seq
            .next_element::<TelemetryRecord>()
            .map_err(|e| de::Error::custom(format_args!("record {index} of the array: {e}")))?
        {
            self.0.push(record);
            index += 1;
        }
        if index == 0 {
            return Err(de::Error::custom(
                "the array of telemetry records is empty; send at least one record",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::FieldValue;

    fn record(ts: i64) -> TelemetryRecord {
        TelemetryRecord {
            pt: "inc1".into(),
            measurement: "env".into(),
            ts,
            tags: BTreeMap::new(),
            fields: BTreeMap::from([("temp".into(), FieldValue::F64(ts as f64))]),
        }
    }

    #[test]
    fn one_record_or_an_array_in_both_encodings() {
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let mut out = vec![record(0)];
            let one = encoding.encode(&record(1)).unwrap();
            assert_eq!(decode_records_into(encoding, &one, &mut out).unwrap(), 1);
            let batch = encoding.encode(&[record(2), record(3), record(4)]).unwrap();
            assert_eq!(decode_records_into(encoding, &batch, &mut out).unwrap(), 3);
            assert_eq!(out, (0..5).map(record).collect::<Vec<_>>());
        }
    }

    #[test]
    fn arrays_assembled_from_encoded_records_decode_as_arrays() {
        for n in [1, 2, 15, 16, 300, 70_000] {
            let encoded: Vec<Vec<u8>> = (0..n)
                .map(|i| Encoding::MsgPack.encode(&record(i)).unwrap().to_vec())
                .collect();
            let parts: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
            let body = msgpack_body(&parts);
            let mut out = Vec::new();
            assert_eq!(
                decode_records_into(Encoding::MsgPack, &body, &mut out).unwrap(),
                n as usize
            );
            assert_eq!(out.last(), Some(&record(n - 1)));
        }
    }

    #[test]
    fn a_bad_record_names_its_index_and_appends_nothing() {
        let typed = br#"[{"pt":"inc1","measurement":"env","ts":1,"fields":{"t":1}},
                         {"pt":"inc1","ts":2,"fields":{"t":2}}]"#;
        let mut out = vec![record(0)];
        let err = decode_records_into(Encoding::Json, typed, &mut out)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("record 1") && err.contains("measurement"),
            "{err}"
        );
        assert_eq!(out, vec![record(0)]);
        let err = decode_records_into(Encoding::Json, b"[]", &mut out)
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty"), "{err}");
        let err = decode_records_into(Encoding::Json, b"7", &mut out)
            .unwrap_err()
            .to_string();
        assert!(err.contains("array of telemetry records"), "{err}");
        let unknown = br#"{"pt":"inc1","measurement":"env","ts":1,"fields":{"t":1},"x":2}"#;
        let err = decode_records_into(Encoding::Json, unknown, &mut out)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
        assert_eq!(out, vec![record(0)]);
    }

    #[test]
    fn a_huge_claimed_length_is_refused_not_allocated() {
        let mut records = Vec::new();
        let err = decode_records_into(
            Encoding::MsgPack,
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
            &mut records,
        )
        .unwrap_err();
        assert!(!err.to_string().is_empty());
        assert!(records.capacity() <= MAX_RECORDS_PER_MESSAGE);
    }
}
