//! Builders and parsers for every dtaas subject; no subject string is written elsewhere.
//!
//! The subject map (see `docs/subjects.md`):
//!
//! | subject | what |
//! |---|---|
//! | `dtaas.v1.<user>.<service>.<verb>` | request/reply to a service |
//! | `dtaas.v1.tel.<pt>.<measurement>` | PT telemetry (stream `DTAAS_TEL`) |
//! | `dtaas.v1.cmd.<pt>.<command>` | commands for a PT (stream `DTAAS_CMD`) |
//! | `dtaas.v1.evt.<kind>.<id>.<event>` | events (stream `DTAAS_EVT`) |
//! | `dtaas.v1.dt.<dt>.out.<output>` | a running DT's outputs (stream `DTAAS_TEL`) |
//! | `dtaas.v1.dt.<dt>.ctl.<action>` | a running DT's control (core NATS) |
//! | `dtaas.v1.dt.<dt>.log.<role>` | a running DT process's output lines (core NATS) |
//! | `dtaas.v1.dt.<dt>.replay.<pt>.<measurement>` | recorded telemetry replayed to a what-if fork (core NATS) |
//! | `dtaas.v1.exec.<node>.<verb>` | requests to one exec node (lifecycle → exec) |
//! | `dtaas.v1.acct.<user>.<dt>` | usage samples for accounting (stream `DTAAS_USAGE`) |
//! | `dtaas.v1.dlq.<source>` | input that could not be processed (stream `DTAAS_DLQ`) |

use std::fmt;

use crate::excerpt::excerpt;

/// Every dtaas subject starts with this prefix.
pub const PREFIX: &str = "dtaas.v1";

const TEL: &str = "tel";
const CMD: &str = "cmd";
const EVT: &str = "evt";
const DT: &str = "dt";
const DLQ: &str = "dlq";
const OUT: &str = "out";
const CTL: &str = "ctl";
const LOG: &str = "log";
const REPLAY: &str = "replay";
const EXEC: &str = "exec";
const ACCT: &str = "acct";

/// Tokens that follow the prefix and therefore cannot be user names.
const RESERVED_USERS: [&str; 7] = [TEL, CMD, EVT, DT, DLQ, EXEC, ACCT];

/// Service names: a node id sits where a request's service does
/// (`dtaas.v1.exec.<node>.list` would match `dtaas.v1.*.dt.list`), so none may be one.
const RESERVED_NODE_IDS: [&str; 7] = ["dt", "asset", "assets", "usage", "ts", "graph", "cmd"];

/// The longest identifier (PT id, measurement, command, DT id, user, …), in bytes.
/// Identifiers become subject tokens, KV keys and MQTT topic levels; a subject holds
/// several of them and must stay well below nats-server's control-line limit (4 KiB),
/// past which the server drops the connection.
pub const MAX_TOKEN_BYTES: usize = 128;

/// A subject or one of its tokens is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// `token` is an excerpt of the offending input, never all of it.
    #[error("{what} {token} is invalid: {why}")]
    InvalidToken {
        what: &'static str,
        token: String,
        why: &'static str,
    },
    /// `subject` is an excerpt of the offending subject.
    #[error("subject {subject} is not a dtaas {expected} subject (expected {shape})")]
    Shape {
        subject: String,
        expected: &'static str,
        shape: &'static str,
    },
}

/// Characters no identifier may hold: NATS subject syntax (`.` separates tokens, `*`
/// and `>` are wildcards) and MQTT topic syntax (`/` separates levels, `+` and `#` are
/// wildcards), so that no identifier can alias another subject or topic.
const FORBIDDEN: [char; 6] = ['.', '*', '>', '/', '+', '#'];

/// The identifier rule: checks that `token` can be one token of a subject (and one
/// level of an MQTT topic): 1 to `MAX_TOKEN_BYTES` bytes, no control characters, no
/// whitespace, none of `. * > / + #`. `what` names it in the error (for example
/// `"PT id"`), so the caller learns which input was wrong.
pub fn validate_token(what: &'static str, token: &str) -> Result<(), SubjectError> {
    let why = if token.is_empty() {
        Some("it is empty")
    } else if token.len() > MAX_TOKEN_BYTES {
        Some("it is longer than 128 bytes")
    } else if token.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if token.chars().any(char::is_whitespace) {
        Some("it contains whitespace")
    } else if let Some(c) = token.chars().find(|c| FORBIDDEN.contains(c)) {
        Some(match c {
            '.' => "it contains '.'",
            '*' => "it contains '*'",
            '>' => "it contains '>'",
            '/' => "it contains '/'",
            '+' => "it contains '+'",
            _ => "it contains '#'",
        })
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(SubjectError::InvalidToken {
            what,
            token: excerpt(token),
            why,
        }),
    }
}

