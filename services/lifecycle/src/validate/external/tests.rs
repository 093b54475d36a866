//! `C_e` exports and dashboards, and inputs wired to other DTs' outputs: every
//! problem with its path, and refusals about another user's DT that reveal nothing.

use std::collections::{BTreeMap, HashMap};

use dtaas_schemas::asset::ValueType;
use dtaas_schemas::codec::decode;
use dtaas_schemas::dt_config::DtState;

use super::super::tests::{config, problems_with};
use super::Peer;

/// A DT using the doubler (output `y`) wired to telemetry, with `external` as JSON.
fn doubler_dt(id: &str, external: &str) -> String {
    format!(
        r#"{{"id":"{id}","assets":[{{"name":"d","asset":"doubler",
            "inputs":{{"x":"dtaas.v1.tel.pt9.val"}},"params":{{"factor":2}}}}],
            "external":{external}}}"#
    )
}

/// A DT whose doubler reads `source` (and, as a flag, `flag_source` when given).
fn reader(source: &str, flag_source: Option<&str>) -> String {
    let flag = flag_source.map_or(String::new(), |s| {
        format!(r#",{{"name":"f","asset":"bob/flag@1","inputs":{{"on":"{s}"}}}}"#)
    });
    format!(
        r#"{{"id":"reader","assets":[{{"name":"d","asset":"doubler",
            "inputs":{{"x":"{source}"}},"params":{{"factor":2}}}}{flag}]}}"#
    )
}

fn found(json: &str, dts: &HashMap<String, Peer>) -> Vec<String> {
    problems_with(&config(json), &[], dts)
}

fn has(found: &[String], want: &str) -> bool {
    found.iter().any(|p| p.starts_with(want))
}

#[test]
fn exports_name_published_outputs_once_and_dashboards_are_http_urls() {
    let valid = doubler_dt(
        "a",
        r#"{"exports":["y"],"dashboards":["https://grafana.example.com/d/a?x=1","http://10.0.0.5:3000/"]}"#,
    );
    assert_eq!(found(&valid, &HashMap::new()), Vec::<String>::new());

    let bad = format!(
        r#"{{"id":"top","children":[{}]}}"#,
        doubler_dt(
            "kid",
            r#"{"exports":["y","z","y","dtaas.v1.dt.kid.out.y","a.b"],
                "dashboards":["grafana.example.com","ftp://files.example.com/x","https://","/d/x"]}"#
        )
    );
    let got = found(&bad, &HashMap::new());
    let expected = [
        "children[0].external.exports[1]: no role of DT \"kid\" publishes an output \"z\" (there are: y)",
        "children[0].external.exports[2]: \"y\" is exported twice (also external.exports[0])",
        "children[0].external.exports[3]: \"dtaas.v1.dt.kid.out.y\" is a subject; write only its output token \"y\"",
        "children[0].external.exports[4]: ",
        "children[0].external.dashboards[0]: \"grafana.example.com\" is not an absolute http(s) URL",
        "children[0].external.dashboards[1]: \"ftp://files.example.com/x\" is not an http:// or https:// URL",
        "children[0].external.dashboards[2]: \"https://\" is not an absolute http(s) URL",
        "children[0].external.dashboards[3]: \"/d/x\" is not an absolute http(s) URL",
    ];
    for want in expected {
        assert!(has(&got, want), "missing {want:?} in {got:#?}");
    }
    assert_eq!(got.len(), expected.len(), "{got:#?}");
}

