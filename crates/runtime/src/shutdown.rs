//! A cloneable shutdown signal shared by a server and its long-lived streams,
//! so that open `WatchEvents` streams end when the server drains instead of
//! holding graceful shutdown open forever.

use tokio::sync::watch;

/// Fires once; every clone observes it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    sender: std::sync::Arc<watch::Sender<bool>>,
    receiver: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        let (sender, receiver) = watch::channel(false);
        Self {
            sender: std::sync::Arc::new(sender),
            receiver,
        }
    }

    /// Fires the signal.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// True once fired.
    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves when the signal fires (at once if it already has).
    pub async fn wait(&self) {
        let mut receiver = self.receiver.clone();
        // An error means every sender is gone, which also means "stop".
        let _ = receiver.wait_for(|fired| *fired).await;
    }
}
