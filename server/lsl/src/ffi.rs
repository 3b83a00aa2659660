//! The only unsafe code in Myelin: the liblsl C API, resolved from a shared library at run time.
//!
//! Invariants every call site below relies on:
//! * `Api` is built only by `Api::load`, which resolves every symbol from one `Library` that the
//!   `Api` keeps alive (`_library`), so each function pointer stays valid as long as the `Api`.
//! * The signatures match liblsl 1.18's `lsl_c.h` (checked against the pylsl-bundled 1.18.0).
//! * Handles (`*mut c_void`) passed to liblsl were returned by liblsl's own constructors and are
//!   destroyed exactly once by the owning wrapper's `Drop` in `lib.rs`.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_double, c_float, c_int, c_uint, c_ulong, c_void};
use std::path::Path;

pub type Handle = *mut c_void;

/// channel_format_t values of lsl_c.h.
pub const CF_FLOAT32: c_int = 1;
pub const CF_STRING: c_int = 3;

macro_rules! api {
    ($($name:ident : fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        #[allow(non_snake_case)]
        pub struct Api {
            _library: libloading::Library,
            $(pub $name: unsafe extern "C" fn($($arg),*) $(-> $ret)?,)*
        }

        impl Api {
            /// Loads the library at `path` and resolves every function Myelin uses.
            pub fn load(path: &Path) -> Result<Self, String> {
                // SAFETY: loading liblsl runs its static initialisers, which only set up
                // liblsl's own state; the library is a trusted dependency installed by setup.
                let library = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
                $(
                    // SAFETY: the symbol has this C signature in liblsl 1.18 (lsl_c.h); the
                    // pointer is copied out and stays valid while `_library` is alive.
                    let $name = unsafe {
                        *library
                            .get::<unsafe extern "C" fn($($arg),*) $(-> $ret)?>(concat!(stringify!($name), "\0").as_bytes())
                            .map_err(|e| format!("{}: {e}", stringify!($name)))?
                    };
                )*
                Ok(Self { _library: library, $($name,)* })
            }
        }
    };
}

api! {
    lsl_library_version: fn() -> c_int;
    lsl_local_clock: fn() -> c_double;
    lsl_resolve_bypred: fn(*mut Handle, c_uint, *const c_char, c_int, c_double) -> c_int;
    lsl_create_streaminfo: fn(*const c_char, *const c_char, c_int, c_double, c_int, *const c_char) -> Handle;
    lsl_destroy_streaminfo: fn(Handle);
    lsl_copy_streaminfo: fn(Handle) -> Handle;
    lsl_get_name: fn(Handle) -> *const c_char;
    lsl_get_type: fn(Handle) -> *const c_char;
    lsl_get_source_id: fn(Handle) -> *const c_char;
    lsl_get_hostname: fn(Handle) -> *const c_char;
    lsl_get_channel_count: fn(Handle) -> c_int;
    lsl_get_nominal_srate: fn(Handle) -> c_double;
    lsl_get_channel_format: fn(Handle) -> c_int;
    lsl_get_desc: fn(Handle) -> Handle;
    lsl_child: fn(Handle, *const c_char) -> Handle;
    lsl_first_child: fn(Handle) -> Handle;
    lsl_next_sibling: fn(Handle) -> Handle;
    lsl_empty: fn(Handle) -> c_int;
    lsl_child_value_n: fn(Handle, *const c_char) -> *const c_char;
    lsl_append_child: fn(Handle, *const c_char) -> Handle;
    lsl_append_child_value: fn(Handle, *const c_char, *const c_char) -> Handle;
    lsl_create_inlet: fn(Handle, c_int, c_int, c_int) -> Handle;
    lsl_destroy_inlet: fn(Handle);
    lsl_get_fullinfo: fn(Handle, c_double, *mut c_int) -> Handle;
    lsl_open_stream: fn(Handle, c_double, *mut c_int);
    lsl_time_correction_ex: fn(Handle, *mut c_double, *mut c_double, c_double, *mut c_int) -> c_double;
    lsl_pull_chunk_f: fn(Handle, *mut c_float, *mut c_double, c_ulong, c_ulong, c_double, *mut c_int) -> c_ulong;
    lsl_pull_chunk_str: fn(Handle, *mut *mut c_char, *mut c_double, c_ulong, c_ulong, c_double, *mut c_int) -> c_ulong;
    lsl_destroy_string: fn(*mut c_char);
    lsl_pull_sample_f: fn(Handle, *mut c_float, c_int, c_double, *mut c_int) -> c_double;
    lsl_pull_sample_str: fn(Handle, *mut *mut c_char, c_int, c_double, *mut c_int) -> c_double;
    lsl_create_outlet: fn(Handle, c_int, c_int) -> Handle;
    lsl_destroy_outlet: fn(Handle);
    lsl_push_sample_ftp: fn(Handle, *const c_float, c_double, c_int) -> c_int;
    lsl_push_sample_strtp: fn(Handle, *const *const c_char, c_double, c_int) -> c_int;
    lsl_have_consumers: fn(Handle) -> c_int;
}

// SAFETY: `Api` holds only the library handle and plain function pointers; liblsl's functions
// are safe to call from any thread (each *object* is used from one thread at a time, which the
// wrappers in lib.rs enforce by not being Sync).
unsafe impl Send for Api {}
unsafe impl Sync for Api {}

/// Copies a NUL-terminated string owned by liblsl (valid until the next call on its object).
pub fn string_at(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: liblsl returns pointers to NUL-terminated strings it owns; we copy immediately.
    unsafe { std::ffi::CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
}

use std::ffi::CString;
use std::sync::Arc;

/// Error codes of lsl_c.h (lsl_error_code_t).
fn error_name(code: c_int) -> &'static str {
    match code {
        -1 => "timeout",
        -2 => "stream lost",
        -3 => "invalid argument",
        -4 => "internal error",
        _ => "unknown error",
    }
}

/// An error from liblsl, with the function that raised it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("liblsl {function}: {reason}")]
pub struct LslError {
    pub function: &'static str,
    pub reason: &'static str,
    pub code: i32,
}

impl LslError {
    pub fn is_timeout(&self) -> bool {
        self.code == -1
    }
    pub fn is_lost(&self) -> bool {
        self.code == -2
    }
}

fn check(function: &'static str, code: c_int) -> Result<(), LslError> {
    if code == 0 { Ok(()) } else { Err(LslError { function, reason: error_name(code), code }) }
}

fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).expect("NUL bytes were replaced")
}

