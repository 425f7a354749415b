//! The push queries streaming to clients, by id: what ends one early.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// The push queries streaming to clients, by id, so `TERMINATE transient_n`
/// and HTTP `/close-query` can end them.
#[derive(Default)]
pub(crate) struct OpenQueries {
    open: Mutex<HashMap<String, oneshot::Sender<()>>>,
}

impl OpenQueries {
    /// Registers `id`; the future completes when [`OpenQueries::close`] names
    /// it, and dropping the guard (the stream ended) unregisters it.
    pub(crate) fn open(
        self: &Arc<Self>,
        id: &str,
    ) -> (impl Future<Output = ()> + Send + 'static, Unregister) {
        let (tx, rx) = oneshot::channel();
        self.open.lock().insert(id.to_string(), tx);
        let guard = Unregister {
            queries: Arc::clone(self),
            id: id.to_string(),
        };
        let closed = async move {
            // A dropped sender (unregistered) is not a close.
            if rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        (closed, guard)
    }

    /// Ends push query `id`; false when no such query streams.
    pub(crate) fn close(&self, id: &str) -> bool {
        match self.open.lock().remove(id) {
            Some(tx) => {
                let _ = tx.send(());
                true
            }
            None => false,
        }
    }
}

pub(crate) struct Unregister {
    queries: Arc<OpenQueries>,
    id: String,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        self.queries.open.lock().remove(&self.id);
    }
}
