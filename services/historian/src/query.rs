//! `ts.query` requests checked and resolved: absolute times, window, aggregate, limit.

use dtaas_schemas::timeseries::TsQueryRequest;
use dtaas_schemas::{subject, time, ErrorCode, ErrorReply};

/// Points per series when the request sets no limit.
pub const DEFAULT_LIMIT: usize = 10_000;
/// The largest limit a request may ask for, which bounds the size of a reply.
pub const MAX_LIMIT: usize = 1_000_000;

/// How the points of a window are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Mean,
    Min,
    Max,
    Last,
    Count,
}

impl Agg {
    /// The name used in requests and by Flux.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Min => "min",
            Self::Max => "max",
            Self::Last => "last",
            Self::Count => "count",
        }
    }
}

/// A valid `ts.query` with absolute times (ns, both inclusive).
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub pt: String,
    pub measurement: String,
    /// Empty means every field.
    pub fields: Vec<String>,
    pub from: i64,
    pub to: i64,
    /// Window length (ns) and aggregate; `None` returns raw points. Windows are aligned
    /// to the Unix epoch; without `every` one window spans the whole range.
    pub window: Option<(Option<i64>, Agg)>,
    pub limit: usize,
}

fn bad(field: &str, message: impl std::fmt::Display) -> ErrorReply {
    ErrorReply::new(ErrorCode::BadRequest, format!("field `{field}`: {message}"))
}

impl Query {
    /// Checks `request` against the clock `now` (ns); errors name the offending field.
    pub fn parse(request: TsQueryRequest, now: i64) -> Result<Self, ErrorReply> {
        subject::validate_token("PT id", &request.pt).map_err(|e| bad("pt", e))?;
        subject::validate_token("measurement", &request.measurement)
            .map_err(|e| bad("measurement", e))?;
        let mut fields = request.fields.unwrap_or_default();
        // A field named twice is one series, not two.
        let mut seen = std::collections::HashSet::new();
        fields.retain(|f| seen.insert(f.clone()));
        if let Some(empty) = fields.iter().find(|f| f.is_empty()) {
            return Err(bad("fields", format!("{empty:?} is not a field name")));
        }
        let from = time::parse_time(request.from.as_deref().unwrap_or("-1h"), now)
            .map_err(|e| bad("from", e))?;
        let to = time::parse_time(request.to.as_deref().unwrap_or("now"), now)
            .map_err(|e| bad("to", e))?;
        if from > to {
            return Err(bad("from", "the range starts after it ends (`to`)"));
        }
        let every = match &request.every {
            None => None,
            Some(text) => match time::parse_duration_ns(text) {
                Ok(ns) if ns > 0 => Some(ns),
                Ok(_) => return Err(bad("every", "the window must be longer than zero")),
                Err(e) => return Err(bad("every", e)),
            },
        };
        let agg = match request.agg.as_deref() {
            None => None,
            Some("mean") => Some(Agg::Mean),
            Some("min") => Some(Agg::Min),
            Some("max") => Some(Agg::Max),
            Some("last") => Some(Agg::Last),
            Some("count") => Some(Agg::Count),
            Some(other) => {
                return Err(bad(
                    "agg",
                    format!("unknown aggregate {other:?}; use mean, min, max, last or count"),
                ))
            }
        };
        let window = match (every, agg) {
            (None, None) => None,
            (every, agg) => Some((every, agg.unwrap_or(Agg::Mean))),
        };
        let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(bad("limit", format!("must be from 1 to {MAX_LIMIT}")));
        }
        Ok(Self {
            pt: request.pt,
            measurement: request.measurement,
            fields,
            from,
            to,
            window,
            limit,
        })
    }
}

/// The start of the window that holds `ts`: windows of `every` ns aligned to the epoch.
pub fn window_start(ts: i64, every: i64) -> i64 {
    ts - ts.rem_euclid(every)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> TsQueryRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn relative_times_and_defaults() {
        let now = 10_000_000_000_000;
        let q = Query::parse(request(r#"{"pt":"inc1","measurement":"t"}"#), now).unwrap();
        assert_eq!((q.from, q.to), (now - 3_600_000_000_000, now));
        assert_eq!((q.window, q.limit), (None, DEFAULT_LIMIT));
        let q = Query::parse(
            request(r#"{"pt":"inc1","measurement":"t","every":"10s","from":"-15m"}"#),
            now,
        )
        .unwrap();
        assert_eq!(q.window, Some((Some(10_000_000_000), Agg::Mean)));
        let q = Query::parse(
            request(r#"{"pt":"inc1","measurement":"t","agg":"count"}"#),
            now,
        )
        .unwrap();
        assert_eq!(q.window, Some((None, Agg::Count)));
        let q = Query::parse(
            request(r#"{"pt":"inc1","measurement":"t","fields":["b","a","b","b","a"]}"#),
            now,
        )
        .unwrap();
        assert_eq!(q.fields, ["b", "a"], "a field named twice is one series");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"pt":"in c1","measurement":"t"}"#, "`pt`"),
            (r#"{"pt":"a","measurement":""}"#, "`measurement`"),
            (
                r#"{"pt":"a","measurement":"t","from":"yesterday"}"#,
                "`from`",
            ),
            (r#"{"pt":"a","measurement":"t","to":"soon"}"#, "`to`"),
            (r#"{"pt":"a","measurement":"t","every":"10"}"#, "`every`"),
            (r#"{"pt":"a","measurement":"t","agg":"avg"}"#, "`agg`"),
            (r#"{"pt":"a","measurement":"t","limit":0}"#, "`limit`"),
            (r#"{"pt":"a","measurement":"t","fields":[""]}"#, "`fields`"),
            (
                r#"{"pt":"a","measurement":"t","from":"now","to":"-1h"}"#,
                "`from`",
            ),
        ];
        for (json, field) in cases {
            let err = Query::parse(request(json), 1_000_000_000_000_000).unwrap_err();
            assert_eq!(err.error.code, ErrorCode::BadRequest);
            assert!(err.error.message.contains(field), "{json}: {err}");
        }
    }

    #[test]
    fn windows_align_to_the_epoch() {
        assert_eq!(window_start(25, 10), 20);
        assert_eq!(window_start(-5, 10), -10);
    }
}