/// A stream description (lsl_streaminfo), owned.
pub struct StreamInfo {
    api: Arc<Api>,
    handle: Handle,
}

// SAFETY: a streaminfo is a heap object with no thread affinity; this wrapper is not Sync, so it
// is used from one thread at a time.
unsafe impl Send for StreamInfo {}

impl Drop for StreamInfo {
    fn drop(&mut self) {
        // SAFETY: `handle` came from liblsl and is destroyed exactly once, here.
        unsafe { (self.api.lsl_destroy_streaminfo)(self.handle) }
    }
}

impl StreamInfo {
    /// A new description: `format` is CF_FLOAT32 or CF_STRING; rate 0 = irregular.
    pub fn new(api: &Arc<Api>, name: &str, kind: &str, channels: usize, rate: f64, format: c_int, source_id: &str) -> Self {
        let (name, kind, source) = (c_string(name), c_string(kind), c_string(source_id));
        // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
        let handle = unsafe { (api.lsl_create_streaminfo)(name.as_ptr(), kind.as_ptr(), channels as c_int, rate, format, source.as_ptr()) };
        Self { api: api.clone(), handle }
    }

    pub fn name(&self) -> String {
        // SAFETY: valid handle (owned); the string is copied before any other call.
        string_at(unsafe { (self.api.lsl_get_name)(self.handle) })
    }
    pub fn kind(&self) -> String {
        // SAFETY: as above.
        string_at(unsafe { (self.api.lsl_get_type)(self.handle) })
    }
    pub fn source_id(&self) -> String {
        // SAFETY: as above.
        string_at(unsafe { (self.api.lsl_get_source_id)(self.handle) })
    }
    pub fn hostname(&self) -> String {
        // SAFETY: as above.
        string_at(unsafe { (self.api.lsl_get_hostname)(self.handle) })
    }
    pub fn channel_count(&self) -> usize {
        // SAFETY: valid handle.
        unsafe { (self.api.lsl_get_channel_count)(self.handle) }.max(0) as usize
    }
    pub fn nominal_rate(&self) -> f64 {
        // SAFETY: valid handle.
        unsafe { (self.api.lsl_get_nominal_srate)(self.handle) }
    }
    pub fn is_string(&self) -> bool {
        // SAFETY: valid handle.
        unsafe { (self.api.lsl_get_channel_format)(self.handle) == CF_STRING }
    }

