//! The server's monotonic receive clock: nanoseconds since the process started. It never jumps
//! (unlike wall time), so every latency computed from it is honest.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// Pin the clock's origin; called once at start-up (later calls are no-ops).
pub fn init() {
    START.get_or_init(Instant::now);
}

/// Nanoseconds since the server started.
pub fn now_ns() -> u64 {
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
