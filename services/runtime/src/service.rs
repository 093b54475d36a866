//! Request endpoints on the NATS service API, so `nats micro ls` lists every worker.
//!
//! A worker registers as `dtaas-<worker>`; each endpoint listens on
//! `dtaas.v1.*.<service>.<verb>` in a queue group, so any number of instances share the
//! load. Bodies are JSON or MessagePack; the reply uses the request's encoding. Errors
//! are `{"error":{"code":…,"message":…}}` bodies with the `Nats-Service-Error` headers.

use std::future::Future;
use std::sync::Arc;

use async_nats::service::{self, ServiceExt};
use async_nats::HeaderMap;
use bytes::Bytes;
use dtaas_schemas::codec::Encoding;
use dtaas_schemas::excerpt;
use dtaas_schemas::names::header;
use dtaas_schemas::{subject, ErrorCode, ErrorReply};
use futures::StreamExt;
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::Context;

/// How many requests of one endpoint are handled at once; more wait in the subscription.
const CONCURRENT_REQUESTS: usize = 64;
/// Room kept in a reply for its headers and the protocol around them.
const REPLY_OVERHEAD: usize = 1024;
/// The longest error message sent; longer ones (built from huge input) are cut.
const MAX_ERROR_MESSAGE: usize = 1024;

/// Who asked, taken from the request subject.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub user: String,
    pub subject: String,
}

/// The service API did not take a registration or an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot register dtaas-{worker} with the NATS service API: {source}")]
    Register {
        worker: String,
        source: async_nats::Error,
    },
    /// The service or verb is no valid subject token.
    #[error(transparent)]
    Subject(#[from] subject::SubjectError),
    #[error("cannot serve {subject}: {source}")]
    Endpoint {
        subject: String,
        source: async_nats::Error,
    },
}

/// Statistics a worker adds to `$SRV.STATS` (the `data` of each endpoint).
pub type StatsFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// A worker's registration with the NATS service API and its endpoint tasks.
pub struct WorkerService {
    ctx: Context,
    service: service::Service,
    tasks: JoinSet<()>,
}

impl WorkerService {
    /// Registers `dtaas-<worker>` with the service API.
    pub async fn start(
        ctx: &Context,
        worker: &str,
        description: &str,
        stats: Option<StatsFn>,
    ) -> Result<Self, ServiceError> {
        let mut builder = ctx.nats.service_builder().description(description);
        if let Some(stats) = stats {
            builder = builder.stats_handler(move |_endpoint, _stats| stats());
        }
        let service = builder
            .start(format!("dtaas-{worker}"), env!("CARGO_PKG_VERSION"))
            .await
            .map_err(|source| ServiceError::Register {
                worker: worker.to_owned(),
                source,
            })?;
        Ok(Self {
            ctx: ctx.clone(),
            service,
            tasks: JoinSet::new(),
        })
    }

