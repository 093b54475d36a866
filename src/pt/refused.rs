//! Why the simulated incubator refuses a command: the message goes back to the sender
//! in the command's ack (`"error"`), so it names the field and the allowed range.

/// A command the incubator does not apply; nothing changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);
