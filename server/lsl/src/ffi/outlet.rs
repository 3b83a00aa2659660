//! Outlets (lsl_outlet): pushing numeric and string samples.
// Unsafe code is allowed here by `ffi`'s `#![allow(unsafe_code)]`; the invariants are in its
// module documentation, each block's own below.

use std::sync::Arc;

use super::{Api, Handle, LslError, StreamInfo, c_string, check};

/// An LSL outlet (lsl_outlet). Not Sync: one thread pushes to it.
pub struct Outlet {
    api: Arc<Api>,
    handle: Handle,
    channels: usize,
}

// SAFETY: see Inlet.
unsafe impl Send for Outlet {}

impl Drop for Outlet {
    fn drop(&mut self) {
        // SAFETY: owned handle, destroyed once.
        unsafe { (self.api.lsl_destroy_outlet)(self.handle) }
    }
}

impl Outlet {
    pub fn new(info: &StreamInfo) -> Self {
        // SAFETY: valid streaminfo; liblsl copies it. chunk size 0 / buffer 360 s: defaults.
        let handle = unsafe { (info.api.lsl_create_outlet)(info.handle, 0, 360) };
        Self { api: info.api.clone(), handle, channels: info.channel_count() }
    }

    /// Pushes one float sample stamped `timestamp` (LSL time), sent at once.
    pub fn push_f32(&mut self, sample: &[f32], timestamp: f64) -> Result<(), LslError> {
        assert_eq!(sample.len(), self.channels, "sample length must equal the channel count");
        // SAFETY: `sample` holds exactly `channels` floats, as liblsl reads.
        check("push_sample_ftp", unsafe { (self.api.lsl_push_sample_ftp)(self.handle, sample.as_ptr(), timestamp, 1) })
    }

    /// Pushes one string sample (single-channel marker outlets).
    pub fn push_str(&mut self, value: &str, timestamp: f64) -> Result<(), LslError> {
        assert_eq!(self.channels, 1, "push_str is for single-channel string outlets");
        let value = c_string(value);
        let values = [value.as_ptr()];
        // SAFETY: one valid NUL-terminated string for the one channel.
        check("push_sample_strtp", unsafe { (self.api.lsl_push_sample_strtp)(self.handle, values.as_ptr(), timestamp, 1) })
    }

    pub fn have_consumers(&self) -> bool {
        // SAFETY: valid handle.
        unsafe { (self.api.lsl_have_consumers)(self.handle) != 0 }
    }
}

impl Api {
    pub fn local_clock(&self) -> f64 {
        // SAFETY: no arguments; reads liblsl's monotonic clock.
        unsafe { (self.lsl_local_clock)() }
    }

    pub fn version(&self) -> i32 {
        // SAFETY: no arguments.
        unsafe { (self.lsl_library_version)() }
    }
}
