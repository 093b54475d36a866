//! Helpers shared by the asset library's integration tests: a real nats-server, the
//! assets worker in this process, clients per user, raw JSON requests and a snapshot
//! of everything the library stores.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dtaas_assets::client::{AssetClient, ClientError};
use dtaas_runtime::{Config, Context};
use dtaas_schemas::asset_api::{self as api, PutReply, PutRequest};
use dtaas_schemas::names;
use dtaas_schemas::{subject, ErrorCode};
use dtaas_test_harness::NatsServer;
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// A generous bound for every await: the machine is small and shared.
pub const T: Duration = Duration::from_secs(120);

/// A nats-server with the assets worker running against it.
pub struct Library {
    pub nats: NatsServer,
    pub ctx: Context,
    worker: Option<tokio::task::JoinHandle<Result<(), dtaas_assets::RunError>>>,
}

impl Library {
    /// Starts nats-server and the worker; `assets_toml` is the `[assets]` table's body.
    pub async fn start(assets_toml: &str) -> Self {
        let nats = NatsServer::start().expect("nats-server starts");
        let text = format!("nats_url = \"{}\"\n[assets]\n{assets_toml}\n", nats.url());
        let config = Config::from_toml(&text, "test", &|_| None).expect("config");
        let ctx = timeout(
            T,
            Context::connect(Arc::new(config), "assets", CancellationToken::new()),
        )
        .await
        .expect("connect in time")
        .expect("connect");
        let worker = tokio::spawn(dtaas_assets::run(ctx.clone()));
        let library = Self {
            nats,
            ctx,
            worker: Some(worker),
        };
        library.wait_ready().await;
        library
    }

    async fn wait_ready(&self) {
        let probe = async {
            loop {
                let subject = subject::request("probe", api::SERVICE, api::VERB_LIST).unwrap();
                if let Ok(reply) = self.ctx.nats.request(subject, "{}".into()).await {
                    if serde_json::from_slice::<Value>(&reply.payload)
                        .is_ok_and(|v| v["assets"].is_array())
                    {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        timeout(T, probe).await.expect("the assets worker answers");
    }

    /// A client acting as `user`, on its own connection.
    pub async fn client(&self, user: &str) -> AssetClient {
        let nats = timeout(T, async_nats::connect(self.nats.url()))
            .await
            .unwrap()
            .unwrap();
        AssetClient::new(nats, user)
    }

    /// A request with a JSON body, as someone would type it into `nats req`.
    pub async fn raw(&self, user: &str, verb: &str, body: &str) -> Value {
        let subject = subject::request(user, api::SERVICE, verb).unwrap();
        let reply = timeout(T, self.ctx.nats.request(subject, body.to_owned().into()))
            .await
            .unwrap()
            .unwrap();
        serde_json::from_slice(&reply.payload).expect("JSON reply to a JSON request")
    }

    /// Every KV entry (key → value) and every object name (contents and upload parts).
    pub async fn snapshot(&self) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
        let kv = self.ctx.js.get_key_value(names::KV_ASSETS).await.unwrap();
        let keys: Vec<String> = timeout(T, async {
            kv.keys().await.unwrap().try_collect().await.unwrap()
        })
        .await
        .unwrap();
        let mut entries = BTreeMap::new();
        for key in keys {
            if let Some(value) = timeout(T, kv.get(key.clone())).await.unwrap().unwrap() {
                entries.insert(key, value.to_vec());
            }
        }
        let store = self
            .ctx
            .js
            .get_object_store(names::OBJECT_ASSETS)
            .await
            .unwrap();
        let mut objects: Vec<String> = timeout(T, async {
            store
                .list()
                .await
                .unwrap()
                .filter_map(|o| async move { o.ok().filter(|o| !o.deleted).map(|o| o.name) })
                .collect()
                .await
        })
        .await
        .unwrap();
        objects.sort();
        (entries, objects)
    }

    pub async fn stop(mut self) {
        self.ctx.shutdown.cancel();
        if let Some(worker) = self.worker.take() {
            timeout(T, worker).await.unwrap().unwrap().unwrap();
        }
    }
}

/// Uploads `files` (path, content, mode) and puts them as `name` of `kind`.
pub async fn put(
    client: &AssetClient,
    name: &str,
    kind: &str,
    files: &[(&str, &[u8], u32)],
    version: Option<u64>,
) -> Result<PutReply, ClientError> {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = Vec::new();
    for (path, content, mode) in files {
        let local = dir.path().join(path.replace('/', "_"));
        std::fs::write(&local, content).unwrap();
        let file = timeout(T, client.upload_file(&local, path, *mode, &|_| {}))
            .await
            .unwrap()?;
        entries.push(file);
    }
    let req = PutRequest {
        name: name.into(),
        version,
        kind: kind.parse().unwrap(),
        description: format!("{name} for tests"),
        tags: vec!["test".into()],
        files: entries,
        interface: Default::default(),
        run: None,
        original_name: None,
    };
    timeout(T, client.call(api::VERB_PUT, &req)).await.unwrap()
}

/// The error code of a failed call; panics when it succeeded.
pub fn code_of<R: std::fmt::Debug>(result: Result<R, ClientError>) -> (ErrorCode, String) {
    match result {
        Err(ClientError::Reply(reply)) => (reply.error.code, reply.error.message),
        other => panic!("expected an error reply, got {other:?}"),
    }
}
