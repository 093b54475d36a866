//! The keys of a KV bucket, read from the stream's subject list in one bounded request.
//!
//! `kv::Store::keys()` runs an ordered consumer until a message reports nothing
//! pending. When an entry is replaced before it is delivered (history 1 and a writer
//! that keeps writing, like exec nodes' heartbeats in `dtaas-nodes`), the server's
//! pending count stays above zero; the client's fallback check waits for an idle
//! heartbeat, which never comes while the writes go on. So `keys()` can wait forever.
//! The stream's subject list has no such race and every page is a request with a
//! timeout.

use async_nats::jetstream::{kv, stream::InfoError};
use futures::TryStreamExt;

/// Every key with an entry in `store`. Deleted keys may be among them (their
/// last entry is a delete marker), so callers `get` each and skip the `None`s.
pub async fn keys(store: &kv::Store) -> Result<Vec<String>, InfoError> {
    let filter = format!("{}>", store.prefix);
    let subjects: Vec<(String, usize)> = store
        .stream
        .info_with_subjects(&filter)
        .await?
        .try_collect()
        .await?;
    let mut keys: Vec<String> = subjects
        .into_iter()
        .filter_map(|(subject, _)| subject.strip_prefix(&store.prefix).map(str::to_owned))
        .collect();
    keys.sort_unstable();
    Ok(keys)
}
