//! `dt.delete`: a DT that runs nothing leaves the platform with its children. Their
//! registry entries go (so their ids are free again and the assets they resolved are
//! no longer in use for the library), and so do their snapshots in `dtaas-snapshots`;
//! a `deleted` event closes each one's history. Usage records stay: accounting
//! (`usage.get`) keeps reporting what the DTs used.
//!
//! Every DT of the tree is held (`busy`) before anything goes, so a tree with one DT
//! executing or busy loses nothing. Children go before their parent: a delete cut
//! short leaves the parent registered, and deleting it again finishes the job.

use async_nats::jetstream::object_store::ObjectInfo;
use dtaas_schemas::dt_config::DtState;
use dtaas_schemas::lifecycle::{DeleteReply, DeletedDt, LifecycleState};
use futures::TryStreamExt;

use crate::core::Core;
use crate::error::{Error, Result};
use crate::events;

impl Core {
    /// Deletes top-level DT `id` and its children; refused while one executes.
    pub async fn delete(&self, user: &str, id: &str) -> Result<DeleteReply> {
        let dt = self.registry.get_owned(user, id).await?.dt;
        if let Some(parent) = &dt.parent {
            return Err(Error::Conflict(format!(
                "DT {id} is a child of {parent} and is deleted only with it: evolve {parent} \
                 without {id} (it becomes a DT of its own, terminated, that can be deleted), \
                 or delete {parent}"
            )));
        }
        let tree = self.subtree(user, id).await?;
        let mut held: Vec<DtState> = Vec::with_capacity(tree.len());
        for dt in &tree {
            let claimed = self
                .registry
                .claim(&dt.id, "delete", self.lease_ns(), |dt| deletable(id, dt))
                .await;
            match claimed {
                Ok(v) => held.push(v.dt),
                Err(e) => {
                    self.release(user, &held, &e).await;
                    return Err(e);
                }
            }
        }
        let mut deleted = Vec::with_capacity(held.len());
        while let Some(dt) = held.pop() {
            let gone = async {
                let objects = self.delete_snapshots(&dt.id).await?;
                self.registry.remove(&dt.id).await?;
                Ok::<_, Error>(objects)
            }
            .await;
            let snapshot_objects = match gone {
                Ok(objects) => objects,
                Err(e) => {
                    held.push(dt);
                    self.release(user, &held, &e).await;
                    return Err(e.within(&format!("delete of DT {id}")));
                }
            };
            let mut event = events::event(&dt, Some(dt.state), LifecycleState::Deleted, user);
            // The tree goes as a whole; no event of it adds a child edge again.
            event.parent = None;
            if dt.id != id {
                event.detail = Some(format!("deleted with {id}"));
            }
            if let Err(e) = self.publish(&dt, &event).await {
                self.release(user, &held, &e).await;
                return Err(e.within(&format!("DT {} was deleted, but its event", dt.id)));
            }
            deleted.push(DeletedDt {
                id: dt.id.clone(),
                state: dt.state,
                snapshot_objects,
            });
        }
        deleted.reverse();
        Ok(DeleteReply { deleted })
    }

    /// Lets go of the DTs a delete held, after `error` stopped it.
    async fn release(&self, user: &str, held: &[DtState], error: &Error) {
        for dt in held {
            self.abandon(user, &dt.id, error, false).await;
        }
    }

    /// Deletes every object of DT `id` in `dtaas-snapshots` (`<id>/…`); answers how many.
    async fn delete_snapshots(&self, id: &str) -> Result<usize> {
        let unavailable = |e: &dyn std::fmt::Display| {
            Error::unavailable("cannot delete snapshots in dtaas-snapshots", e)
        };
        let prefix = format!("{id}/");
        let objects: Vec<ObjectInfo> = self
            .snapshots
            .list()
            .await
            .map_err(|e| unavailable(&e))?
            .try_collect()
            .await
            .map_err(|e| unavailable(&e))?;
        let mut count = 0;
        for object in objects.iter().filter(|o| o.name.starts_with(&prefix)) {
            self.snapshots
                .delete(&object.name)
                .await
                .map_err(|e| unavailable(&e))?;
            count += 1;
        }
        Ok(count)
    }
}

/// Whether `dt` (of the tree of `root`) may be deleted: anything that runs nothing.
fn deletable(root: &str, dt: &DtState) -> Result<()> {
    match dt.state {
        LifecycleState::Executing if dt.id == root => Err(Error::Conflict(format!(
            "DT {root} is executing; terminate it first (`dtaas dt terminate {root}`), then \
             delete it"
        ))),
        LifecycleState::Executing => Err(Error::Conflict(format!(
            "DT {} of {root}'s tree is executing; terminate {root} first (it stops its \
             children), then delete it",
            dt.id
        ))),
        _ => Ok(()),
    }
}
