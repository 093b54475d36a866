//! Spawning a worker's long-running tasks so that a task that panics stops the worker:
//! the panic is logged, shutdown starts for the other tasks, and the worker's `run`
//! returns the failure, so the process exits non-zero and is restarted.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A supervised task ended with a panic (or was aborted).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the {task} task failed: {reason}")]
pub struct TaskFailed {
    /// The task's name, e.g. `uplink`.
    pub task: &'static str,
    /// The panic message.
    pub reason: String,
}

/// Spawns `future` as task `name`. When it panics, the panic is logged, `shutdown` is
/// cancelled (so the worker's other tasks finish) and the handle yields [`TaskFailed`].
pub fn spawn<F>(
    name: &'static str,
    shutdown: &CancellationToken,
    future: F,
) -> JoinHandle<Result<(), TaskFailed>>
where
    F: Future<Output = ()> + Send + 'static,
{
    let inner = tokio::spawn(async move {
        fault::inject(name);
        future.await
    });
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        inner.await.map_err(|error| {
            let reason = match error.try_into_panic() {
                Ok(panic) => panic_message(panic.as_ref()),
                Err(error) => error.to_string(),
            };
            tracing::error!(task = name, %reason, "A task failed; stopping the worker.");
            shutdown.cancel();
            TaskFailed { task: name, reason }
        })
    })
}

/// Waits for supervised tasks and returns the first failure, after all have ended.
pub async fn join_all(
    tasks: impl IntoIterator<Item = JoinHandle<Result<(), TaskFailed>>>,
) -> Result<(), TaskFailed> {
    let mut first = Ok(());
    for task in tasks {
        let result = task.await.unwrap_or_else(|error| {
            Err(TaskFailed {
                task: "supervisor",
                reason: error.to_string(),
            })
        });
        if first.is_ok() {
            first = result;
        }
    }
    first
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic without a message".to_owned()
    }
}

/// Fault injection for tests of the failure path, in debug builds only:
/// `DTAAS_TEST_PANIC_TASK=<name>` makes task `<name>` panic as it starts.
mod fault {
    #[cfg(debug_assertions)]
    pub fn inject(name: &str) {
        if std::env::var("DTAAS_TEST_PANIC_TASK").is_ok_and(|task| task == name) {
            panic!("DTAAS_TEST_PANIC_TASK={name}: injected panic");
        }
    }

    #[cfg(not(debug_assertions))]
    pub fn inject(_name: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_cancels_shutdown_and_is_returned() {
        let shutdown = CancellationToken::new();
        let waiting = {
            let shutdown = shutdown.clone();
            spawn("waiter", &shutdown.clone(), async move {
                shutdown.cancelled().await
            })
        };
        let failing = spawn("failing", &shutdown, async { panic!("boom") });
        let result = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            join_all([waiting, failing]),
        )
        .await
        .expect("both tasks end");
        let failure = result.unwrap_err();
        assert_eq!(failure.task, "failing");
        assert_eq!(failure.reason, "boom");
        assert!(shutdown.is_cancelled());
    }
}
