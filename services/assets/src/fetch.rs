//! `asset.fetch`: one chunk of a file, read from the object store.
//!
//! Every fetch stands alone (any instance can answer it), but a reader that stopped
//! at the end of a chunk is parked for a while, so the next chunk of a sequential
//! download continues it instead of reading the file again from its start. The
//! object store checks the content's SHA-256 when a reader reaches the end; a
//! mismatch fails that fetch.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::object_store::{GetErrorKind, Object};
use dtaas_schemas::asset_api::{Chunk, FetchReply, FetchRequest, CHUNK_SIZE};
use dtaas_schemas::asset_store::object_name;
use dtaas_schemas::ErrorReply;
use tokio::io::AsyncReadExt;

use crate::error::{bad_request, internal, not_found, unavailable};
use crate::library::Library;

/// How long a parked reader waits for its next chunk request.
const PARK_TIME: Duration = Duration::from_secs(60);

struct Parked {
    sha256: String,
    offset: u64,
    since: Instant,
    object: Object,
}

/// Readers positioned at the end of the chunk they last served.
pub struct Readers {
    parked: Mutex<Vec<Parked>>,
    capacity: usize,
}

impl Readers {
    pub fn new(capacity: usize) -> Self {
        Self {
            parked: Mutex::new(Vec::new()),
            capacity,
        }
    }

    fn take(&self, sha256: &str, offset: u64) -> Option<Object> {
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        parked.retain(|p| p.since.elapsed() < PARK_TIME);
        let i = parked
            .iter()
            .position(|p| p.offset == offset && p.sha256 == sha256)?;
        Some(parked.swap_remove(i).object)
    }

    fn park(&self, sha256: &str, offset: u64, object: Object) {
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        if parked.len() >= self.capacity {
            // The oldest goes: its download is the likeliest to be abandoned.
            if let Some(oldest) = (0..parked.len()).min_by_key(|&i| parked[i].since) {
                parked.swap_remove(oldest);
            }
        }
        parked.push(Parked {
            sha256: sha256.to_owned(),
            offset,
            since: Instant::now(),
            object,
        });
    }
}

impl Library {
    pub async fn fetch(&self, user: &str, req: FetchRequest) -> Result<FetchReply, ErrorReply> {
        let address =
            req.name
                .parse()
                .map_err(|e: dtaas_schemas::asset_address::AddressError| {
                    bad_request(format!("`name`: {e}"))
                })?;
        let (meta, _) = self.resolve(user, &address).await?;
        let file = meta
            .files
            .iter()
            .find(|f| f.path == req.path)
            .cloned()
            .ok_or_else(|| {
                not_found(format!(
                    "{} has no file {:?}; `dtaas asset show {}` lists its files",
                    meta.address(),
                    req.path,
                    meta.address()
                ))
            })?;
        if req.offset > file.size {
            return Err(bad_request(format!(
                "`offset` {} is past the end of {:?} ({} bytes)",
                req.offset, file.path, file.size
            )));
        }
        let length = req.length.unwrap_or(CHUNK_SIZE).min(CHUNK_SIZE);
        let want = length.min(file.size - req.offset) as usize;
        let mut object = match self.readers.take(&file.sha256, req.offset) {
            Some(object) => object,
            None => self.open_at(&file.sha256, req.offset).await?,
        };
        let mut data = vec![0; want];
        let mut filled = 0;
        while filled < want {
            let n = object.read(&mut data[filled..]).await.map_err(|e| {
                internal(format!("cannot read the content of {:?}: {e}", file.path))
            })?;
            if n == 0 {
                return Err(internal(format!(
                    "the stored content of {:?} ends at {} bytes, before its size {}",
                    file.path,
                    req.offset + filled as u64,
                    file.size
                )));
            }
            filled += n;
        }
        let end = req.offset + want as u64;
        let eof = end == file.size;
        if eof {
            // Reading on to the end lets the store check the whole file's checksum.
            let mut rest = [0u8; 1];
            object.read(&mut rest).await.map_err(|e| {
                internal(format!(
                    "the stored content of {:?} is damaged: {e}",
                    file.path
                ))
            })?;
        } else {
            self.readers.park(&file.sha256, end, object);
        }
        Ok(FetchReply {
            file,
            offset: req.offset,
            data: Chunk(data),
            eof,
        })
    }

    /// A reader of the content `sha256`, positioned at `offset`.
    async fn open_at(&self, sha256: &str, offset: u64) -> Result<Object, ErrorReply> {
        let mut object = self.objects.get(object_name(sha256)).await.map_err(|e| {
            if e.kind() == GetErrorKind::NotFound {
                internal(format!(
                    "the content {sha256} is missing from the object store"
                ))
            } else {
                unavailable("read file contents", e)
            }
        })?;
        if offset > 0 {
            let mut skip = (&mut object).take(offset);
            tokio::io::copy(&mut skip, &mut tokio::io::sink())
                .await
                .map_err(|e| unavailable("read file contents", e))?;
        }
        Ok(object)
    }
}