fn validate_user(user: &str) -> Result<(), SubjectError> {
    validate_token("user", user)?;
    if RESERVED_USERS.contains(&user) {
        return Err(SubjectError::InvalidToken {
            what: "user",
            token: excerpt(user),
            why: "it is a reserved subject token",
        });
    }
    Ok(())
}

fn join(tokens: &[&str]) -> String {
    let len = PREFIX.len() + tokens.iter().map(|t| t.len() + 1).sum::<usize>();
    let mut subject = String::with_capacity(len);
    subject.push_str(PREFIX);
    for token in tokens {
        subject.push('.');
        subject.push_str(token);
    }
    subject
}

/// Splits `subject` after the prefix, requiring `first` as the next token and exactly
/// `rest` more tokens.
fn split<'a, const N: usize>(
    subject: &'a str,
    first: &str,
    expected: &'static str,
    shape: &'static str,
) -> Result<[&'a str; N], SubjectError> {
    let shape_error = || SubjectError::Shape {
        subject: excerpt(subject),
        expected,
        shape,
    };
    let rest = subject
        .strip_prefix(PREFIX)
        .and_then(|s| s.strip_prefix('.'))
        .and_then(|s| s.strip_prefix(first))
        .and_then(|s| s.strip_prefix('.'))
        .ok_or_else(shape_error)?;
    let mut tokens = [""; N];
    let mut parts = rest.split('.');
    for slot in tokens.iter_mut() {
        *slot = parts
            .next()
            .filter(|t| !t.is_empty())
            .ok_or_else(shape_error)?;
    }
    if parts.next().is_some() {
        return Err(shape_error());
    }
    Ok(tokens)
}

/// `dtaas.v1.tel.<pt>.<measurement>`: telemetry from a PT.
pub fn telemetry(pt: &str, measurement: &str) -> Result<String, SubjectError> {
    validate_token("PT id", pt)?;
    validate_token("measurement", measurement)?;
    Ok(join(&[TEL, pt, measurement]))
}

/// The PT and measurement of a telemetry subject.
pub fn parse_telemetry(subject: &str) -> Result<(&str, &str), SubjectError> {
    let [pt, measurement] = split(subject, TEL, "telemetry", "dtaas.v1.tel.<pt>.<measurement>")?;
    Ok((pt, measurement))
}

/// Every telemetry subject.
pub fn telemetry_all() -> String {
    join(&[TEL, ">"])
}

/// `dtaas.v1.cmd.<pt>.<command>`: a command for a PT.
pub fn command(pt: &str, command: &str) -> Result<String, SubjectError> {
    validate_token("PT id", pt)?;
    validate_token("command", command)?;
    Ok(join(&[CMD, pt, command]))
}

/// The PT and command name of a command subject.
pub fn parse_command(subject: &str) -> Result<(&str, &str), SubjectError> {
    let [pt, command] = split(subject, CMD, "command", "dtaas.v1.cmd.<pt>.<command>")?;
    Ok((pt, command))
}

/// Every command subject.
pub fn command_all() -> String {
    join(&[CMD, ">"])
}

/// `dtaas.v1.evt.<kind>.<id>.<event>`: an event about the entity `<kind>/<id>`.
pub fn event(kind: &str, id: &str, event: &str) -> Result<String, SubjectError> {
    validate_token("event kind", kind)?;
    validate_token("id", id)?;
    validate_token("event", event)?;
    Ok(join(&[EVT, kind, id, event]))
}

/// The kind, id and event of an event subject.
pub fn parse_event(subject: &str) -> Result<(&str, &str, &str), SubjectError> {
    let [kind, id, event] = split(subject, EVT, "event", "dtaas.v1.evt.<kind>.<id>.<event>")?;
    Ok((kind, id, event))
}

