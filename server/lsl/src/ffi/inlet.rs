//! Inlets (lsl_inlet): pulling samples, strings and clock offsets from one outlet.
// Unsafe code is allowed here by `ffi`'s `#![allow(unsafe_code)]`; the invariants are in its
// module documentation, each block's own below.

use std::ffi::{c_char, c_int, c_ulong};
use std::sync::Arc;

use super::{Api, Handle, LslError, StreamInfo, check, string_at};

/// A connection to one LSL outlet (lsl_inlet). Not Sync: one thread pulls from it.
pub struct Inlet {
    api: Arc<Api>,
    handle: Handle,
    channels: usize,
}

// SAFETY: an inlet may be moved to another thread; this wrapper is not Sync, so liblsl's rule
// (no concurrent use of one object) holds.
unsafe impl Send for Inlet {}

impl Drop for Inlet {
    fn drop(&mut self) {
        // SAFETY: owned handle, destroyed once.
        unsafe { (self.api.lsl_destroy_inlet)(self.handle) }
    }
}

impl Inlet {
    /// `recover`: liblsl reconnects by itself when the source comes back (same source id).
    pub fn new(info: &StreamInfo, max_buffer_seconds: i32, recover: bool) -> Self {
        // SAFETY: `info.handle` is valid; liblsl copies what it needs from it.
        let handle = unsafe { (info.api.lsl_create_inlet)(info.handle, max_buffer_seconds, 0, c_int::from(recover)) };
        Self { api: info.api.clone(), handle, channels: info.channel_count() }
    }

    pub fn open(&mut self, timeout: f64) -> Result<(), LslError> {
        let mut code = 0;
        // SAFETY: valid handle; `code` is a valid out-pointer.
        unsafe { (self.api.lsl_open_stream)(self.handle, timeout, &mut code) };
        check("open_stream", code)
    }

    /// The full description of the connected stream (with desc), waiting up to `timeout`.
    pub fn info(&mut self, timeout: f64) -> Result<StreamInfo, LslError> {
        let mut code = 0;
        // SAFETY: valid handle and out-pointer; the returned streaminfo is owned by us.
        let handle = unsafe { (self.api.lsl_get_fullinfo)(self.handle, timeout, &mut code) };
        check("get_fullinfo", code)?;
        Ok(StreamInfo { api: self.api.clone(), handle })
    }

    /// (offset, uncertainty): add the offset to remote timestamps to get local LSL time.
    pub fn time_correction(&mut self, timeout: f64) -> Result<(f64, f64), LslError> {
        let (mut remote, mut uncertainty, mut code) = (0.0, 0.0, 0);
        // SAFETY: valid handle and out-pointers.
        let offset = unsafe { (self.api.lsl_time_correction_ex)(self.handle, &mut remote, &mut uncertainty, timeout, &mut code) };
        check("time_correction", code)?;
        Ok((offset, uncertainty))
    }

    /// Waits up to `timeout` for the next sample, then takes everything else already there,
    /// into `data` (row-major) and `timestamps`; returns the number of samples. (liblsl's own
    /// chunk pull with a timeout waits until the buffer is *full*, which would add latency.)
    pub fn pull_available(&mut self, data: &mut [f32], timestamps: &mut [f64], timeout: f64) -> Result<usize, LslError> {
        let c = self.channels.max(1);
        if data.len() < c || timestamps.is_empty() {
            return Ok(0);
        }
        let mut code = 0;
        // SAFETY: `data` has room for one sample of `c` values, as passed.
        let first = unsafe { (self.api.lsl_pull_sample_f)(self.handle, data.as_mut_ptr(), c as c_int, timeout, &mut code) };
        check("pull_sample_f", code)?;
        if first == 0.0 {
            return Ok(0);
        }
        timestamps[0] = first;
        // Keep the sample already taken even if draining the rest fails (e.g. the stream was
        // just lost): the error shows up again on the next pull.
        let more = self.pull_chunk(&mut data[c..], &mut timestamps[1..], 0.0).unwrap_or(0);
        Ok(1 + more)
    }

    /// Pulls the samples available now (`timeout` 0.0) or waits until the buffers are full or
    /// `timeout` passes; returns the number of samples.
    pub fn pull_chunk(&mut self, data: &mut [f32], timestamps: &mut [f64], timeout: f64) -> Result<usize, LslError> {
        let capacity = (data.len() / self.channels.max(1)).min(timestamps.len());
        let mut code = 0;
        // SAFETY: both buffers are valid for the lengths passed (capacity samples); liblsl writes
        // at most that many values and returns how many elements it wrote.
        let written = unsafe {
            (self.api.lsl_pull_chunk_f)(
                self.handle,
                data.as_mut_ptr(),
                timestamps.as_mut_ptr(),
                (capacity * self.channels) as c_ulong,
                capacity as c_ulong,
                timeout,
                &mut code,
            )
        };
        check("pull_chunk_f", code)?;
        Ok(written as usize / self.channels.max(1))
    }

    /// Waits up to `timeout` for the next string sample (first channel), then takes the ones
    /// already there, up to `max`.
    pub fn pull_strings_available(&mut self, max: usize, timeout: f64) -> Result<Vec<(String, f64)>, LslError> {
        let c = self.channels.max(1);
        let mut values: Vec<*mut c_char> = vec![std::ptr::null_mut(); c];
        let mut code = 0;
        // SAFETY: room for one sample of `c` strings; liblsl allocates each, we copy and free them.
        let first = unsafe { (self.api.lsl_pull_sample_str)(self.handle, values.as_mut_ptr(), c as c_int, timeout, &mut code) };
        let mut out = Vec::new();
        if first != 0.0 {
            // SAFETY: a string liblsl allocated for this sample, not freed until below.
            out.push((unsafe { string_at(values[0]) }, first));
        }
        for ptr in values {
            if !ptr.is_null() {
                // SAFETY: allocated by liblsl for us, freed once.
                unsafe { (self.api.lsl_destroy_string)(ptr) };
            }
        }
        check("pull_sample_str", code)?;
        if first != 0.0 && max > 1 {
            out.extend(self.pull_strings(max - 1, 0.0)?);
        }
        Ok(out)
    }

    /// String samples (marker streams): (value of the first channel, timestamp) pairs.
    pub fn pull_strings(&mut self, max: usize, timeout: f64) -> Result<Vec<(String, f64)>, LslError> {
        let n = max * self.channels.max(1);
        let mut data: Vec<*mut c_char> = vec![std::ptr::null_mut(); n];
        let mut timestamps = vec![0.0; max];
        let mut code = 0;
        // SAFETY: buffers sized as passed; liblsl allocates each returned string, which we copy
        // and free with lsl_destroy_string exactly once.
        let written = unsafe {
            (self.api.lsl_pull_chunk_str)(
                self.handle,
                data.as_mut_ptr(),
                timestamps.as_mut_ptr(),
                n as c_ulong,
                max as c_ulong,
                timeout,
                &mut code,
            )
        } as usize;
        let mut out = Vec::with_capacity(written / self.channels.max(1));
        for (i, ptr) in data.iter().take(written).enumerate() {
            if i % self.channels.max(1) == 0 {
                // SAFETY: a string liblsl allocated for this chunk, freed only just below.
                out.push((unsafe { string_at(*ptr) }, timestamps[i / self.channels.max(1)]));
            }
            // SAFETY: each non-null pointer was allocated by liblsl for us.
            if !ptr.is_null() {
                unsafe { (self.api.lsl_destroy_string)(*ptr) };
            }
        }
        check("pull_chunk_str", code)?;
        Ok(out)
    }
}