    /// Serves `dtaas.v1.<user>.<service_name>.<verb>` with `handler`.
    pub async fn endpoint<Req, Resp, F, Fut>(
        &mut self,
        service_name: &str,
        verb: &str,
        handler: F,
    ) -> Result<(), ServiceError>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(RequestInfo, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ErrorReply>> + Send + 'static,
    {
        let subject = subject::request_endpoint(service_name, verb)?;
        self.serve(format!("{service_name}-{verb}"), subject, true, handler)
            .await
    }

    /// Serves `dtaas.v1.<user>.<service_name>.<verb>` with `handler`, which gets its
    /// own clone of `state` (the worker's store, configuration, …) with each request:
    /// `service.endpoint_with(&queries, SERVICE, VERB_TREE, |q, _, req| async move { q.tree(req).await })`.
    pub async fn endpoint_with<St, Req, Resp, F, Fut>(
        &mut self,
        state: &St,
        service_name: &str,
        verb: &str,
        handler: F,
    ) -> Result<(), ServiceError>
    where
        St: Clone + Send + Sync + 'static,
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(St, RequestInfo, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ErrorReply>> + Send + 'static,
    {
        self.endpoint(service_name, verb, with_state(state, handler))
            .await
    }

    /// Serves a subject that is not a user's request (for example an exec node's own
    /// `dtaas.v1.exec.<node>.<verb>`); the handler's `RequestInfo::user` is empty.
    pub async fn endpoint_at<Req, Resp, F, Fut>(
        &mut self,
        name: &str,
        subject: String,
        handler: F,
    ) -> Result<(), ServiceError>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(RequestInfo, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ErrorReply>> + Send + 'static,
    {
        self.serve(name.to_owned(), subject, false, handler).await
    }

    /// [`Self::endpoint_at`] with a clone of `state` per request, as [`Self::endpoint_with`].
    pub async fn endpoint_at_with<St, Req, Resp, F, Fut>(
        &mut self,
        state: &St,
        name: &str,
        subject: String,
        handler: F,
    ) -> Result<(), ServiceError>
    where
        St: Clone + Send + Sync + 'static,
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(St, RequestInfo, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ErrorReply>> + Send + 'static,
    {
        self.endpoint_at(name, subject, with_state(state, handler))
            .await
    }

    async fn serve<Req, Resp, F, Fut>(
        &mut self,
        name: String,
        subject: String,
        user_request: bool,
        handler: F,
    ) -> Result<(), ServiceError>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(RequestInfo, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ErrorReply>> + Send + 'static,
    {
        let mut endpoint = self
            .service
            .endpoint_builder()
            .name(name)
            .add(subject.as_str())
            .await
            .map_err(|source| ServiceError::Endpoint {
                subject: subject.clone(),
                source,
            })?;
        let handler = Arc::new(handler);
        let shutdown = self.ctx.shutdown.clone();
        let nats = self.ctx.nats.clone();
        self.tasks.spawn(async move {
            let permits = Arc::new(Semaphore::new(CONCURRENT_REQUESTS));
            loop {
                let request = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    request = endpoint.next() => match request {
                        Some(request) => request,
                        None => break,
                    },
                };
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                let handler = handler.clone();
                let max_payload = nats.server_info().max_payload;
                tokio::spawn(async move {
                    let (body, headers) =
                        handle(&request, user_request, handler.as_ref(), max_payload).await;
                    if let Err(error) = request.respond_with_headers(Ok(body), headers).await {
                        tracing::warn!(subject = %request.message.subject, %error, "cannot send reply");
                    }
                    drop(permit);
                });
            }
            let _ = endpoint.stop().await;
        });
        Ok(())
    }

    /// Runs until shutdown, then stops answering.
    pub async fn run(mut self) -> Result<(), ServiceError> {
        while self.tasks.join_next().await.is_some() {}
        self.service.stop().await.ok();
        Ok(())
    }
}

/// `handler` with its own clone of `state` for each request (`endpoint_with`,
/// `endpoint_at_with`).
fn with_state<St, Req, Fut, F>(state: &St, handler: F) -> impl Fn(RequestInfo, Req) -> Fut
where
    St: Clone,
    F: Fn(St, RequestInfo, Req) -> Fut,
{
    let state = state.clone();
    move |info, request| handler(state.clone(), info, request)
}

/// Decodes, calls `handler` and encodes its reply, or an error reply: also when the
/// reply would not fit in `max_payload` (the server's), which would otherwise never
/// reach the caller.
async fn handle<Req, Resp, F, Fut>(
    request: &service::Request,
    user_request: bool,
    handler: &F,
    max_payload: usize,
) -> (Bytes, HeaderMap)
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: Fn(RequestInfo, Req) -> Fut,
    Fut: Future<Output = Result<Resp, ErrorReply>>,
{
    let message = &request.message;
    let content_type = crate::headers::content_type(message.headers.as_ref());
    // An empty body stands for `{}`, so `nats req <subject> ''` works for requests
    // whose fields are all optional.
    let empty = message.payload.iter().all(u8::is_ascii_whitespace);
    let (encoding, body): (_, &[u8]) = if empty {
        (Encoding::Json, b"{}")
    } else {
        match Encoding::detect(content_type, &message.payload) {
            Ok(encoding) => (encoding, &message.payload),
            Err(e) => {
                return error_reply(
                    Encoding::Json,
                    ErrorReply::new(ErrorCode::BadRequest, e.to_string()),
                )
            }
        }
    };
    let info = match subject::parse_request(&message.subject) {
        _ if !user_request => RequestInfo {
            user: String::new(),
            subject: message.subject.to_string(),
        },
        Ok(parsed) => RequestInfo {
            user: parsed.user.to_owned(),
            subject: message.subject.to_string(),
        },
        Err(e) => {
            return error_reply(
                encoding,
                ErrorReply::new(ErrorCode::BadRequest, e.to_string()),
            )
        }
    };
    let parsed: Req = match encoding.decode(body) {
        Ok(parsed) => parsed,
        Err(e) => {
            let message = format!("invalid request body for {}: {e}", info.subject);
            return error_reply(encoding, ErrorReply::new(ErrorCode::BadRequest, message));
        }
    };
    let result = handler(info, parsed).await;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, encoding.content_type());
    match result.map(|reply| encoding.encode(&reply)) {
        Ok(Ok(body)) if body.len() + REPLY_OVERHEAD > max_payload => error_reply(
            encoding,
            ErrorReply::new(ErrorCode::BadRequest, too_large(body.len(), max_payload)),
        ),
        Ok(Ok(body)) => (body, headers),
        Ok(Err(e)) => error_reply(
            encoding,
            ErrorReply::new(ErrorCode::Internal, format!("cannot encode reply: {e}")),
        ),
        Err(reply) => error_reply(encoding, reply),
    }
}

/// Why a reply of `size` bytes is not sent, and how to ask for less.
fn too_large(size: usize, max_payload: usize) -> String {
    format!(
        "the reply would have {size} bytes, more than the NATS server's max payload of \
         {max_payload} bytes; ask for less: a smaller `limit`, a narrower range \
         (`from`/`to`), fewer `fields`, or page through it; MessagePack replies \
         (Content-Type: application/msgpack) are also smaller than JSON"
    )
}

fn error_reply(encoding: Encoding, mut reply: ErrorReply) -> (Bytes, HeaderMap) {
    // The last guard against an error that quotes huge input: it could not be sent.
    reply.error.message = excerpt::cap(&reply.error.message, MAX_ERROR_MESSAGE);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, encoding.content_type());
    headers.insert(
        header::SERVICE_ERROR,
        reply.error.message.replace(['\r', '\n'], " ").as_str(),
    );
    headers.insert(
        header::SERVICE_ERROR_CODE,
        reply.error.code.status().to_string().as_str(),
    );
    let body = encoding.encode(&reply).unwrap_or_else(|_| {
        Bytes::from_static(br#"{"error":{"code":"internal","message":"cannot encode error"}}"#)
    });
    (body, headers)
}
