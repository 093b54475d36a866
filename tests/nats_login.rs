//! Connecting workers to NATS as an operator would: several seeds, one of them down;
//! a malformed seed; the deploy's own authorization (user/password, a user's inbox
//! prefix and permissions); a token, an nkey and a JWT credentials file (a server in
//! operator mode, the JWTs signed at test time). No password reaches a log.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::ConnectOptions;
mod worker_support;

use dtaas_runtime::Config;
use dtaas_test_harness::ports::free_port;
use dtaas_test_harness::worker::{spawn_worker, WorkerEnv};
use dtaas_test_harness::{NatsCluster, NatsServer, Process};
use tokio::time::timeout;
use worker_support::wait_for_service;

/// A generous bound for every await: the machine is small and shared.
const WAIT: Duration = Duration::from_secs(60);
const WORKER_PASSWORD: &str = "w0rker-pa55";
const ALICE_PASSWORD: &str = "al1ce-pa55";

fn historian(nats_url: &str, dir: &Path, extra: &[(&str, &str)]) -> Process {
    let env = WorkerEnv {
        nats_url: nats_url.to_owned(),
        mqtt_url: "mqtt://127.0.0.1:1".into(),
        data_dir: dir.to_owned(),
        extra: extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    spawn_worker(Path::new(env!("CARGO_BIN_EXE_dtaas")), "historian", &env).unwrap()
}

#[test]
fn a_malformed_seed_fails_at_once_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut worker = historian(
        "nats://127.0.0.1:4,nats://u:hunter2@127.0.0.1:99999",
        dir.path(),
        // Were the seed retried as unreachable, the worker would wait this long.
        &[("DTAAS_NATS_CONNECT_TIMEOUT", "300s")],
    );
    exits_at_once(
        &mut worker,
        &["2 of 2", "nats://u:***@127.0.0.1:99999"],
        "hunter2",
    );
}

