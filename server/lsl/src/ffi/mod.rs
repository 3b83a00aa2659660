//! The only unsafe code in Myelin: the liblsl C API, resolved from a shared library at run time.
//!
//! Invariants every call site below relies on:
//! * `Api` is built only by `Api::load`, which resolves every symbol from one `Library` that the
//!   `Api` keeps alive (`_library`), so each function pointer stays valid as long as the `Api`.
//! * The signatures match liblsl 1.18's `lsl_c.h` (checked against the pylsl-bundled 1.18.0).
//! * Handles (`*mut c_void`) passed to liblsl were returned by liblsl's own constructors and are
//!   destroyed exactly once by the owning wrapper's `Drop` (stream_info.rs, inlet.rs, outlet.rs).
#![allow(unsafe_code)]

mod inlet;
mod outlet;
mod stream_info;

pub use inlet::Inlet;
pub use outlet::Outlet;
pub use stream_info::{StreamInfo, resolve};

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
///
/// # Safety
/// `ptr` is null or points to a NUL-terminated string that stays valid and unchanged for the
/// duration of this call (liblsl's getters return such pointers, valid until the next call on
/// the same object; callers pass them here at once).
pub unsafe fn string_at(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: non-null, and NUL-terminated and valid for this call by the caller's contract.
    unsafe { std::ffi::CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
}

use std::ffi::CString;

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

pub(crate) fn check(function: &'static str, code: c_int) -> Result<(), LslError> {
    if code == 0 { Ok(()) } else { Err(LslError { function, reason: error_name(code), code }) }
}

pub(crate) fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).expect("NUL bytes were replaced")
}
