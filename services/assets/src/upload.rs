//! `asset.upload`: a file's content in chunks, stored once under its SHA-256.
//!
//! A chunk that does not end the file is kept as a part object
//! (`part/<owner>/<sha256>/<offset>`), so any instance of the worker can take the
//! next chunk. The chunk that ends the file is checked together with the parts: the
//! content goes to `sha256/<hex>` only if its size and checksum match, otherwise
//! the request fails and nothing stays stored. Content already stored answers
//! `complete` at once, so the same file is never sent twice.

use async_nats::jetstream::object_store::{InfoErrorKind, ObjectStore};
use base64::Engine;
use dtaas_schemas::asset_api::{UploadReply, UploadRequest};
use dtaas_schemas::asset_store::{hex, is_sha256, object_name, part_name};
use dtaas_schemas::ErrorReply;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{bad_request, internal, unavailable};
use crate::library::Library;

/// The digest string the object store keeps for content with SHA-256 `sha256_hex`.
pub fn store_digest(sha256_hex: &str) -> String {
    let raw: Vec<u8> = (0..sha256_hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(sha256_hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    format!(
        "SHA-256={}",
        base64::engine::general_purpose::URL_SAFE.encode(raw)
    )
}

/// Whether the content `sha256` of `size` bytes is stored.
async fn stored(objects: &ObjectStore, sha256: &str, size: u64) -> Result<bool, ErrorReply> {
    match objects.info(object_name(sha256)).await {
        Ok(info) => Ok(info.size as u64 == size
            && info.digest.as_deref() == Some(store_digest(sha256).as_str())),
        Err(e) if e.kind() == InfoErrorKind::NotFound => Ok(false),
        Err(e) => Err(unavailable("look up file contents", e)),
    }
}

fn mismatch(sha256: &str, actual: &str) -> ErrorReply {
    bad_request(format!(
        "checksum mismatch: the uploaded content has {actual}, not sha256 {sha256}; \
         nothing was stored, upload the file again from offset 0"
    ))
}

impl Library {
    pub async fn upload(&self, user: &str, req: UploadRequest) -> Result<UploadReply, ErrorReply> {
        if !is_sha256(&req.sha256) {
            return Err(bad_request("`sha256` must be 64 lowercase hex digits"));
        }
        if req.size > self.config.max_file_size {
            return Err(bad_request(crate::validate::too_large(
                &req.sha256,
                req.size,
                self.config.max_file_size,
            )));
        }
        let end = req.offset.checked_add(req.data.0.len() as u64);
        if end.is_none_or(|end| end > req.size) {
            return Err(bad_request(format!(
                "chunk at offset {} with {} bytes goes past the file's size {}",
                req.offset,
                req.data.0.len(),
                req.size
            )));
        }
        let end = end.unwrap_or(req.size);
        if req.data.0.is_empty() && req.size > 0 {
            // An empty chunk asks what the library holds.
            let complete = stored(&self.objects, &req.sha256, req.size).await?;
            let received = if complete { req.size } else { 0 };
            return Ok(UploadReply { received, complete });
        }
        if (req.offset == 0 || end == req.size)
            && stored(&self.objects, &req.sha256, req.size).await?
        {
            return Ok(UploadReply {
                received: req.size,
                complete: true,
            });
        }
        if end < req.size {
            let name = part_name(user, &req.sha256, req.offset);
            self.objects
                .put(name.as_str(), &mut req.data.0.as_slice())
                .await
                .map_err(|e| unavailable("store an upload part", e))?;
            return Ok(UploadReply {
                received: end,
                complete: false,
            });
        }
        if req.offset == 0 {
            let actual = hex(&Sha256::digest(&req.data.0));
            if actual != req.sha256 {
                return Err(mismatch(&req.sha256, &format!("sha256 {actual}")));
            }
            self.objects
                .put(
                    object_name(&req.sha256).as_str(),
                    &mut req.data.0.as_slice(),
                )
                .await
                .map_err(|e| unavailable("store file contents", e))?;
        } else {
            self.assemble(user, &req).await?;
        }
        tracing::debug!(sha256 = %req.sha256, size = req.size, "File contents stored.");
        Ok(UploadReply {
            received: req.size,
            complete: true,
        })
    }

    /// Streams the parts before `req.offset` and the last chunk into the content
    /// object; removes it again when it does not match, and the parts when it does.
    async fn assemble(&self, user: &str, req: &UploadRequest) -> Result<(), ErrorReply> {
        let (mut writer, mut reader) = tokio::io::duplex(256 * 1024);
        let objects = self.objects.clone();
        let (owner, sha256, last_offset) = (user.to_owned(), req.sha256.clone(), req.offset);
        let last = req.data.0.clone();
        let feeder = tokio::spawn(async move {
            let mut offsets = Vec::new();
            let fed = async {
                let mut pos = 0;
                while pos < last_offset {
                    let mut part = objects
                        .get(part_name(&owner, &sha256, pos))
                        .await
                        .map_err(|e| format!("the part at offset {pos} is missing ({e})"))?;
                    let n = tokio::io::copy(&mut part, &mut writer)
                        .await
                        .map_err(|e| format!("the part at offset {pos} is unreadable ({e})"))?;
                    offsets.push(pos);
                    if n == 0 {
                        return Err(format!("the part at offset {pos} is empty"));
                    }
                    pos += n;
                }
                if pos != last_offset {
                    return Err(format!(
                        "the parts end at offset {pos}, not at the last chunk's {last_offset}"
                    ));
                }
                writer
                    .write_all(&last)
                    .await
                    .map_err(|e| format!("cannot pass the last chunk on ({e})"))
            }
            .await;
            (offsets, fed)
        });
        let put = self
            .objects
            .put(object_name(&req.sha256).as_str(), &mut reader)
            .await;
        let (offsets, fed) = feeder
            .await
            .map_err(|e| internal(format!("upload assembly failed: {e}")))?;
        let info = put.map_err(|e| unavailable("store file contents", e))?;
        let matches = info.size as u64 == req.size
            && info.digest.as_deref() == Some(store_digest(&req.sha256).as_str());
        if fed.is_err() || !matches {
            // Only our own write goes: a concurrent upload of the same content may
            // have replaced it with the right bytes meanwhile.
            if let Ok(now) = self.objects.info(object_name(&req.sha256)).await {
                if now.nuid == info.nuid {
                    let _ = self.objects.delete(object_name(&req.sha256)).await;
                }
            }
        }
        // The parts go either way: a failed upload starts again from offset 0.
        for offset in offsets {
            let _ = self
                .objects
                .delete(part_name(user, &req.sha256, offset))
                .await;
        }
        if let Err(why) = fed {
            return Err(bad_request(format!(
                "cannot complete the upload of {}: {why}; upload it again from offset 0",
                req.sha256
            )));
        }
        if !matches {
            return Err(mismatch(
                &req.sha256,
                &format!("{} bytes and digest {:?}", info.size, info.digest),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_digest_is_base64url_of_the_raw_hash() {
        let sha = hex(&Sha256::digest(b"abc"));
        assert_eq!(
            store_digest(&sha),
            "SHA-256=ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0="
        );
    }
}