/// Every event subject.
pub fn event_all() -> String {
    join(&[EVT, ">"])
}

/// Every event of one kind, for example all command status events.
pub fn event_kind_all(kind: &str) -> Result<String, SubjectError> {
    validate_token("event kind", kind)?;
    Ok(join(&[EVT, kind, ">"]))
}

/// Every event about one entity.
pub fn event_id_all(kind: &str, id: &str) -> Result<String, SubjectError> {
    validate_token("event kind", kind)?;
    validate_token("id", id)?;
    Ok(join(&[EVT, kind, id, "*"]))
}

/// `dtaas.v1.dt.<dt>.out.<output>`: an output a running DT produces.
pub fn dt_output(dt: &str, output: &str) -> Result<String, SubjectError> {
    validate_token("DT id", dt)?;
    validate_token("output", output)?;
    Ok(join(&[DT, dt, OUT, output]))
}

/// The DT and output name of a DT output subject.
pub fn parse_dt_output(subject: &str) -> Result<(&str, &str), SubjectError> {
    let [dt, out, output] = split(subject, DT, "DT output", "dtaas.v1.dt.<dt>.out.<output>")?;
    if out != OUT {
        return Err(SubjectError::Shape {
            subject: excerpt(subject),
            expected: "DT output",
            shape: "dtaas.v1.dt.<dt>.out.<output>",
        });
    }
    Ok((dt, output))
}

/// Every output of one DT.
pub fn dt_outputs(dt: &str) -> Result<String, SubjectError> {
    validate_token("DT id", dt)?;
    Ok(join(&[DT, dt, OUT, ">"]))
}

/// Every output of every DT.
pub fn dt_output_all() -> String {
    join(&[DT, "*", OUT, ">"])
}

/// `dtaas.v1.dt.<dt>.ctl.<action>`: control of a running DT (save, ping, stop).
pub fn dt_control(dt: &str, action: &str) -> Result<String, SubjectError> {
    validate_token("DT id", dt)?;
    validate_token("action", action)?;
    Ok(join(&[DT, dt, CTL, action]))
}

/// `dtaas.v1.dt.<dt>.log.<role>`: the output lines of one process of a running DT.
pub fn dt_log(dt: &str, role: &str) -> Result<String, SubjectError> {
    validate_token("DT id", dt)?;
    validate_token("role", role)?;
    Ok(join(&[DT, dt, LOG, role]))
}

/// The output lines of every process of one DT.
pub fn dt_log_all(dt: &str) -> Result<String, SubjectError> {
    validate_token("DT id", dt)?;
    Ok(join(&[DT, dt, LOG, "*"]))
}

/// `dtaas.v1.dt.<dt>.replay.<pt>.<measurement>`: telemetry of PT `<pt>` recorded by
/// the historian, replayed by lifecycle to the what-if fork `<dt>` in place of the
/// live `dtaas.v1.tel.<pt>.<measurement>`.
pub fn dt_replay(dt: &str, pt: &str, measurement: &str) -> Result<String, SubjectError> {
    validate_token("DT id", dt)?;
    validate_token("PT id", pt)?;
    validate_token("measurement", measurement)?;
    Ok(join(&[DT, dt, REPLAY, pt, measurement]))
}

/// The DT, PT and measurement of a replay subject.
pub fn parse_dt_replay(subject: &str) -> Result<(&str, &str, &str), SubjectError> {
    const SHAPE: &str = "dtaas.v1.dt.<dt>.replay.<pt>.<measurement>";
    let [dt, replay, pt, measurement] = split(subject, DT, "replay", SHAPE)?;
    if replay != REPLAY {
        return Err(SubjectError::Shape {
            subject: excerpt(subject),
            expected: "replay",
            shape: SHAPE,
        });
    }
    Ok((dt, pt, measurement))
}

/// Checks that `node` can be an exec node id.
pub fn validate_node_id(node: &str) -> Result<(), SubjectError> {
    validate_token("node id", node)?;
    if RESERVED_NODE_IDS.contains(&node) {
        return Err(SubjectError::InvalidToken {
            what: "node id",
            token: excerpt(node),
            why: "it is the name of a service",
        });
    }
    Ok(())
}

