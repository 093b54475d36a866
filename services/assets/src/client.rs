//! The client side of the asset library, for the CLI and tests: typed requests,
//! chunked uploads and downloads with checksums checked on both ends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::{Client, HeaderMap};
use dtaas_schemas::asset::AssetFile;
use dtaas_schemas::asset_api::{
    self as api, Chunk, FetchReply, FetchRequest, UploadReply, UploadRequest, CHUNK_SIZE,
};
use dtaas_schemas::asset_store::hex;
use dtaas_schemas::codec::{decode, Encoding};
use dtaas_schemas::names::header;
use dtaas_schemas::{subject, ErrorReply};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// A request failed; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The library answered with an error.
    #[error("{}", .0.error.message)]
    Reply(ErrorReply),
    #[error("{0}")]
    Transport(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: downloaded content has sha256 {actual}, not {expected}; fetch it again")]
    Checksum {
        path: String,
        expected: String,
        actual: String,
    },
}

impl ClientError {
    /// The error code of a reply, `None` for local failures.
    pub fn code(&self) -> Option<dtaas_schemas::ErrorCode> {
        match self {
            Self::Reply(reply) => Some(reply.error.code),
            _ => None,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reports bytes done so far for a progress display.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// Talks to `dtaas.v1.<user>.asset.*`.
#[derive(Clone)]
pub struct AssetClient {
    nats: Client,
    user: String,
    timeout: Duration,
}

impl AssetClient {
    pub fn new(nats: Client, user: impl Into<String>) -> Self {
        Self {
            nats,
            user: user.into(),
            timeout: Duration::from_secs(60),
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// One request, MessagePack both ways.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        verb: &str,
        req: &Req,
    ) -> Result<Resp, ClientError> {
        let subject = subject::request(&self.user, api::SERVICE, verb)
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let body = Encoding::MsgPack
            .encode(req)
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, Encoding::MsgPack.content_type());
        let request = async_nats::Request::new()
            .payload(body)
            .headers(headers)
            .timeout(Some(self.timeout));
        let reply = self
            .nats
            .send_request(subject.clone(), request)
            .await
            .map_err(|e| {
                let hint = match e.kind() {
                    async_nats::RequestErrorKind::NoResponders => {
                        "no assets worker answers; start one with `dtaas assets` or `dtaas up`"
                    }
                    async_nats::RequestErrorKind::TimedOut => {
                        "the assets worker did not answer in time; check it is running and retry"
                    }
                    _ => "check DTAAS_NATS_URL and that NATS is running",
                };
                ClientError::Transport(format!("{subject}: {e}; {hint}"))
            })?;
        let content_type = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(header::CONTENT_TYPE))
            .map(|v| v.as_str().to_owned());
        let failed = reply
            .headers
            .as_ref()
            .is_some_and(|h| h.get(header::SERVICE_ERROR_CODE).is_some());
        if failed {
            let error: ErrorReply =
                decode(content_type.as_deref(), &reply.payload).map_err(|e| {
                    ClientError::Transport(format!("{subject}: unreadable error reply: {e}"))
                })?;
            return Err(ClientError::Reply(error));
        }
        decode(content_type.as_deref(), &reply.payload)
            .map_err(|e| ClientError::Transport(format!("{subject}: unreadable reply: {e}")))
    }

    /// Uploads the file at `local` (unless the library has its content already) and
    /// returns its entry for a put, with `path` and `mode` as given.
    pub async fn upload_file(
        &self,
        local: &Path,
        path: &str,
        mode: u32,
        progress: Progress<'_>,
    ) -> Result<AssetFile, ClientError> {
        let mut file = tokio::fs::File::open(local).await.map_err(io(local))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0; CHUNK_SIZE as usize];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf).await.map_err(io(local))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        let sha256 = hex(&hasher.finalize());
        let probe = UploadRequest {
            sha256: sha256.clone(),
            size,
            offset: 0,
            data: Chunk::default(),
        };
        let reply: UploadReply = self.call(api::VERB_UPLOAD, &probe).await?;
        if !reply.complete {
            file.seek(std::io::SeekFrom::Start(0))
                .await
                .map_err(io(local))?;
            let mut offset = 0;
            loop {
                let n = read_full(&mut file, &mut buf).await.map_err(io(local))?;
                let req = UploadRequest {
                    sha256: sha256.clone(),
                    size,
                    offset,
                    data: Chunk(buf[..n].to_vec()),
                };
                let reply: UploadReply = self.call(api::VERB_UPLOAD, &req).await?;
                offset += n as u64;
                progress(offset);
                if reply.complete {
                    break;
                }
                if n == 0 {
                    return Err(ClientError::Transport(format!(
                        "{}: the file changed while it was uploaded; upload again",
                        local.display()
                    )));
                }
            }
        }
        progress(size);
        Ok(AssetFile {
            path: path.to_owned(),
            size,
            sha256,
            mode,
        })
    }

    /// Downloads `file` of asset `address` to `dest`, checking its SHA-256, and gives
    /// it the file's mode. A wrong checksum leaves no file behind.
    pub async fn fetch_file(
        &self,
        address: &str,
        file: &AssetFile,
        dest: &Path,
        progress: Progress<'_>,
    ) -> Result<(), ClientError> {
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io(parent))?;
        }
        let mut out = tokio::fs::File::create(dest).await.map_err(io(dest))?;
        let mut hasher = Sha256::new();
        let mut offset = 0;
        loop {
            let req = FetchRequest {
                name: address.to_owned(),
                path: file.path.clone(),
                offset,
                length: None,
            };
            let reply: FetchReply = self.call(api::VERB_FETCH, &req).await?;
            hasher.update(&reply.data.0);
            out.write_all(&reply.data.0).await.map_err(io(dest))?;
            offset += reply.data.0.len() as u64;
            progress(offset);
            if reply.eof {
                break;
            }
            if reply.data.0.is_empty() {
                return Err(ClientError::Transport(format!(
                    "{address} {:?}: the library sent an empty chunk before the end",
                    file.path
                )));
            }
        }
        out.flush().await.map_err(io(dest))?;
        drop(out);
        let actual = hex(&hasher.finalize());
        if actual != file.sha256 {
            let _ = tokio::fs::remove_file(dest).await;
            return Err(ClientError::Checksum {
                path: file.path.clone(),
                expected: file.sha256.clone(),
                actual,
            });
        }
        set_mode(dest, file.mode).map_err(io(dest))
    }
}

async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Gives `path` the permission bits `mode`.
pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
