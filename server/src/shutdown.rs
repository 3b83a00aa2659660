//! Graceful shutdown, in two phases shared by every task: one trigger, many cloned listeners.
//!
//! * Stopping: no new calls; ingest streams, calibrations and ConnectLsl calls end with
//!   UNAVAILABLE, LSL inlets stop; sessions then end and their queued windows are decoded and
//!   recorded.
//! * Closing: Subscribe streams end with UNAVAILABLE (after the last predictions reached them).

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    Stopping,
    Closing,
}

#[derive(Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<Phase>,
}

/// Held by the signal handler (which starts shutting down) and the server (which moves it on).
#[derive(Clone)]
pub struct ShutdownTrigger {
    sender: Arc<watch::Sender<Phase>>,
}

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(Phase::Running);
    (ShutdownTrigger { sender: Arc::new(sender) }, Shutdown { receiver })
}

impl ShutdownTrigger {
    /// Starts shutting down (the stopping phase).
    pub fn trigger(&self) {
        self.sender.send_if_modified(|phase| {
            let changed = *phase < Phase::Stopping;
            *phase = (*phase).max(Phase::Stopping);
            changed
        });
    }

    /// The closing phase: subscribers' streams end.
    pub fn close(&self) {
        self.sender.send_replace(Phase::Closing);
    }

    /// A listener of this trigger.
    pub fn listener(&self) -> Shutdown {
        Shutdown { receiver: self.sender.subscribe() }
    }
}

impl Shutdown {
    /// Resolves once shutdown has started (immediately if it already has).
    pub async fn wait(&mut self) {
        let _ = self.receiver.wait_for(|phase| *phase >= Phase::Stopping).await;
    }

    /// Resolves once shutdown reaches the closing phase.
    pub async fn wait_closing(&mut self) {
        let _ = self.receiver.wait_for(|phase| *phase >= Phase::Closing).await;
    }

    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow() >= Phase::Stopping
    }
}

/// The status every call cut short by shutdown ends with.
pub fn shutting_down() -> tonic::Status {
    tonic::Status::unavailable("shutting down")
}

/// Joins `threads` as they finish, until `deadline`; returns how many were still running then
/// (left behind: the process is about to exit).
pub fn join_until(threads: Vec<std::thread::JoinHandle<()>>, deadline: std::time::Instant) -> usize {
    let mut running = threads;
    while !running.is_empty() && std::time::Instant::now() < deadline {
        let (done, still): (Vec<_>, Vec<_>) = running.into_iter().partition(|t| t.is_finished());
        for thread in done {
            let _ = thread.join();
        }
        running = still;
        if !running.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    running.len()
}
