//! Gallery files: [N, D] float32 or float16, C order, as .npy or .safetensors (tensor
//! "embeddings"), with ids in `<file>.ids` (one per line) or, without it, the row numbers; and
//! the path rule that keeps a client-given name inside the gallery directory.

use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Gallery, GalleryError};

/// SHA-256 (hex) of the very bytes a gallery was built from: its file and its ids file. Hashed
/// from the bytes in memory, not by reading the files again, so that a file replaced while it
/// loads is never vouched for, and a 3 GB gallery is read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub gallery_sha256: String,
    pub ids_sha256: Option<String>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Resolves a client-given gallery path under `dir`, refusing anything that could leave it.
pub fn resolve(dir: &Path, relative: &str) -> Result<PathBuf, GalleryError> {
    let refuse = |message: &str| GalleryError::Path { path: relative.to_string(), message: message.to_string() };
    let path = Path::new(relative);
    if path.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(refuse("must be relative to the server's gallery directory, without \"..\""));
    }
    let resolved = dir.join(path);
    if !resolved.is_file() {
        return Err(GalleryError::NotFound { path: format!("{relative:?} (in gallery directory {})", dir.display()) });
    }
    // A symbolic link inside the directory must not lead out of it.
    let inside = match (resolved.canonicalize(), dir.canonicalize()) {
        (Ok(file), Ok(dir)) => file.starts_with(dir),
        _ => false,
    };
    if !inside {
        return Err(refuse("leads outside the server's gallery directory"));
    }
    Ok(resolved)
}

/// The ids file of a gallery file: the same name + ".ids".
pub fn ids_path(path: &Path) -> PathBuf {
    with_suffix(path, ".ids")
}

/// A file beside a gallery file: its whole name + `suffix` (".ids", ".hnsw", ...).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.to_path_buf().into_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Loads a gallery file (from [`resolve`]) with its `.ids` file when there is one.
pub fn load_resolved(path: &Path) -> Result<Gallery, GalleryError> {
    let ids = ids_path(path);
    Gallery::load(path, ids.is_file().then_some(ids.as_path()))
}

/// [`load_resolved`], with the fingerprint of the bytes it loaded (for saved graphs, whose stamp
/// must name exactly what is served).
pub fn load_resolved_fingerprinted(path: &Path) -> Result<(Gallery, Fingerprint), GalleryError> {
    let ids = ids_path(path);
    let (gallery, fingerprint) = Gallery::load_bytes(path, ids.is_file().then_some(ids.as_path()), true)?;
    Ok((gallery, fingerprint.expect("asked for")))
}

/// Little-endian float32 or float16 bytes to f32.
fn floats(bytes: &[u8], half: bool) -> Vec<f32> {
    if half {
        bytes.chunks_exact(2).map(|b| f32::from(half::f16::from_le_bytes([b[0], b[1]]))).collect()
    } else {
        bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    }
}

impl Gallery {
    /// Loads `[N, D]` float32 or float16 embeddings from .npy or .safetensors (tensor
    /// "embeddings"); `ids` is a text file with one id per line.
    pub fn load(path: &Path, ids: Option<&Path>) -> Result<Self, GalleryError> {
        Self::load_bytes(path, ids, false).map(|(gallery, _)| gallery)
    }

    fn load_bytes(path: &Path, ids: Option<&Path>, fingerprint: bool) -> Result<(Self, Option<Fingerprint>), GalleryError> {
        let error = |message: String| GalleryError::Load { path: path.display().to_string(), message };
        let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
        let gallery_sha256 = fingerprint.then(|| sha256_hex(&bytes));
        let (data, dim) = if path.extension().is_some_and(|e| e == "safetensors") {
            let tensors = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| error(format!("not a .safetensors file: {e}")))?;
            let view = tensors.tensor("embeddings").map_err(|e| error(format!("tensor \"embeddings\": {e}")))?;
            let shape = view.shape().to_vec();
            if shape.len() != 2 {
                return Err(error(format!("expected an [N, D] tensor, got shape {shape:?}")));
            }
            let data = match view.dtype() {
                safetensors::Dtype::F32 => floats(view.data(), false),
                safetensors::Dtype::F16 => floats(view.data(), true),
                other => return Err(error(format!("dtype {other:?}: expected F32 or F16"))),
            };
            (data, shape[1])
        } else {
            let file = npyz::NpyFile::new(&bytes[..]).map_err(|e| error(format!("not a .npy file: {e}")))?;
            let shape = file.shape().to_vec();
            if shape.len() != 2 || file.order() != npyz::Order::C {
                return Err(error(format!("expected a C-order [N, D] array, got shape {shape:?}")));
            }
            let dtype = file.dtype().descr().trim_matches('\'').to_string();
            let data: Vec<f32> = match dtype.as_str() {
                "<f4" => file.into_vec::<f32>().map_err(|e| error(e.to_string()))?,
                "<f2" => file.into_vec::<half::f16>().map_err(|e| error(e.to_string()))?.into_iter().map(f32::from).collect(),
                other => return Err(error(format!("dtype {other}: expected float32 (<f4) or float16 (<f2)"))),
            };
            (data, shape[1] as usize)
        };
        drop(bytes);
        let ids_text = match ids {
            Some(ids_path) => Some(std::fs::read_to_string(ids_path).map_err(|e| error(format!("ids {}: {e}", ids_path.display())))?),
            None => None,
        };
        let fingerprint = gallery_sha256
            .map(|gallery_sha256| Fingerprint { gallery_sha256, ids_sha256: ids_text.as_deref().map(|t| sha256_hex(t.as_bytes())) });
        let ids = ids_text.map(|text| text.lines().map(str::to_string).collect());
        let gallery = Self::from_vectors(data, dim, ids).map_err(|e| match e {
            GalleryError::Load { message, .. } => error(message),
            other => other,
        })?;
        Ok((gallery, fingerprint))
    }
}
