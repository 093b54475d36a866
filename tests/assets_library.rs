//! The asset library against a real nats-server: visibility between two users and
//! `admin`, share and unshare, versions and `owner/name@version`, concurrent puts of
//! one version, deletion refused while a DT uses a version, every bad input answered
//! and the library unchanged.

mod assets_common;

use assets_common::{code_of, put, Library, T};
use dtaas_schemas::asset_api::{
    self as api, DeleteReply, FetchReply, FetchRequest, GetReply, ListReply, ListRequest,
    NameRequest, ShareReply,
};
use dtaas_schemas::names;
use dtaas_schemas::ErrorCode;
use serde_json::{json, Value};
use tokio::time::timeout;

async fn get(
    client: &dtaas_assets::client::AssetClient,
    name: &str,
) -> Result<GetReply, dtaas_assets::client::ClientError> {
    timeout(
        T,
        client.call(api::VERB_GET, &NameRequest { name: name.into() }),
    )
    .await
    .unwrap()
}

async fn list(client: &dtaas_assets::client::AssetClient, req: ListRequest) -> Vec<String> {
    let reply: ListReply = timeout(T, client.call(api::VERB_LIST, &req))
        .await
        .unwrap()
        .unwrap();
    reply
        .assets
        .iter()
        .map(|a| format!("{}/{}@{}", a.owner, a.name, a.version))
        .collect()
}

async fn fetch_all(client: &dtaas_assets::client::AssetClient, name: &str, path: &str) -> Vec<u8> {
    let req = FetchRequest {
        name: name.into(),
        path: path.into(),
        offset: 0,
        length: None,
    };
    let reply: FetchReply = timeout(T, client.call(api::VERB_FETCH, &req))
        .await
        .unwrap()
        .unwrap();
    assert!(reply.eof);
    reply.data.0
}

