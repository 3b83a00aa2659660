//! Galleries in use, shared by the attachments that ask for the same file and index: a 1 M
//! gallery is 3 GB and its HNSW graph takes minutes to build, so it is loaded once. Entries die
//! with their last attachment; a file rewritten on disk is loaded again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Instant, SystemTime};

use myelin_proto::v1 as pb;

use crate::card::ModelCard;
use crate::decode::gallery::index::{self, Saved};
use crate::decode::gallery::{Gallery, GalleryError, file};

/// A gallery file as loaded: its path, the index asked for, and the size and modification time
/// of the file and of its ids file.
type GalleryKey = (PathBuf, bool, [(u64, Option<SystemTime>); 2]);

#[derive(Debug, thiserror::Error)]
pub enum GalleryCacheError {
    #[error("gallery: model {model} does not output an embedding (task {task})")]
    NotAnEmbedding { model: String, task: &'static str },
    #[error("gallery.index {0} is not a GalleryIndex")]
    UnknownIndex(i32),
    #[error("gallery: {0}")]
    NotFound(#[source] GalleryError),
    #[error("gallery: {0}")]
    Invalid(#[source] GalleryError),
    #[error("gallery {path:?} for model {model}: {source}")]
    Dimension { path: String, model: String, source: GalleryError },
    #[error("gallery {path:?}: {source}")]
    Index { path: String, source: GalleryError },
    #[error("gallery {path:?}: its saved HNSW graph is stale ({why}); rebuild it with `myelin gallery build {file}`")]
    Stale { path: String, why: String, file: String },
    #[error(
        "gallery {path:?} has {items} items: build its HNSW graph ahead of time with `myelin gallery build {file}` (inside Attach it would take minutes; up to {max} items are built here)"
    )]
    NotBuilt { path: String, items: usize, file: String, max: usize },
}

#[derive(Default)]
pub struct GalleryCache {
    loaded: Mutex<HashMap<GalleryKey, Weak<Gallery>>>,
    /// One lock per gallery file while it loads, so two attaches asking for it at once load it
    /// once (the second waits, then shares).
    loading: Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
}

fn file_stamp(path: &Path) -> (u64, Option<SystemTime>) {
    std::fs::metadata(path).map_or((0, None), |m| (m.len(), m.modified().ok()))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GalleryCache {
    /// The gallery `request` names under `dir`, checked against `card`'s embedding: shared with
    /// the attachments already using it, loaded otherwise (holding only that file's load lock).
    /// Blocking: loading a large gallery can take minutes.
    pub fn get(&self, request: &pb::GallerySpec, card: &ModelCard, dir: &Path) -> Result<Arc<Gallery>, GalleryCacheError> {
        let dim =
            card.embedding_dim().ok_or_else(|| GalleryCacheError::NotAnEmbedding { model: card.id.clone(), task: card.task.as_str() })?;
        let approximate = match pb::GalleryIndex::try_from(request.index) {
            Ok(pb::GalleryIndex::Hnsw) => true,
            Ok(_) => false,
            Err(_) => return Err(GalleryCacheError::UnknownIndex(request.index)),
        };
        let load_error = |e: GalleryError| match e {
            GalleryError::NotFound { .. } => GalleryCacheError::NotFound(e),
            _ => GalleryCacheError::Invalid(e),
        };
        let dimension_error = |source| GalleryCacheError::Dimension { path: request.path.clone(), model: card.id.clone(), source };
        let path = file::resolve(dir, &request.path).map_err(load_error)?;
        let key: GalleryKey = (path.clone(), approximate, [file_stamp(&path), file_stamp(&file::ids_path(&path))]);
        let load_lock = lock(&self.loading).entry(path.clone()).or_default().clone();
        let _loading = lock(&load_lock);
        let cached = lock(&self.loaded).get(&key).and_then(Weak::upgrade);
        if let Some(shared) = cached {
            shared.check_dimension(dim).map_err(dimension_error)?;
            tracing::info!(gallery = %request.path, items = shared.len(), approximate, "gallery shared with another attachment");
            return Ok(shared);
        }
        let started = Instant::now();
        // Only a gallery with a saved graph is hashed as it loads (its stamp names the bytes).
        let (mut loaded, fingerprint) = if approximate && index::stamp_path(&path).is_file() {
            file::load_resolved_fingerprinted(&path).map(|(gallery, f)| (gallery, Some(f))).map_err(load_error)?
        } else {
            (file::load_resolved(&path).map_err(load_error)?, None)
        };
        loaded.check_dimension(dim).map_err(dimension_error)?;
        if approximate {
            let index_error = |source| GalleryCacheError::Index { path: request.path.clone(), source };
            let shown = path.display().to_string();
            let saved = match &fingerprint {
                Some(fingerprint) => index::open_saved(&path, &loaded, fingerprint).map_err(index_error)?,
                None => Saved::Missing,
            };
            match saved {
                Saved::Fresh(graph) => {
                    loaded.use_index(graph).map_err(index_error)?;
                    tracing::info!(gallery = %request.path, items = loaded.len(), "saved HNSW graph loaded");
                }
                Saved::Stale(why) => return Err(GalleryCacheError::Stale { path: request.path.clone(), why, file: shown }),
                Saved::Missing if loaded.len() > index::BUILD_AT_ATTACH_MAX => {
                    let (items, max) = (loaded.len(), index::BUILD_AT_ATTACH_MAX);
                    return Err(GalleryCacheError::NotBuilt { path: request.path.clone(), items, file: shown, max });
                }
                Saved::Missing => {
                    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                    tracing::info!(gallery = %request.path, items = loaded.len(), threads, "building the HNSW graph (none saved)");
                    loaded.build_hnsw(threads).map_err(index_error)?;
                }
            }
        }
        tracing::info!(gallery = %request.path, items = loaded.len(), dim, approximate, seconds = started.elapsed().as_secs_f64(), "gallery loaded");
        let shared = Arc::new(loaded);
        let mut loaded = lock(&self.loaded);
        loaded.retain(|_, weak| weak.strong_count() > 0);
        loaded.insert(key, Arc::downgrade(&shared));
        Ok(shared)
    }
}

impl From<GalleryCacheError> for crate::session::SessionError {
    fn from(error: GalleryCacheError) -> Self {
        use crate::session::SessionError;
        match error {
            GalleryCacheError::NotFound(_) => SessionError::NotFound(error.to_string()),
            GalleryCacheError::Index { .. } => SessionError::Unavailable(error.to_string()),
            GalleryCacheError::Stale { .. } | GalleryCacheError::NotBuilt { .. } => SessionError::FailedPrecondition(error.to_string()),
            _ => SessionError::InvalidArgument(error.to_string()),
        }
    }
}
