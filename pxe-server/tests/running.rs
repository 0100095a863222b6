//! A server under test as a task of the test's runtime, given the shutdown
//! future every server takes: [`Running::stop`] ends it cleanly and checks
//! it returned `Ok`; a test that ends first aborts it on drop.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The shutdown future handed to the server.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A running server task.
pub struct Running<E> {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), E>>>,
}

impl<E: std::fmt::Debug + Send + 'static> Running<E> {
    /// Spawns `server(shutdown)` on the current runtime.
    pub fn spawn<F>(server: impl FnOnce(Shutdown) -> F) -> Self
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server(Box::pin(async {
            let _ = rx.await;
        })));
        Running {
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Fires the shutdown future and waits for the server to return `Ok`.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

impl<E> Drop for Running<E> {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
