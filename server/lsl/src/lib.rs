//! LabStreamingLayer for Myelin: a thin safe wrapper over the liblsl 1.18 C API, loaded at run
//! time from the library bundled in the PyPI `pylsl` wheel (deploy/setup.sh copies it to
//! runtime/) or from the system. Not the crates.io `lsl` crate, whose vendored liblsl 1.13 does
//! not build on glibc >= 2.34 and polls with 1 ms sleeps.
//!
//! All unsafe code lives in [`ffi`]; the rest of Myelin forbids it.
#![deny(unsafe_code)]

mod ffi;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use ffi::{CF_FLOAT32, CF_STRING, Inlet, LslError, Outlet, StreamInfo};

/// A loaded liblsl.
#[derive(Clone)]
pub struct Lsl {
    api: Arc<ffi::Api>,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "LabStreamingLayer is not available: liblsl could not be loaded ({tried}). Run deploy/setup.sh (it installs liblsl from the pylsl wheel into runtime/), install liblsl 1.16+, or set lsl.library / MYELIN_LSL__LIBRARY"
)]
pub struct NotAvailable {
    pub tried: String,
}

impl Lsl {
    /// Loads liblsl from `configured` if given, else runtime/liblsl.so.2 (under the working
    /// directory or next to the executable), else the system search path.
    pub fn load(configured: Option<&Path>) -> Result<Self, NotAvailable> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        match configured {
            Some(path) if !path.as_os_str().is_empty() => candidates.push(path.to_path_buf()),
            _ => {
                candidates.push(PathBuf::from("runtime/liblsl.so.2"));
                if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
                    candidates.push(dir.join("liblsl.so.2"));
                }
                candidates.push(PathBuf::from("liblsl.so.2"));
                candidates.push(PathBuf::from("liblsl.so"));
            }
        }
        let mut failures = Vec::new();
        for path in candidates {
            let exists_or_soname = path.exists() || path.components().count() == 1;
            if !exists_or_soname {
                failures.push(format!("{}: not found", path.display()));
                continue;
            }
            match ffi::Api::load(&path) {
                Ok(api) => return Ok(Self { api: Arc::new(api), path }),
                Err(e) => failures.push(format!("{}: {e}", path.display())),
            }
        }
        Err(NotAvailable { tried: failures.join("; ") })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// liblsl's version, e.g. 118 for 1.18.
    pub fn version(&self) -> i32 {
        self.api.version()
    }

    /// LSL's local clock (seconds, monotonic, shared by every LSL program on this machine).
    pub fn local_clock(&self) -> f64 {
        self.api.local_clock()
    }

    /// Streams matching an LSL predicate, waiting up to `timeout` seconds for the first.
    pub fn resolve(&self, predicate: &str, timeout: f64) -> Vec<StreamInfo> {
        ffi::resolve(&self.api, predicate, timeout)
    }

    pub fn stream_info(&self, name: &str, kind: &str, channels: usize, rate: f64, format: i32, source_id: &str) -> StreamInfo {
        StreamInfo::new(&self.api, name, kind, channels, rate, format, source_id)
    }
}

/// An LSL predicate selecting by exact name, type and/or source id (empty = any); quotes in
/// values are escaped.
pub fn predicate(name: &str, kind: &str, source_id: &str) -> String {
    let quote = |v: &str| v.replace('\'', "&apos;");
    let mut parts = Vec::new();
    if !name.is_empty() {
        parts.push(format!("name='{}'", quote(name)));
    }
    if !kind.is_empty() {
        parts.push(format!("type='{}'", quote(kind)));
    }
    if !source_id.is_empty() {
        parts.push(format!("source_id='{}'", quote(source_id)));
    }
    if parts.is_empty() { "true()".into() } else { parts.join(" and ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_combine_the_given_properties() {
        assert_eq!(predicate("EEG", "", ""), "name='EEG'");
        assert_eq!(predicate("a", "Markers", "s1"), "name='a' and type='Markers' and source_id='s1'");
        assert_eq!(predicate("", "", ""), "true()");
    }

    #[test]
    fn a_missing_library_is_a_clear_error() {
        let Err(error) = Lsl::load(Some(Path::new("/nonexistent/liblsl.so"))) else { panic!("loaded") };
        assert!(error.to_string().contains("deploy/setup.sh"), "{error}");
    }
}