/// `dtaas.v1.exec.<node>.<verb>`: a request to one exec node (start, stop, list, logs).
pub fn exec_node(node: &str, verb: &str) -> Result<String, SubjectError> {
    validate_node_id(node)?;
    validate_token("verb", verb)?;
    Ok(join(&[EXEC, node, verb]))
}

/// `dtaas.v1.acct.<user>.<dt>`: usage samples of one DT of one user.
pub fn usage_sample(user: &str, dt: &str) -> Result<String, SubjectError> {
    validate_user(user)?;
    validate_token("DT id", dt)?;
    Ok(join(&[ACCT, user, dt]))
}

/// The usage samples of one user's DTs.
pub fn usage_user_all(user: &str) -> Result<String, SubjectError> {
    validate_user(user)?;
    Ok(join(&[ACCT, user, "*"]))
}

/// Every usage sample.
pub fn usage_all() -> String {
    join(&[ACCT, ">"])
}

/// `dtaas.v1.dlq.<source>`: input the worker `<source>` could not process.
pub fn dlq(source: &str) -> Result<String, SubjectError> {
    validate_token("DLQ source", source)?;
    Ok(join(&[DLQ, source]))
}

/// Every DLQ subject.
pub fn dlq_all() -> String {
    join(&[DLQ, ">"])
}

/// A request subject `dtaas.v1.<user>.<service>.<verb>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestSubject<'a> {
    pub user: &'a str,
    pub service: &'a str,
    pub verb: &'a str,
}

impl fmt::Display for RequestSubject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}.{}.{}.{}", self.user, self.service, self.verb)
    }
}

/// `dtaas.v1.<user>.<service>.<verb>`: a request from `user`.
pub fn request(user: &str, service: &str, verb: &str) -> Result<String, SubjectError> {
    validate_user(user)?;
    validate_token("service", service)?;
    validate_token("verb", verb)?;
    Ok(join(&[user, service, verb]))
}

/// The subject a service listens on for `verb`: any user.
pub fn request_endpoint(service: &str, verb: &str) -> Result<String, SubjectError> {
    validate_token("service", service)?;
    validate_token("verb", verb)?;
    Ok(join(&["*", service, verb]))
}

