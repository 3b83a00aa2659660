//! Approximate-search graphs built ahead of time (`myelin gallery build FILE`) and saved beside
//! their gallery as `FILE.hnsw` (usearch's own format) with `FILE.hnsw.json`, a stamp naming the
//! exact gallery and ids files it was built from (SHA-256). Attach loads a saved graph in seconds
//! instead of building it (a 1 M-item graph takes tens of minutes on 2 cores), and refuses one
//! whose gallery has changed since: its keys would name the wrong rows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::file::{self, Fingerprint, with_suffix};
use super::{Gallery, GalleryError};

/// Galleries up to this size may still have their graph built inside Attach (about a minute on
/// 2 cores); larger ones must be built ahead of time.
pub const BUILD_AT_ATTACH_MAX: usize = 100_000;

const STAMP_FORMAT: u32 = 1;

/// What a saved graph was built from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexStamp {
    pub format: u32,
    pub items: usize,
    pub dim: usize,
    pub gallery_sha256: String,
    pub ids_sha256: Option<String>,
    pub built_by: String,
    pub build_seconds: f64,
}

/// A gallery's saved graph, as Attach finds it.
pub enum Saved {
    Fresh(usearch::Index),
    /// Built from other contents (the reason, for the error).
    Stale(String),
    Missing,
}

pub fn index_path(gallery: &Path) -> PathBuf {
    with_suffix(gallery, ".hnsw")
}

pub fn stamp_path(gallery: &Path) -> PathBuf {
    with_suffix(gallery, ".hnsw.json")
}

fn load_error(path: &Path, message: impl std::fmt::Display) -> GalleryError {
    GalleryError::Load { path: path.display().to_string(), message: message.to_string() }
}

/// Builds the gallery's graph on `threads` threads and saves it beside the gallery; `progress`
/// is called about twice a second with (items added, items) while it builds.
pub fn build_and_save(gallery_path: &Path, threads: usize, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<IndexStamp, GalleryError> {
    let (mut gallery, Fingerprint { gallery_sha256, ids_sha256 }) = file::load_resolved_fingerprinted(gallery_path)?;
    let started = Instant::now();
    let added = AtomicUsize::new(0);
    let total = gallery.len();
    // Where the build starts, before any builder thread runs (a reporter thread scheduled late
    // on a busy machine would say it started part-way).
    progress(0, total);
    std::thread::scope(|scope| {
        let reporter = scope.spawn(|| {
            loop {
                std::thread::park_timeout(Duration::from_millis(500));
                if added.load(Ordering::Relaxed) >= total {
                    break;
                }
                progress(added.load(Ordering::Relaxed), total);
            }
        });
        let built = gallery.build_hnsw_counting(threads, &added);
        added.store(total, Ordering::Relaxed);
        reporter.thread().unpark();
        built
    })?;
    progress(total, total);
    let index = gallery.hnsw.as_ref().expect("just built");
    // Written under temporary names and renamed, the stamp last: a build stopped halfway never
    // leaves a graph with a stamp that vouches for it.
    let (index_file, stamp_file) = (index_path(gallery_path), stamp_path(gallery_path));
    let partial = with_suffix(&index_file, ".partial");
    let utf8 = |p: &Path| p.to_str().map(str::to_string).ok_or_else(|| load_error(p, "the path is not UTF-8"));
    index.save(&utf8(&partial)?).map_err(|e| GalleryError::Index(e.to_string()))?;
    // The old stamp goes first: it must never vouch for the new graph.
    if stamp_file.exists() {
        std::fs::remove_file(&stamp_file).map_err(|e| load_error(&stamp_file, e))?;
    }
    std::fs::rename(&partial, &index_file).map_err(|e| load_error(&index_file, e))?;
    let stamp = IndexStamp {
        format: STAMP_FORMAT,
        items: total,
        dim: gallery.dim,
        gallery_sha256,
        ids_sha256,
        built_by: format!("myelin {}", env!("CARGO_PKG_VERSION")),
        build_seconds: started.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_vec_pretty(&stamp).map_err(|e| load_error(&stamp_file, e))?;
    let partial = with_suffix(&stamp_file, ".partial");
    std::fs::write(&partial, json).map_err(|e| load_error(&stamp_file, e))?;
    std::fs::rename(&partial, &stamp_file).map_err(|e| load_error(&stamp_file, e))?;
    Ok(stamp)
}

/// The saved graph of `gallery` (loaded from `gallery_path`, with `fingerprint`), if there is one
/// and it was built from these very bytes.
pub fn open_saved(gallery_path: &Path, gallery: &Gallery, fingerprint: &Fingerprint) -> Result<Saved, GalleryError> {
    let (index_file, stamp_file) = (index_path(gallery_path), stamp_path(gallery_path));
    if !stamp_file.is_file() || !index_file.is_file() {
        return Ok(Saved::Missing);
    }
    let text = std::fs::read_to_string(&stamp_file).map_err(|e| load_error(&stamp_file, e))?;
    let stamp: IndexStamp = serde_json::from_str(&text).map_err(|e| load_error(&stamp_file, format!("not an index stamp: {e}")))?;
    if stamp.format != STAMP_FORMAT {
        return Ok(Saved::Stale(format!("its stamp has format {}, this server reads {STAMP_FORMAT}", stamp.format)));
    }
    if fingerprint.gallery_sha256 != stamp.gallery_sha256 || fingerprint.ids_sha256 != stamp.ids_sha256 {
        return Ok(Saved::Stale("the gallery or its ids file changed after the graph was built".into()));
    }
    let utf8 = index_file.to_str().ok_or_else(|| load_error(&index_file, "the path is not UTF-8"))?;
    let index = usearch::Index::restore(utf8).map_err(|e| load_error(&index_file, e))?;
    if index.size() != gallery.len() || index.dimensions() != gallery.dim {
        return Ok(Saved::Stale(format!(
            "the graph holds {} items of dimension {}, the gallery {} of dimension {}",
            index.size(),
            index.dimensions(),
            gallery.len(),
            gallery.dim
        )));
    }
    Ok(Saved::Fresh(index))
}