    /// Channel labels from the XDF-style description (desc/channels/channel/label), if present.
    pub fn channel_labels(&self) -> Vec<String> {
        let (channels_tag, label_tag) = (c_string("channels"), c_string("label"));
        let mut labels = Vec::new();
        // SAFETY: desc/child/sibling handles are owned by the streaminfo, which outlives this
        // loop; lsl_empty marks the end of a list; strings are copied at once.
        unsafe {
            let desc = (self.api.lsl_get_desc)(self.handle);
            let channels = (self.api.lsl_child)(desc, channels_tag.as_ptr());
            let mut channel = (self.api.lsl_first_child)(channels);
            while (self.api.lsl_empty)(channel) == 0 {
                labels.push(string_at((self.api.lsl_child_value_n)(channel, label_tag.as_ptr())));
                channel = (self.api.lsl_next_sibling)(channel);
            }
        }
        labels
    }

    /// Appends `<parent><child>value</child>...</parent>` under desc; `children` are leaf pairs.
    pub fn append_desc(&mut self, parent: &str, children: &[(&str, &str)]) {
        let parent = c_string(parent);
        // SAFETY: desc and the appended element belong to this streaminfo; strings outlive the calls.
        unsafe {
            let desc = (self.api.lsl_get_desc)(self.handle);
            let element = (self.api.lsl_append_child)(desc, parent.as_ptr());
            for (name, value) in children {
                let (name, value) = (c_string(name), c_string(value));
                (self.api.lsl_append_child_value)(element, name.as_ptr(), value.as_ptr());
            }
        }
    }

    /// Appends desc/channels/channel elements with label, unit and type.
    pub fn append_channels(&mut self, channels: &[(&str, &str, &str)]) {
        let tags = [c_string("channels"), c_string("channel"), c_string("label"), c_string("unit"), c_string("type")];
        // SAFETY: as in append_desc.
        unsafe {
            let desc = (self.api.lsl_get_desc)(self.handle);
            let list = (self.api.lsl_append_child)(desc, tags[0].as_ptr());
            for (label, unit, kind) in channels {
                let channel = (self.api.lsl_append_child)(list, tags[1].as_ptr());
                let (label, unit, kind) = (c_string(label), c_string(unit), c_string(kind));
                (self.api.lsl_append_child_value)(channel, tags[2].as_ptr(), label.as_ptr());
                (self.api.lsl_append_child_value)(channel, tags[3].as_ptr(), unit.as_ptr());
                (self.api.lsl_append_child_value)(channel, tags[4].as_ptr(), kind.as_ptr());
            }
        }
    }
}

/// Streams matching an LSL predicate (XPath 1.0, e.g. `name='EEG' and type='EEG'`), waiting up
/// to `timeout` seconds for at least one.
pub fn resolve(api: &Arc<Api>, predicate: &str, timeout: f64) -> Vec<StreamInfo> {
    let predicate = c_string(predicate);
    let mut buffer: [Handle; 64] = [std::ptr::null_mut(); 64];
    // SAFETY: buffer has room for 64 handles; liblsl writes at most that many and returns the
    // count (or a negative error); each returned handle is owned by us from now on.
    let found = unsafe { (api.lsl_resolve_bypred)(buffer.as_mut_ptr(), buffer.len() as c_uint, predicate.as_ptr(), 1, timeout) };
    buffer.iter().take(found.max(0) as usize).map(|&handle| StreamInfo { api: api.clone(), handle }).collect()
}

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
            out.push((string_at(values[0]), first));
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
                out.push((string_at(*ptr), timestamps[i / self.channels.max(1)]));
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