#[tokio::test(flavor = "multi_thread")]
async fn visibility_sharing_and_versions() {
    let lib = Library::start("").await;
    let alice = lib.client("alice").await;
    let bob = lib.client("bob").await;
    let admin = lib.client("admin").await;

    let v1 = put(
        &alice,
        "pid",
        "function",
        &[("pid.py", b"kp = 1", 0o755)],
        None,
    )
    .await
    .unwrap();
    assert!(v1.created);
    assert_eq!(v1.asset.address(), "alice/pid@1");
    let v2 = put(
        &alice,
        "pid",
        "function",
        &[("pid.py", b"kp = 2", 0o755)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(v2.asset.address(), "alice/pid@2");
    // The same content again is the same version.
    let again = put(
        &alice,
        "pid",
        "function",
        &[("pid.py", b"kp = 2", 0o755)],
        None,
    )
    .await
    .unwrap();
    assert!(!again.created);
    assert_eq!(again.asset.version, 2);
    put(&bob, "notes", "data", &[("n.txt", b"bob's", 0o644)], None)
        .await
        .unwrap();

    // Private: bob cannot see alice's asset, exactly as if it did not exist.
    let (code, hidden) = code_of(get(&bob, "alice/pid").await);
    assert_eq!(code, ErrorCode::NotFound);
    let (_, absent) = code_of(get(&bob, "alice/nothing").await);
    assert_eq!(
        hidden.replace("alice/pid", "X"),
        absent.replace("alice/nothing", "X")
    );
    assert_eq!(
        code_of(get(&bob, "pid").await).0,
        ErrorCode::NotFound,
        "bare name = bob's own"
    );
    assert_eq!(list(&bob, ListRequest::default()).await, ["bob/notes@1"]);
    assert!(list(
        &bob,
        ListRequest {
            owner: Some("alice".into()),
            ..Default::default()
        }
    )
    .await
    .is_empty());
    // admin sees everything.
    assert_eq!(get(&admin, "alice/pid@1").await.unwrap().asset.version, 1);
    assert_eq!(
        list(
            &admin,
            ListRequest {
                owner: Some("alice".into()),
                ..Default::default()
            }
        )
        .await,
        ["alice/pid@2"]
    );
    // Addresses: latest, pinned, own bare name.
    let latest = get(&alice, "pid").await.unwrap();
    assert_eq!(
        (latest.asset.version, latest.versions.clone()),
        (2, vec![1, 2])
    );
    assert_eq!(fetch_all(&alice, "alice/pid@1", "pid.py").await, b"kp = 1");
    assert_eq!(fetch_all(&alice, "pid", "pid.py").await, b"kp = 2");
    let (code, message) = code_of(get(&alice, "pid@3").await);
    assert_eq!(code, ErrorCode::NotFound);
    assert!(message.contains("versions: 1, 2"), "{message}");

    // Sharing makes every version visible; only the owner may share.
    let (code, _) = code_of(
        timeout(
            T,
            bob.call::<_, ShareReply>(
                api::VERB_SHARE,
                &NameRequest {
                    name: "alice/pid".into(),
                },
            ),
        )
        .await
        .unwrap(),
    );
    assert_eq!(code, ErrorCode::NotFound, "bob cannot even see it yet");
    let shared: ShareReply = timeout(
        T,
        alice.call(api::VERB_SHARE, &NameRequest { name: "pid".into() }),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(shared.asset.shared);
    assert_eq!(fetch_all(&bob, "alice/pid@1", "pid.py").await, b"kp = 1");
    assert!(get(&bob, "alice/pid").await.unwrap().asset.shared);
    assert_eq!(
        list(&bob, ListRequest::default()).await,
        ["alice/pid@2", "bob/notes@1"]
    );
    assert_eq!(
        list(
            &bob,
            ListRequest {
                shared: Some(true),
                kind: Some("function".parse().unwrap()),
                ..Default::default()
            }
        )
        .await,
        ["alice/pid@2"]
    );
    assert_eq!(
        list(
            &bob,
            ListRequest {
                text: Some("NOTES".into()),
                ..Default::default()
            }
        )
        .await,
        ["bob/notes@1"]
    );
    assert_eq!(
        list(
            &bob,
            ListRequest {
                tag: Some("none".into()),
                ..Default::default()
            }
        )
        .await,
        Vec::<String>::new()
    );
    let (code, _) = code_of(
        timeout(
            T,
            bob.call::<_, ShareReply>(
                api::VERB_UNSHARE,
                &NameRequest {
                    name: "alice/pid".into(),
                },
            ),
        )
        .await
        .unwrap(),
    );
    assert_eq!(code, ErrorCode::Forbidden);
    let (code, _) = code_of(put(&bob, "alice/pid", "function", &[("x", b"x", 0o644)], None).await);
    assert_eq!(code, ErrorCode::Forbidden);
    // Unshared again: gone for bob.
    let _: ShareReply = timeout(
        T,
        alice.call(api::VERB_UNSHARE, &NameRequest { name: "pid".into() }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        code_of(get(&bob, "alice/pid@1").await).0,
        ErrorCode::NotFound
    );
    assert_eq!(list(&bob, ListRequest::default()).await, ["bob/notes@1"]);

    // By hand with JSON, as with the nats CLI.
    let reply = lib.raw("alice", "get", r#"{"name":"alice/pid@1"}"#).await;
    assert_eq!(reply["asset"]["files"][0]["mode"], 0o755);
    let reply = lib
        .raw("alice", "fetch", r#"{"name":"pid@1","path":"pid.py"}"#)
        .await;
    assert_eq!(reply["data"], "a3AgPSAx", "base64 of `kp = 1`");
    lib.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_puts_of_one_new_version_one_wins() {
    let lib = Library::start("").await;
    for round in 0..5 {
        let (a, b) = (lib.client("alice").await, lib.client("alice").await);
        let name = format!("race{round}");
        let (ra, rb) = tokio::join!(
            put(&a, &name, "model", &[("m", b"first", 0o644)], Some(1)),
            put(&b, &name, "model", &[("m", b"second", 0o644)], Some(1)),
        );
        let outcomes = [ra, rb];
        let wins: Vec<_> = outcomes.iter().filter(|r| r.is_ok()).collect();
        assert_eq!(wins.len(), 1, "round {round}: {outcomes:?}");
        let loser = outcomes.into_iter().find(|r| r.is_err()).unwrap();
        let (code, message) = code_of(loser);
        assert_eq!(code, ErrorCode::Conflict, "{message}");
        let stored = get(&a, &name).await.unwrap();
        assert_eq!(stored.versions, [1]);
    }
    lib.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_is_refused_while_a_dt_uses_the_version() {
    let lib = Library::start("").await;
    let alice = lib.client("alice").await;
    put(&alice, "pid", "function", &[("pid.py", b"1", 0o644)], None)
        .await
        .unwrap();
    put(&alice, "pid", "function", &[("pid.py", b"2", 0o644)], None)
        .await
        .unwrap();
    let dts = lib.ctx.js.get_key_value(names::KV_DTS).await.unwrap();
    let state = json!({"id": "inc1", "owner": "alice", "state": "executing", "config_version": 1,
        "config": {"id": "inc1"}, "resolved_assets": ["alice/pid@1"], "updated_at": 1});
    timeout(T, dts.put("inc1", state.to_string().into()))
        .await
        .unwrap()
        .unwrap();
    let delete = |name: &str| {
        let req = NameRequest { name: name.into() };
        let alice = alice.clone();
        async move {
            timeout(T, alice.call::<_, DeleteReply>(api::VERB_DELETE, &req))
                .await
                .unwrap()
        }
    };
    let (code, message) = code_of(delete("pid").await);
    assert_eq!(code, ErrorCode::Conflict);
    assert!(
        message.contains("inc1") && message.contains("alice/pid@1"),
        "{message}"
    );
    assert_eq!(code_of(delete("pid@1").await).0, ErrorCode::Conflict);
    let bob = lib.client("bob").await;
    let (code, _) = code_of(
        timeout(
            T,
            bob.call::<_, DeleteReply>(
                api::VERB_DELETE,
                &NameRequest {
                    name: "alice/pid@2".into(),
                },
            ),
        )
        .await
        .unwrap(),
    );
    assert_eq!(code, ErrorCode::NotFound);
    assert_eq!(delete("pid@2").await.unwrap().deleted, ["alice/pid@2"]);
    assert_eq!(get(&alice, "pid").await.unwrap().versions, [1]);
    timeout(T, dts.delete("inc1")).await.unwrap().unwrap();
    // A DT of another user (of a shared version) blocks the delete without being named.
    let carols = json!({"id": "carols-plan", "owner": "carol", "state": "created",
        "config_version": 1, "config": {"id": "carols-plan"},
        "resolved_assets": ["alice/pid@1"], "updated_at": 1});
    timeout(T, dts.put("carols-plan", carols.to_string().into()))
        .await
        .unwrap()
        .unwrap();
    let (code, message) = code_of(delete("pid").await);
    assert_eq!(code, ErrorCode::Conflict);
    assert!(
        message.contains("another user") && !message.contains("carols-plan"),
        "{message}"
    );
    timeout(T, dts.delete("carols-plan"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delete("pid").await.unwrap().deleted, ["alice/pid@1"]);
    assert_eq!(code_of(get(&alice, "pid").await).0, ErrorCode::NotFound);
    // Numbers are never reused: the next version after deleting 1 and 2 is 3.
    let next = put(&alice, "pid", "function", &[("pid.py", b"3", 0o644)], None)
        .await
        .unwrap();
    assert_eq!(next.asset.version, 3);
    lib.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_answered_and_changes_nothing() {
    let lib = Library::start("max_file_size = 1000000").await;
    let alice = lib.client("alice").await;
    put(
        &alice,
        "pid",
        "function",
        &[("pid.py", b"kp = 1", 0o644)],
        None,
    )
    .await
    .unwrap();
    put(
        &lib.client("bob").await,
        "secret",
        "data",
        &[("s", b"s", 0o600)],
        None,
    )
    .await
    .unwrap();
    let uploaded = alice
        .upload_file(
            &{
                let p = std::env::temp_dir().join(format!("assets-bad-{}", std::process::id()));
                std::fs::write(&p, b"content").unwrap();
                p
            },
            "f",
            0o644,
            &|_| {},
        )
        .await
        .unwrap();
    let sha = uploaded.sha256.clone();
    let before = lib.snapshot().await;
    let file = |path: &str| json!({"path": path, "size": 7, "sha256": sha});
    let cases: Vec<(&str, Value, ErrorCode, &str)> = vec![
        (
            "put",
            json!({"name": "x", "kind": "gadget"}),
            ErrorCode::BadRequest,
            "gadget",
        ),
        (
            "put",
            json!({"kind": "data"}),
            ErrorCode::BadRequest,
            "name",
        ),
        (
            "put",
            json!({"name": "p.d", "kind": "data"}),
            ErrorCode::BadRequest,
            "asset name",
        ),
        (
            "put",
            json!({"name": "", "kind": "data"}),
            ErrorCode::BadRequest,
            "empty",
        ),
        (
            "put",
            json!({"name": "x", "kind": "data", "version": 0}),
            ErrorCode::BadRequest,
            "version",
        ),
        (
            "put",
            json!({"name": "pid", "kind": "function", "version": 1, "files": [file("other.py")]}),
            ErrorCode::Conflict,
            "other content",
        ),
        (
            "put",
            json!({"name": "pid", "kind": "function", "version": 7}),
            ErrorCode::BadRequest,
            "next version",
        ),
        (
            "put",
            json!({"name": "x", "kind": "data", "files": [file("../x")]}),
            ErrorCode::BadRequest,
            "..",
        ),
        (
            "put",
            json!({"name": "x", "kind": "data", "files": [file("/etc/x")]}),
            ErrorCode::BadRequest,
            "absolute",
        ),
        (
            "put",
            json!({"name": "x", "kind": "data", "files": [file("a\u{0}b")]}),
            ErrorCode::BadRequest,
            "NUL",
        ),
        (
            "put",
            json!({"name": "x", "kind": "data", "files": [file("a\\b")]}),
            ErrorCode::BadRequest,
            "backslash",
        ),
        (
            "put",
            json!({"name": "x", "kind": "data", "files": [{"path": "f", "size": 8, "sha256": sha}]}),
            ErrorCode::BadRequest,
            "not 8",
        ),
        (
            "put",
            json!({"name": "x", "kind": "data", "files": [{"path": "f", "size": 1, "sha256": "0".repeat(64)}]}),
            ErrorCode::BadRequest,
            "upload",
        ),
        (
            "put",
            json!({"name": "x", "kind": "data", "files": [{"path": "f", "size": 2000000, "sha256": sha}]}),
            ErrorCode::BadRequest,
            "up to 1000000",
        ),
        (
            "upload",
            json!({"sha256": "0".repeat(64), "size": 3, "data": "YWJj"}),
            ErrorCode::BadRequest,
            "checksum mismatch",
        ),
        (
            "upload",
            json!({"sha256": "0".repeat(64), "size": 2000000, "data": "YWJj"}),
            ErrorCode::BadRequest,
            "up to 1000000",
        ),
        (
            "upload",
            json!({"sha256": "0".repeat(64), "size": 2, "data": "YWJj"}),
            ErrorCode::BadRequest,
            "past the file's size",
        ),
        (
            "upload",
            json!({"sha256": "XYZ", "size": 3, "data": "YWJj"}),
            ErrorCode::BadRequest,
            "sha256",
        ),
        (
            "get",
            json!({"name": "bob/secret"}),
            ErrorCode::NotFound,
            "bob/secret",
        ),
        (
            "get",
            json!({"name": "pid@x"}),
            ErrorCode::BadRequest,
            "version",
        ),
        (
            "get",
            json!({"name": "pid@0"}),
            ErrorCode::BadRequest,
            "version",
        ),
        ("get", json!({}), ErrorCode::BadRequest, "name"),
        (
            "fetch",
            json!({"name": "bob/secret", "path": "s"}),
            ErrorCode::NotFound,
            "bob/secret",
        ),
        (
            "fetch",
            json!({"name": "pid", "path": "nope"}),
            ErrorCode::NotFound,
            "nope",
        ),
        (
            "fetch",
            json!({"name": "pid", "path": "pid.py", "offset": 99}),
            ErrorCode::BadRequest,
            "offset",
        ),
        (
            "delete",
            json!({"name": "bob/secret"}),
            ErrorCode::NotFound,
            "bob/secret",
        ),
        (
            "share",
            json!({"name": "bob/secret"}),
            ErrorCode::NotFound,
            "bob/secret",
        ),
        (
            "share",
            json!({"name": "pid@1"}),
            ErrorCode::BadRequest,
            "every version",
        ),
        (
            "list",
            json!({"kind": "gadget"}),
            ErrorCode::BadRequest,
            "gadget",
        ),
    ];
    for (verb, body, code, fragment) in cases {
        let reply = lib.raw("alice", verb, &body.to_string()).await;
        let wanted = serde_json::to_value(code).unwrap();
        assert_eq!(reply["error"]["code"], wanted, "{verb} {body}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(fragment), "{verb} {body}: {message}");
    }
    // A checksum mismatch over several chunks: the last chunk finds it.
    let wrong = "1".repeat(64);
    let first = lib
        .raw(
            "alice",
            "upload",
            &json!({"sha256": wrong, "size": 6, "offset": 0, "data": "YWJj"}).to_string(),
        )
        .await;
    assert_eq!(first["complete"], false, "{first}");
    let last = lib
        .raw(
            "alice",
            "upload",
            &json!({"sha256": wrong, "size": 6, "offset": 3, "data": "ZGVm"}).to_string(),
        )
        .await;
    assert_eq!(last["error"]["code"], "bad_request", "{last}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch"),
        "{last}"
    );
    assert_eq!(lib.snapshot().await, before, "the library is unchanged");
    lib.stop().await;
}
