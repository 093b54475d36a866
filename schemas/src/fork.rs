//! What-if forks: `dt.fork` makes a copy of a DT with other parameters, optionally fed
//! by telemetry the historian recorded (a replay) instead of live data; `dt.replay`
//! replays again. The registry keeps the replay window and the progress of its last run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `dt.fork`: `{"id":"<source>","as":"<new id>","params":{…},"replay":{…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    /// The DT to copy: one of the caller's, without children.
    pub id: String,
    /// The fork's id, new on the platform.
    #[serde(rename = "as")]
    pub fork: String,
    /// Role → parameter → value, applied over the source's parameters and validated
    /// like `create` (problems at `params.<role>.<param>`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    /// Feed the fork recorded telemetry instead of live data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayWindow>,
}

/// The recorded range a fork is fed, as a person writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayWindow {
    /// Start, inclusive: RFC 3339, `now` or relative (`-1h`), resolved when forking.
    pub from: String,
    /// End, inclusive, written like `from`.
    pub to: String,
    /// Pace: 1.0 is as fast as the records were recorded, 10.0 ten times faster;
    /// absent: as fast as possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
}

/// A fork's replay in the registry (`DtState.replay`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replay {
    /// Start of the recorded range, inclusive, ns since the epoch.
    pub from: i64,
    /// End of the recorded range, inclusive, ns since the epoch.
    pub to: i64,
    /// Pace (1.0 = real time); `None`: as fast as possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    /// The latest run, once one started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ReplayProgress>,
}

/// How far the latest replay of a fork got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayProgress {
    /// When this run started (ns): it names the run; a newer run replaces it.
    pub started_at: i64,
    /// Records published on the fork's replay subjects so far.
    pub replayed: u64,
    /// Records the historian holds for the range (counted before the run).
    pub total: u64,
    /// The run ended: every record replayed, or `error` says why not.
    pub done: bool,
    /// Why the run stopped early (the DT stopped executing, the historian failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Role → how the run knew the role's process was ready for records, once it
    /// knew (before that, and for a fork without processes, empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ready: BTreeMap<String, Readiness>,
}

/// How a replay knew a process of the fork had subscribed to its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Readiness {
    /// It answered `dtaas.v1.dt.<fork>.ctl.ready`.
    #[serde(rename = "answered")]
    Answered,
    /// It never answered (a process written before the ready request): the run
    /// assumed `replay_delay` after it ran was enough.
    #[serde(rename = "by delay")]
    ByDelay,
}

impl Readiness {
    /// `answered`, `by delay`: as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Answered => "answered",
            Readiness::ByDelay => "by delay",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode;

    #[test]
    fn fork_request_as_typed_by_hand() {
        let typed = r#"{"id":"dbl","as":"dbl-x5","params":{"doubler":{"factor":5}},
            "replay":{"from":"2026-11-29T10:00:00Z","to":"-1m","speed":2.0}}"#;
        let request: ForkRequest = decode(None, typed.as_bytes()).unwrap();
        assert_eq!(request.fork, "dbl-x5");
        assert_eq!(request.params["doubler"]["factor"], 5);
        assert_eq!(request.replay.unwrap().speed, Some(2.0));
        let err = decode::<ForkRequest>(None, br#"{"id":"a","as":"b","parms":{}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("parms"), "{err}");
    }

    #[test]
    fn progress_names_how_each_role_was_ready_and_older_entries_still_read() {
        let written = r#"{"started_at":1,"replayed":2,"total":2,"done":true,
            "ready":{"doubler":"answered","late":"by delay"}}"#;
        let progress: ReplayProgress = decode(None, written.as_bytes()).unwrap();
        assert_eq!(progress.ready["doubler"], Readiness::Answered);
        assert_eq!(progress.ready["late"].as_str(), "by delay");
        let json = serde_json::to_value(&progress).unwrap();
        assert_eq!(json["ready"]["late"], "by delay");
        // Entries written before the ready request have no `ready`.
        let older = r#"{"started_at":1,"replayed":0,"total":0,"done":false}"#;
        let progress: ReplayProgress = decode(None, older.as_bytes()).unwrap();
        assert!(progress.ready.is_empty());
        assert!(serde_json::to_value(&progress)
            .unwrap()
            .get("ready")
            .is_none());
    }
}
