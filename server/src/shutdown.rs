//! Graceful shutdown signal shared by every task: one sender, many cloned listeners.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
}

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger { sender }, Shutdown { receiver })
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.sender.send(true);
    }
}

impl Shutdown {
    /// Resolves once shutdown has been triggered (immediately if it already was).
    pub async fn wait(&mut self) {
        let _ = self.receiver.wait_for(|stopped| *stopped).await;
    }

    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }
}
