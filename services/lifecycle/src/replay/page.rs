//! One page of recorded telemetry: `ts.query` answers up to `limit` points per field,
//! so the fields of one measurement can end at different times. Only the records up
//! to the earliest end of a full series are complete; the next page starts right
//! after it. Points of all fields at one timestamp make one record, as recorded.

use std::collections::BTreeMap;

use dtaas_schemas::timeseries::TsQueryReply;
use dtaas_schemas::{FieldValue, TelemetryRecord};

/// The complete records of a page, in timestamp order.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<TelemetryRecord>,
    /// Where the next page starts (ns); `None` when the range is read to its end.
    pub next_from: Option<i64>,
}

/// The records of `reply`, a raw `ts.query` of `pt`/`measurement` with `limit` points
/// per field over a range ending at `to`.
pub fn assemble(pt: &str, measurement: &str, reply: TsQueryReply, limit: usize, to: i64) -> Page {
    let cut = reply
        .series
        .iter()
        .filter(|s| s.points.len() >= limit)
        .filter_map(|s| s.points.last().map(|p| p.0))
        .min();
    let complete = cut.unwrap_or(to);
    let mut at: BTreeMap<i64, BTreeMap<String, FieldValue>> = BTreeMap::new();
    for series in reply.series {
        for (ts, value) in series.points {
            if ts <= complete {
                at.entry(ts)
                    .or_default()
                    .insert(series.field.clone(), value);
            }
        }
    }
    let records = at
        .into_iter()
        .map(|(ts, fields)| TelemetryRecord {
            pt: pt.to_owned(),
            measurement: measurement.to_owned(),
            ts,
            tags: BTreeMap::new(),
            fields,
        })
        .collect();
    Page {
        records,
        next_from: cut.filter(|&c| c < to).map(|c| c + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtaas_schemas::timeseries::TsSeries;

    fn series(field: &str, ts: &[i64]) -> TsSeries {
        TsSeries {
            field: field.into(),
            points: ts.iter().map(|&t| (t, FieldValue::I64(t))).collect(),
        }
    }

    #[test]
    fn a_page_ends_where_the_first_full_series_ends() {
        // `a` has a point every ns, `b` every other: with limit 3, `a` ends at 3 and
        // `b` at 5; records up to 3 are complete.
        let reply = TsQueryReply {
            series: vec![series("a", &[1, 2, 3]), series("b", &[1, 3, 5])],
        };
        let page = assemble("pt", "m", reply, 3, 100);
        let ts: Vec<i64> = page.records.iter().map(|r| r.ts).collect();
        assert_eq!(ts, [1, 2, 3]);
        assert_eq!(page.records[0].fields.len(), 2);
        assert_eq!(page.records[1].fields.len(), 1);
        assert_eq!(page.next_from, Some(4));
    }

    #[test]
    fn a_page_without_a_full_series_is_the_last() {
        let reply = TsQueryReply {
            series: vec![series("a", &[7, 9])],
        };
        let page = assemble("pt", "m", reply, 5, 100);
        assert_eq!(page.records.len(), 2);
        assert_eq!(page.next_from, None);
        // A full series ending at `to` ends the range too.
        let reply = TsQueryReply {
            series: vec![series("a", &[99, 100])],
        };
        assert_eq!(assemble("pt", "m", reply, 2, 100).next_from, None);
    }
}