#[test]
fn event_sinks_are_subjects_of_the_users_own() {
    let valid = doubler_dt("a", r#"{"event_sinks":["alerts.a","ops-feed"]}"#);
    assert_eq!(found(&valid, &HashMap::new()), Vec::<String>::new());
    let bad = doubler_dt(
        "a",
        r#"{"event_sinks":["alerts.*","", "a..b","dtaas.v1.cmd.pt9.open","dtaas.v1.bob.dt.terminate","$JS.API.STREAM.DELETE.DTAAS_TEL","_INBOX.bob.x"]}"#,
    );
    let got = found(&bad, &HashMap::new());
    for (i, why) in [
        "is not a subject",
        "is not a subject",
        "is not a subject",
        "which the platform or the server owns",
        "which the platform or the server owns",
        "which the platform or the server owns",
        "which the platform or the server owns",
    ]
    .iter()
    .enumerate()
    {
        let path = format!("external.event_sinks[{i}]: ");
        assert!(
            got.iter().any(|p| p.starts_with(&path) && p.contains(why)),
            "{path}{why} in {got:#?}"
        );
    }
    assert_eq!(got.len(), 7, "{got:#?}");
}

#[test]
fn a_dt_without_processes_exports_nothing() {
    let got = found(
        r#"{"id":"e","external":{"exports":["y"]}}"#,
        &HashMap::new(),
    );
    assert_eq!(
        got,
        ["external.exports[0]: no role of DT \"e\" publishes an output \"y\" (it declares none)"]
    );
}

#[test]
fn inputs_read_any_output_of_a_dt_in_the_same_tree() {
    let tree = |source: &str| {
        format!(
            r#"{{"id":"plant","children":[{},{}]}}"#,
            doubler_dt("src", "{}"),
            reader(source, None)
        )
    };
    assert_eq!(
        found(&tree("dtaas.v1.dt.src.out.y"), &HashMap::new()),
        Vec::<String>::new()
    );
    assert_eq!(
        found(&tree("dtaas.v1.dt.src.out.q"), &HashMap::new()),
        ["children[1].assets[0].inputs.x: DT \"src\" of this configuration publishes no output \"q\" (there are: y)"]
    );
}

/// A registered DT of `owner` publishing `y` (a number), exporting `exports`.
fn registered(owner: &str, exports: &[&str], recorded: bool) -> DtState {
    let mut dt: DtState = decode(
        None,
        format!(
            r#"{{"id":"src","owner":"{owner}","state":"executing","config_version":1,
                "config":{},"updated_at":0}}"#,
            doubler_dt("src", "{}")
        )
        .as_bytes(),
    )
    .unwrap();
    dt.config.external.exports = exports.iter().map(|e| (*e).to_owned()).collect();
    dt.outputs = recorded.then(|| {
        BTreeMap::from([
            ("y".to_owned(), ValueType::Number),
            ("secret".to_owned(), ValueType::Number),
        ])
    });
    dt
}

fn seen_by(dt: &DtState, user: &str) -> HashMap<String, Peer> {
    HashMap::from([(dt.id.clone(), Peer::of(dt, user))])
}

#[test]
fn the_callers_own_dts_may_be_read_without_exports() {
    let mine = seen_by(&registered("alice", &[], true), "alice");
    assert_eq!(
        found(&reader("dtaas.v1.dt.src.out.secret", None), &mine),
        Vec::<String>::new()
    );
    assert_eq!(
        found(&reader("dtaas.v1.dt.src.out.q", None), &mine),
        ["assets[0].inputs.x: your DT \"src\" publishes no output \"q\" (there are: secret, y)"]
    );
    // A number into a bool input is refused across DTs as within one.
    assert!(has(
        &found(
            &reader("dtaas.v1.dt.src.out.y", Some("dtaas.v1.dt.src.out.y")),
            &mine
        ),
        "assets[1].inputs.on: output dtaas.v1.dt.src.out.y is number but input on takes bool"
    ));
    // An entry from before outputs were recorded: accepted.
    let old = seen_by(&registered("alice", &[], false), "alice");
    assert_eq!(
        found(&reader("dtaas.v1.dt.src.out.anything", None), &old),
        Vec::<String>::new()
    );
}

#[test]
fn another_users_dt_is_read_only_through_its_exports_and_reveals_nothing_else() {
    let exported = seen_by(&registered("alice", &["y"], true), "bob");
    assert_eq!(
        found(&reader("dtaas.v1.dt.src.out.y", None), &exported),
        Vec::<String>::new()
    );
    assert_eq!(
        found(&reader("dtaas.v1.dt.src.out.secret", None), &exported),
        ["assets[0].inputs.x: no DT \"src\" of yours, and no DT exports dtaas.v1.dt.src.out.secret (DT src exports: y)"]
    );
    // Not exporting anything reads exactly like not existing.
    let private = seen_by(&registered("alice", &[], true), "bob");
    let absent = HashMap::new();
    let source = reader("dtaas.v1.dt.src.out.secret", None);
    let refusal = [
        "assets[0].inputs.x: no DT \"src\" of yours, and no DT exports dtaas.v1.dt.src.out.secret",
    ];
    assert_eq!(found(&source, &private), refusal);
    assert_eq!(found(&source, &absent), refusal);
    // An entry from before outputs were recorded: its exports still decide.
    let old = seen_by(&registered("alice", &["y"], false), "bob");
    assert_eq!(
        found(&reader("dtaas.v1.dt.src.out.y", None), &old),
        Vec::<String>::new()
    );
    assert_eq!(found(&source, &old).len(), 1);
}