/// `worker` exits with an error containing every one of `expected`, without retrying
/// and without `secret` in its log.
fn exits_at_once(worker: &mut Process, expected: &[&str], secret: &str) {
    let code = worker
        .wait(WAIT)
        .expect("the worker exits without retrying");
    let log = worker.log();
    assert_ne!(code, Some(0), "{log}");
    assert!(
        expected.iter().all(|e| log.contains(e)),
        "{expected:?} in {log}"
    );
    assert!(!log.contains("not reachable"), "not retried: {log}");
    assert!(!log.contains(secret), "no secret in the log: {log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_starts_while_one_seed_is_down() {
    let mut cluster = NatsCluster::start(3).unwrap();
    let seeds = cluster.urls();
    // A deployment that ran before: its streams exist (nats-server 2.10+ places a new
    // R3 stream only with all three peers up).
    let first = timeout(WAIT, async_nats::connect(cluster.nodes[1].url()))
        .await
        .unwrap()
        .unwrap();
    let js = async_nats::jetstream::new(first);
    timeout(WAIT, dtaas_runtime::provision::all(&js, 3))
        .await
        .unwrap()
        .unwrap();
    cluster.nodes[0].kill();
    cluster.wait_for_meta_leader().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let worker = historian(&seeds, dir.path(), &[("DTAAS_REPLICAS", "3")]);
    let client = timeout(WAIT, async_nats::connect(cluster.nodes[1].url()))
        .await
        .unwrap()
        .unwrap();
    wait_for_service(&client, "dtaas-historian", &worker).await;
    let log = worker.log();
    assert!(log.contains("Connected to NATS"), "{log}");
}

fn with_deploy_auth() -> NatsServer {
    NatsServer::options()
        .file("auth.conf", include_str!("../deploy/nats/auth.conf"))
        .config("include auth.conf")
        .env("ALICE_PASSWORD", ALICE_PASSWORD)
        .env("DTAAS_WORKER_PASSWORD", WORKER_PASSWORD)
        .start()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deploy_authorization_admits_workers_and_users() {
    let nats = with_deploy_auth();
    let down = free_port();
    let seeds = format!(
        "nats://dtaas:{WORKER_PASSWORD}@127.0.0.1:{down},nats://dtaas:{WORKER_PASSWORD}@127.0.0.1:{}",
        nats.port
    );
    let dir = tempfile::tempdir().unwrap();
    let worker = historian(&seeds, dir.path(), &[]);

    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = errors.clone();
    let alice = ConnectOptions::with_user_and_password("alice".into(), ALICE_PASSWORD.into())
        .custom_inbox_prefix("_INBOX.alice")
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(event.to_string());
            }
        });
    let alice = timeout(WAIT, alice.connect(nats.url()))
        .await
        .unwrap()
        .unwrap();
    wait_for_worker(&nats, &worker).await;

    let reply = timeout(WAIT, alice.request("dtaas.v1.alice.ts.query", "{}".into()))
        .await
        .expect("alice's request answered in time")
        .expect("alice's request answered on her inbox");
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(body.is_object(), "{body}");

    // The CLI connects through the runtime as DTAAS_USER; its replies must come to the
    // inbox her permissions allow.
    let url = format!("nats://alice:{ALICE_PASSWORD}@127.0.0.1:{}", nats.port);
    let as_alice = Config::from_toml("user = \"alice\"", "test", &|name| {
        (name == "DTAAS_NATS_URL").then(|| url.clone())
    })
    .unwrap();
    let cli = timeout(WAIT, dtaas_runtime::nats::connect(&as_alice, "dtaas-cli"))
        .await
        .unwrap()
        .expect("alice connects through the runtime");
    let reply = timeout(WAIT, cli.request("dtaas.v1.alice.ts.query", "{}".into()))
        .await
        .expect("the runtime client's request answered in time")
        .expect("the runtime client gets its reply on _INBOX.alice");
    assert!(serde_json::from_slice::<serde_json::Value>(&reply.payload).is_ok());

    let refused = timeout(
        Duration::from_secs(5),
        alice.request("dtaas.v1.bob.ts.query", "{}".into()),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a request under another user's name gets no answer"
    );
    let violation = async {
        loop {
            if errors.lock().unwrap().iter().any(|e| {
                e.to_lowercase().contains("permissions violation") && e.contains("dtaas.v1.bob")
            }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    timeout(WAIT, violation)
        .await
        .expect("the server reports the permissions violation");

    for log in [worker.log(), nats.process().log()] {
        assert!(
            !log.contains(WORKER_PASSWORD) && !log.contains(ALICE_PASSWORD),
            "{log}"
        );
    }
    assert!(worker.log().contains("dtaas:***@"), "{}", worker.log());
}

/// The historian's service answers `$SRV.PING` to the worker user.
async fn wait_for_worker(nats: &NatsServer, worker: &Process) {
    let admin = ConnectOptions::with_user_and_password("dtaas".into(), WORKER_PASSWORD.into())
        .connect(nats.url());
    let admin = timeout(WAIT, admin).await.unwrap().unwrap();
    wait_for_service(&admin, "dtaas-historian", worker).await;
}

/// As `deploy/k8s/workers.yaml` logs in: `DTAAS_NATS_USER` and `DTAAS_NATS_PASSWORD`
/// beside seeds without credentials, one of them down.
#[tokio::test(flavor = "multi_thread")]
async fn user_and_password_from_the_environment_with_several_seeds() {
    let nats = with_deploy_auth();
    let seeds = format!("nats://127.0.0.1:{},{}", free_port(), nats.url());
    let dir = tempfile::tempdir().unwrap();
    let worker = historian(
        &seeds,
        dir.path(),
        &[
            ("DTAAS_NATS_USER", "dtaas"),
            ("DTAAS_NATS_PASSWORD", WORKER_PASSWORD),
        ],
    );
    wait_for_worker(&nats, &worker).await;
    let log = worker.log();
    assert!(log.contains("login=user dtaas"), "{log}");
    assert!(!log.contains(WORKER_PASSWORD), "{log}");
}

#[test]
fn a_wrong_password_is_refused_at_once() {
    let nats = with_deploy_auth();
    let dir = tempfile::tempdir().unwrap();
    let mut worker = historian(
        &nats.url(),
        dir.path(),
        &[
            ("DTAAS_NATS_USER", "dtaas"),
            ("DTAAS_NATS_PASSWORD", "wr0ng-pa55"),
            ("DTAAS_NATS_CONNECT_TIMEOUT", "300s"),
        ],
    );
    exits_at_once(
        &mut worker,
        &["refused the login", "user dtaas"],
        "wr0ng-pa55",
    );
}

fn config(env: Vec<(&'static str, String)>) -> Config {
    Config::from_toml("", "test", &move |name| {
        env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn token_and_nkey_logins_with_several_seeds() {
    let down = format!("nats://127.0.0.1:{}", free_port());
    let token = NatsServer::options()
        .config("authorization { token: \"t0ken-s3cret\" }")
        .start()
        .unwrap();
    let seeds = format!("{down},{}", token.url());
    let config = config(vec![
        ("DTAAS_NATS_URL", seeds),
        ("DTAAS_NATS_TOKEN", "t0ken-s3cret".into()),
    ]);
    let client = timeout(WAIT, dtaas_runtime::nats::connect(&config, "test"))
        .await
        .unwrap()
        .expect("the token is accepted");
    timeout(WAIT, client.flush()).await.unwrap().unwrap();

    let key = nkeys::KeyPair::new_user();
    let nkey = NatsServer::options()
        .config(&format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}",
            key.public_key()
        ))
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seed_file = dir.path().join("dtaas.nk");
    std::fs::write(&seed_file, key.seed().unwrap()).unwrap();
    let config = config_with_nkey(&down, &nkey, &seed_file);
    let client = timeout(WAIT, dtaas_runtime::nats::connect(&config, "test"))
        .await
        .unwrap()
        .expect("the nkey is accepted");
    timeout(WAIT, client.flush()).await.unwrap().unwrap();

    let missing = config_with_nkey(&down, &nkey, &dir.path().join("absent.nk"));
    let err = timeout(WAIT, dtaas_runtime::nats::connect(&missing, "test"))
        .await
        .unwrap()
        .expect_err("a missing seed file is an error");
    assert!(err.to_string().contains("absent.nk"), "{err}");
}

fn config_with_nkey(down: &str, nkey: &NatsServer, seed_file: &Path) -> Config {
    config(vec![
        ("DTAAS_NATS_URL", format!("{down},{}", nkey.url())),
        ("DTAAS_NATS_NKEY", seed_file.display().to_string()),
    ])
}

/// A JWT of `claims` (`nats` part) about `subject`, signed by `issuer`, as nsc makes
/// them (ed25519-nkey).
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("{name}-{}", std::process::id()),
        "iat": 1_767_225_600,
        "iss": issuer.public_key(),
        "sub": subject,
        "name": name,
        "nats": nats,
    });
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{body}");
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A server in operator mode (JWTs, memory resolver) with one account that may use
/// JetStream, and a credentials file of a user of that account.
fn with_operator(dir: &Path) -> (NatsServer, std::path::PathBuf) {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let system = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "op",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let unlimited = serde_json::json!({"subs": -1, "data": -1, "payload": -1, "imports": -1,
        "exports": -1, "wildcards": true, "conn": -1, "leaf": -1, "mem_storage": -1,
        "disk_storage": -1, "streams": -1, "consumer": -1});
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "dtaas",
        serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    // JetStream needs the server's system account.
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "worker",
        serde_json::json!({"type": "user", "version": 2, "pub": {}, "sub": {},
            "subs": -1, "data": -1, "payload": -1}),
    );
    let creds = dir.join("worker.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();
    let nats = NatsServer::options()
        .config(&format!(
            "operator: \"{operator_jwt}\"\nresolver: MEMORY\nsystem_account: {sys}\n\
             resolver_preload: {{ {}: \"{account_jwt}\", {sys}: \"{system_jwt}\" }}",
            account.public_key(),
            sys = system.public_key(),
        ))
        .start()
        .expect("nats-server in operator mode");
    (nats, creds)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_credentials_file_logs_in_with_several_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let (nats, creds) = with_operator(dir.path());
    let seeds = format!("nats://127.0.0.1:{},{}", free_port(), nats.url());
    let creds_path = creds.display().to_string();
    let worker = historian(
        &seeds,
        &dir.path().join("data"),
        &[("DTAAS_NATS_CREDS", &creds_path)],
    );
    let client = async_nats::ConnectOptions::with_credentials_file(creds.clone())
        .await
        .unwrap()
        .connect(nats.url());
    let client = timeout(WAIT, client).await.unwrap().unwrap();
    wait_for_service(&client, "dtaas-historian", &worker).await;
    let log = worker.log();
    assert!(log.contains("login=the credentials in"), "{log}");
    // Without the credentials the server refuses the worker at once.
    let mut anonymous = historian(&nats.url(), &dir.path().join("anonymous"), &[]);
    let code = anonymous.wait(WAIT).expect("refused at once");
    assert_ne!(code, Some(0), "{}", anonymous.log());
    assert!(
        anonymous.log().contains("refused the login"),
        "{}",
        anonymous.log()
    );
}
