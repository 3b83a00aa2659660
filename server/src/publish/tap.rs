//! Taps: consumers on their own threads (LSL outlets, recorders) that take each prediction of a
//! route as it is published, each through its own bounded queue. Publishing hands a prediction
//! to a tap without waiting (a `try_send` into that queue); a tap whose consumer cannot keep up
//! loses, and counts, only what does not fit in its own queue.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use myelin_proto::v1::Prediction;

type Deliver = Box<dyn Fn(&Arc<Prediction>) + Send>;

/// The taps of one route.
#[derive(Default)]
pub struct Taps {
    next_id: AtomicU64,
    /// Lets publishing skip the lock on the (usual) route without taps.
    count: AtomicUsize,
    taps: Mutex<Vec<(u64, Deliver)>>,
}

/// A tap in place; dropping it removes it.
pub struct Tap {
    taps: Arc<Taps>,
    id: u64,
}

impl Taps {
    /// Adds `deliver`, which must not block (a `try_send` into the consumer's bounded queue).
    pub fn add(self: &Arc<Self>, deliver: impl Fn(&Arc<Prediction>) + Send + 'static) -> Tap {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut taps = self.taps.lock().unwrap_or_else(PoisonError::into_inner);
        taps.push((id, Box::new(deliver)));
        self.count.store(taps.len(), Ordering::Release);
        Tap { taps: self.clone(), id }
    }

    pub fn deliver(&self, prediction: &Arc<Prediction>) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        for (_, deliver) in self.taps.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            deliver(prediction);
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let mut taps = self.taps.taps.lock().unwrap_or_else(PoisonError::into_inner);
        taps.retain(|(id, _)| *id != self.id);
        self.taps.count.store(taps.len(), Ordering::Release);
    }
}
