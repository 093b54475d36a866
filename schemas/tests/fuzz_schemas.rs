//! Property-based fuzzing of the shared contracts every worker parses from the
//! outside: the identifier rule, subjects, times and durations, telemetry bodies
//! (records and arrays) and request bodies, in JSON and MessagePack.
//!
//! Each property runs `PROPTEST_CASES` cases (proptest's default, 256, in CI); for a
//! long run: `PROPTEST_CASES=1000000 cargo test -p dtaas-schemas --test fuzz_schemas
//! --release`.

use dtaas_schemas::command::{CommandStatusRequest, SendCommandRequest};
use dtaas_schemas::excerpt::{excerpt, EXCERPT_CHARS};
use dtaas_schemas::subject::{self, MAX_TOKEN_BYTES};
use dtaas_schemas::telemetry_batch::decode_records_into;
use dtaas_schemas::timeseries::TsQueryRequest;
use dtaas_schemas::{time, Encoding};
use dtaas_test_harness::mutate;
use proptest::prelude::*;

/// Valid bodies the mutations start from.
const SEEDS: &[&str] = &[
    r#"{"pt":"inc1","measurement":"env","ts":1764000000000000000,"tags":{"room":"lab"},"fields":{"temp":21.5,"on":true,"n":3,"s":"x"}}"#,
    r#"[{"pt":"a","measurement":"b","ts":1,"fields":{"v":1}},{"pt":"a","measurement":"b","ts":2,"fields":{"v":2.5}}]"#,
    r#"{"pt":"inc1","measurement":"temperature","fields":["temp"],"from":"-1h","to":"now","every":"10s","agg":"mean","limit":10000}"#,
    r#"{"pt":"inc1","command":"heater","payload":{"on":true},"ttl_ms":5000}"#,
    r#"{"id":"0193abc"}"#,
];

/// A seed, as JSON or converted to MessagePack, with random edits
/// (`dtaas_test_harness::mutate`).
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    mutate::json_or_msgpack(SEEDS)
}

fn any_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        mutated(),
        mutated()
    ]
}

proptest! {
    /// A token the rule accepts is short, has none of the forbidden characters, and
    /// makes subjects that parse back to it; a refused one is named briefly.
    #[test]
    fn the_identifier_rule_holds(token in prop_oneof![".{0,200}", "[a-z0-9_./+#*> -]{0,10}", "\\PC{120,140}"]) {
        match subject::validate_token("PT id", &token) {
            Ok(()) => {
                prop_assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES);
                prop_assert!(!token.chars().any(|c| c.is_control() || c.is_whitespace()
                    || "./+#*>".contains(c)));
                let subject = subject::telemetry(&token, "m").unwrap();
                prop_assert_eq!(subject::parse_telemetry(&subject).unwrap(), (token.as_str(), "m"));
                let subject = subject::command(&token, &token).unwrap();
                prop_assert_eq!(subject::parse_command(&subject).unwrap(), (token.as_str(), token.as_str()));
            }
            Err(e) => prop_assert!(e.to_string().len() < 8 * EXCERPT_CHARS + 128),
        }
    }

    /// Subject parsers never panic and their errors quote only a prefix.
    #[test]
    fn subject_parsers_never_panic(text in ".{0,300}") {
        let _ = subject::parse_request(&text);
        let _ = subject::parse_event(&text);
        let _ = subject::parse_dt_output(&text);
        if let Err(e) = subject::parse_telemetry(&text) {
            prop_assert!(e.to_string().len() < 8 * EXCERPT_CHARS + 128);
        }
    }

    /// Times and durations as people type them never panic; errors stay short.
    #[test]
    fn times_and_durations_never_panic(text in prop_oneof![".{0,100}", "-?[0-9]{0,25}(ns|us|ms|s|m|h|d|w|y)?", "[0-9T:Z.+-]{0,40}"]) {
        if let Err(e) = time::parse_time(&text, 1_700_000_000_000_000_000) {
            prop_assert!(e.to_string().len() < 8 * EXCERPT_CHARS + 256);
        }
        let _ = time::parse_duration_ns(&text);
    }

    /// Telemetry bodies, records or arrays, in either encoding, decode or fail cleanly.
    #[test]
    fn telemetry_bodies_decode_or_fail(body in any_body()) {
        let encoding = Encoding::sniff(&body);
        let mut records = Vec::new();
        if let Ok(n) = decode_records_into(encoding, &body, &mut records) {
            prop_assert_eq!(n, records.len());
        }
    }

    /// Request bodies decode or fail cleanly.
    #[test]
    fn request_bodies_decode_or_fail(body in any_body()) {
        let encoding = Encoding::sniff(&body);
        let _ = encoding.decode::<TsQueryRequest>(&body);
        let _ = encoding.decode::<SendCommandRequest>(&body);
        let _ = encoding.decode::<CommandStatusRequest>(&body);
    }

    /// An excerpt is short whatever it quotes.
    #[test]
    fn excerpts_are_short(text in prop_oneof![".{0,100}", "\\PC{1000,3000}"]) {
        prop_assert!(excerpt(&text).chars().count() <= 10 * EXCERPT_CHARS + 32);
    }
}
