//! Lifecycle states of a DT and the events that record its transitions.

use serde::{Deserialize, Serialize};

use crate::dt_config::DtConfig;

/// The event kind of DT lifecycle events: `dtaas.v1.evt.dt.<dt>.<event>`.
pub const EVENT_KIND: &str = "dt";

/// Where a DT is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleState {
    Created,
    Executing,
    Saved,
    Analysing,
    Evolving,
    Terminated,
    Failed,
}

impl LifecycleState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Executing => "executing",
            Self::Saved => "saved",
            Self::Analysing => "analysing",
            Self::Evolving => "evolving",
            Self::Terminated => "terminated",
            Self::Failed => "failed",
        }
    }
}

/// A lifecycle transition of a DT, published on `dtaas.v1.evt.dt.<dt>.<to>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    pub dt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<LifecycleState>,
    pub to: LifecycleState,
    /// Nanoseconds since the Unix epoch.
    pub at: i64,
    /// Who caused the transition.
    pub user: String,
    /// The configuration, on `created` and after `evolving`; it carries the assets,
    /// PTs and children that the graph records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<DtConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl LifecycleEvent {
    pub fn subject(&self) -> Result<String, crate::SubjectError> {
        crate::subject::event(EVENT_KIND, &self.dt, self.to.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, Encoding};

    #[test]
    fn lifecycle_event_round_trip() {
        let typed =
            r#"{"dt":"incubator-1","from":"created","to":"executing","at":7,"user":"alice"}"#;
        let event: LifecycleEvent = decode(None, typed.as_bytes()).unwrap();
        assert_eq!(event.to, LifecycleState::Executing);
        assert_eq!(
            event.subject().unwrap(),
            "dtaas.v1.evt.dt.incubator-1.executing"
        );
        let body = Encoding::MsgPack.encode(&event).unwrap();
        assert_eq!(decode::<LifecycleEvent>(None, &body).unwrap(), event);
        assert!(
            decode::<LifecycleEvent>(None, br#"{"dt":"x","to":"flying","at":1,"user":"a"}"#)
                .unwrap_err()
                .to_string()
                .contains("flying")
        );
    }
}