/// The user, service and verb of a request subject.
pub fn parse_request(subject: &str) -> Result<RequestSubject<'_>, SubjectError> {
    let shape_error = || SubjectError::Shape {
        subject: excerpt(subject),
        expected: "request",
        shape: "dtaas.v1.<user>.<service>.<verb>",
    };
    let rest = subject
        .strip_prefix(PREFIX)
        .and_then(|s| s.strip_prefix('.'))
        .ok_or_else(shape_error)?;
    let mut parts = rest.split('.');
    let (Some(user), Some(service), Some(verb), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(shape_error());
    };
    validate_user(user)?;
    validate_token("service", service)?;
    validate_token("verb", verb)?;
    Ok(RequestSubject {
        user,
        service,
        verb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_round_trip() {
        let s = telemetry("inc1", "temperature").unwrap();
        assert_eq!(s, "dtaas.v1.tel.inc1.temperature");
        assert_eq!(parse_telemetry(&s).unwrap(), ("inc1", "temperature"));
    }

    #[test]
    fn command_event_dlq_and_output_subjects() {
        assert_eq!(
            command("inc1", "heater").unwrap(),
            "dtaas.v1.cmd.inc1.heater"
        );
        assert_eq!(
            parse_command("dtaas.v1.cmd.inc1.heater").unwrap(),
            ("inc1", "heater")
        );
        let e = event("cmd", "0193", "sent").unwrap();
        assert_eq!(e, "dtaas.v1.evt.cmd.0193.sent");
        assert_eq!(parse_event(&e).unwrap(), ("cmd", "0193", "sent"));
        assert_eq!(dlq("bridge").unwrap(), "dtaas.v1.dlq.bridge");
        let o = dt_output("twin1", "estimate").unwrap();
        assert_eq!(o, "dtaas.v1.dt.twin1.out.estimate");
        assert_eq!(parse_dt_output(&o).unwrap(), ("twin1", "estimate"));
        assert_eq!(dt_output_all(), "dtaas.v1.dt.*.out.>");
        assert_eq!(telemetry_all(), "dtaas.v1.tel.>");
        assert_eq!(
            event_id_all("dt", "twin1").unwrap(),
            "dtaas.v1.evt.dt.twin1.*"
        );
    }

    #[test]
    fn replay_round_trip() {
        let s = dt_replay("fork1", "pt9", "val").unwrap();
        assert_eq!(s, "dtaas.v1.dt.fork1.replay.pt9.val");
        assert_eq!(parse_dt_replay(&s).unwrap(), ("fork1", "pt9", "val"));
        // Neither an output nor telemetry: the historian's stream does not hold it.
        assert!(parse_dt_output(&s).is_err() && parse_telemetry(&s).is_err());
        assert!(parse_dt_replay("dtaas.v1.dt.fork1.out.pt9.val").is_err());
        assert!(parse_dt_replay("dtaas.v1.dt.fork1.replay.pt9").is_err());
        assert!(dt_replay("f", "p t", "val")
            .unwrap_err()
            .to_string()
            .contains("PT id"));
    }

    #[test]
    fn exec_log_and_usage_subjects() {
        assert_eq!(exec_node("n1", "start").unwrap(), "dtaas.v1.exec.n1.start");
        assert!(exec_node("dt", "list")
            .unwrap_err()
            .to_string()
            .contains("service"));
        assert_eq!(dt_log("d1", "r").unwrap(), "dtaas.v1.dt.d1.log.r");
        assert_eq!(dt_log_all("d1").unwrap(), "dtaas.v1.dt.d1.log.*");
        assert_eq!(
            usage_sample("alice", "d1").unwrap(),
            "dtaas.v1.acct.alice.d1"
        );
        assert_eq!(usage_user_all("alice").unwrap(), "dtaas.v1.acct.alice.*");
        assert!(parse_request("dtaas.v1.exec.n1.start").is_err());
    }

    #[test]
    fn request_round_trip() {
        let s = request("alice", "dt", "create").unwrap();
        assert_eq!(s, "dtaas.v1.alice.dt.create");
        let parsed = parse_request(&s).unwrap();
        assert_eq!(parsed.user, "alice");
        assert_eq!(parsed.service, "dt");
        assert_eq!(parsed.verb, "create");
        assert_eq!(parsed.to_string(), s);
        assert_eq!(
            request_endpoint("ts", "query").unwrap(),
            "dtaas.v1.*.ts.query"
        );
    }

    #[test]
    fn bad_tokens_are_named() {
        for (token, why) in [
            ("", "empty"),
            ("a.b", "'.'"),
            ("a*", "'*'"),
            ("a>", "'>'"),
            ("a b", "whitespace"),
            ("a\tb", "control character"),
            ("a\u{1}b", "control character"),
            ("a\u{0}", "control character"),
            ("a\u{a0}b", "whitespace"),
            ("a/b", "'/'"),
            ("a+", "'+'"),
            ("#", "'#'"),
            (&"x".repeat(129), "longer than 128 bytes"),
        ] {
            let err = telemetry(token, "temp").unwrap_err().to_string();
            assert!(err.contains("PT id"), "{err}");
            assert!(err.contains(why), "{err}");
        }
        let err = telemetry("inc1", "te mp").unwrap_err().to_string();
        assert!(err.contains("measurement \"te mp\""), "{err}");
        assert!(request("tel", "dt", "get").is_err());
        assert!(telemetry(&"x".repeat(128), "temp").is_ok());
        // The error quotes a short prefix of a huge token, not all of it.
        let err = telemetry(&"x".repeat(70_000), "temp")
            .unwrap_err()
            .to_string();
        assert!(err.len() < 200 && err.contains("70000 bytes"), "{err}");
    }

    #[test]
    fn wrong_shapes_are_rejected() {
        for s in [
            "dtaas.v1.tel.inc1",
            "dtaas.v1.tel.inc1.temp.extra",
            "dtaas.v1.tel..temp",
            "other.v1.tel.inc1.temp",
            "dtaas.v1.cmd.inc1.temp",
        ] {
            assert!(parse_telemetry(s).is_err(), "{s}");
        }
        assert!(parse_request("dtaas.v1.alice.dt").is_err());
        assert!(parse_dt_output("dtaas.v1.dt.twin1.ctl.save").is_err());
    }
}
