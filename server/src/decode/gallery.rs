//! Retrieval galleries: embeddings of candidate items (images, for MEG image retrieval) and their
//! ids, searched by cosine similarity for the top k.
//!
//! * Exact: rows are L2-normalised once at load; a query is one matrix-vector product (faer's
//!   SIMD kernels) streaming the whole gallery from memory, then a k-sized heap. Its speed is
//!   bounded by memory bandwidth (myelin-bench gallery reports the achieved GB/s).
//! * Approximate: an HNSW graph (instant-distance) per gallery, for galleries too large to scan
//!   within a budget; its recall@k against exact search is measured, not assumed.
//!
//! Galleries load from .npy (float32 or float16, [N, D], C order) with ids from a text file
//! (one per line), or default ids "0".."N-1".

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    #[error("gallery {path}: {message}")]
    Load { path: String, message: String },
    #[error("gallery has dimension {gallery}, the model's embedding has {model}")]
    Dimension { gallery: usize, model: usize },
}

/// A unit vector for the HNSW graph (distance = 1 - cosine).
#[derive(Clone)]
struct Unit(Vec<f32>);

impl instant_distance::Point for Unit {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - dot(&self.0, &other.0)
    }
}

/// Dot product with eight independent accumulators, so the compiler vectorises it (a plain
/// iterator sum must keep float additions in order and stays scalar).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (chunks_a, chunks_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = chunks_a.remainder().iter().zip(chunks_b.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in chunks_a.zip(chunks_b) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

pub struct Gallery {
    pub ids: Vec<String>,
    pub dim: usize,
    /// Row-major [N x dim], each row L2-normalised.
    data: Vec<f32>,
    hnsw: Option<instant_distance::HnswMap<Unit, u32>>,
}

/// Total order on f32 scores for the heap.
#[derive(PartialEq, PartialOrd)]
struct Score(f32, usize);
impl Eq for Score {}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

impl Gallery {
    pub fn from_vectors(mut data: Vec<f32>, dim: usize, ids: Option<Vec<String>>) -> Result<Self, GalleryError> {
        let bad = |message: String| GalleryError::Load { path: "(memory)".into(), message };
        if dim == 0 || data.len() % dim != 0 {
            return Err(bad(format!("{} values do not form rows of {dim}", data.len())));
        }
        let n = data.len() / dim;
        let ids = ids.unwrap_or_else(|| (0..n).map(|i| i.to_string()).collect());
        if ids.len() != n {
            return Err(bad(format!("{} ids for {n} embeddings", ids.len())));
        }
        if data.iter().any(|v| !v.is_finite()) {
            return Err(bad("non-finite values".into()));
        }
        for row in data.chunks_exact_mut(dim) {
            normalise(row);
        }
        Ok(Self { ids, dim, data, hnsw: None })
    }

    /// Loads `[N, D]` float32 or float16 embeddings; `ids` is a text file with one id per line.
    pub fn load(npy: &Path, ids: Option<&Path>) -> Result<Self, GalleryError> {
        let error = |message: String| GalleryError::Load { path: npy.display().to_string(), message };
        let bytes = std::fs::read(npy).map_err(|e| error(e.to_string()))?;
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
        let ids = match ids {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| error(format!("ids {}: {e}", path.display())))?
                    .lines()
                    .map(str::to_string)
                    .collect(),
            ),
            None => None,
        };
        Self::from_vectors(data, shape[1] as usize, ids).map_err(|e| match e {
            GalleryError::Load { message, .. } => error(message),
            other => other,
        })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Bytes one exact search reads.
    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }

    pub fn check_dimension(&self, model_dim: usize) -> Result<(), GalleryError> {
        if self.dim == model_dim { Ok(()) } else { Err(GalleryError::Dimension { gallery: self.dim, model: model_dim }) }
    }

    /// Exact top-k by cosine similarity. `scores` is a reusable buffer (N values).
    pub fn search_exact(&self, query: &[f32], k: usize, scores: &mut Vec<f32>) -> Vec<(usize, f32)> {
        let n = self.len();
        let mut q = query.to_vec();
        normalise(&mut q);
        scores.clear();
        scores.resize(n, 0.0);
        let gallery = faer::MatRef::from_row_major_slice(&self.data, n, self.dim);
        let q = faer::MatRef::from_column_major_slice(&q, self.dim, 1);
        let out = faer::MatMut::from_column_major_slice_mut(scores, n, 1);
        faer::linalg::matmul::matmul(out, faer::Accum::Replace, gallery, q, 1.0f32, faer::Par::Seq);
        top_k(scores, k)
    }

    /// Builds the HNSW graph (minutes for hundreds of thousands of items).
    pub fn build_hnsw(&mut self, ef_construction: usize, seed: u64) {
        let points: Vec<Unit> = self.data.chunks_exact(self.dim).map(|r| Unit(r.to_vec())).collect();
        let values: Vec<u32> = (0..points.len() as u32).collect();
        let map = instant_distance::Builder::default().ef_construction(ef_construction).ef_search(ef_construction).seed(seed).build(points, values);
        self.hnsw = Some(map);
    }

    pub fn has_hnsw(&self) -> bool {
        self.hnsw.is_some()
    }

    /// Approximate top-k through the HNSW graph (exact search when none was built).
    pub fn search_approx(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        let Some(map) = &self.hnsw else {
            return self.search_exact(query, k, &mut Vec::new());
        };
        let mut q = query.to_vec();
        normalise(&mut q);
        let mut search = instant_distance::Search::default();
        map.search(&Unit(q), &mut search).take(k).map(|item| (*item.value as usize, 1.0 - item.distance)).collect()
    }
}

/// The k largest scores, best first (a k-sized heap: no allocation proportional to N).
fn top_k(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut heap: BinaryHeap<Reverse<Score>> = BinaryHeap::with_capacity(k + 1);
    for (i, &s) in scores.iter().enumerate() {
        if heap.len() < k {
            heap.push(Reverse(Score(s, i)));
        } else if heap.peek().is_some_and(|Reverse(worst)| s > worst.0) {
            heap.pop();
            heap.push(Reverse(Score(s, i)));
        }
    }
    let mut out: Vec<(usize, f32)> = heap.into_iter().map(|Reverse(Score(s, i))| (i, s)).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.max(1);
        (0..n * dim)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 20_000) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn exact_search_finds_the_planted_item_first() {
        let dim = 32;
        let data = random(1000, dim, 3);
        let gallery = Gallery::from_vectors(data.clone(), dim, None).unwrap();
        let mut query: Vec<f32> = data[417 * dim..418 * dim].iter().map(|v| v * 3.0 + 0.01).collect();
        query[0] += 0.05;
        let top = gallery.search_exact(&query, 5, &mut Vec::new());
        assert_eq!(top[0].0, 417);
        assert!(top[0].1 > 0.99);
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
        assert_eq!(top.len(), 5);
    }

    #[test]
    fn top_k_matches_a_full_sort() {
        let scores = random(500, 1, 9);
        let mut sorted: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
        sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
        assert_eq!(top_k(&scores, 7), sorted[..7].to_vec());
    }

    #[test]
    fn hnsw_recall_is_high_on_random_data() {
        let dim = 16;
        let mut gallery = Gallery::from_vectors(random(800, dim, 5), dim, None).unwrap();
        gallery.build_hnsw(64, 1);
        let queries = random(50, dim, 77);
        let mut hits = 0;
        for q in queries.chunks_exact(dim) {
            let exact: Vec<usize> = gallery.search_exact(q, 5, &mut Vec::new()).iter().map(|x| x.0).collect();
            hits += gallery.search_approx(q, 5).iter().filter(|x| exact.contains(&x.0)).count();
        }
        let recall = hits as f64 / (50.0 * 5.0);
        assert!(recall > 0.8, "recall@5 {recall}");
    }

    #[test]
    fn loads_float16_npy_with_ids_and_checks_dimensions() {
        let dir = std::env::temp_dir().join(format!("myelin-gallery-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("g.npy");
        let values: Vec<half::f16> = [1.0f32, 0.0, 0.0, 1.0, 0.6, 0.8].iter().map(|&v| half::f16::from_f32(v)).collect();
        // A .npy file as numpy writes it: magic, version 1.0, padded header dict, data.
        let mut header = "{'descr': '<f2', 'fortran_order': False, 'shape': (3, 2), }".to_string();
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&path, bytes).unwrap();
        std::fs::write(dir.join("ids.txt"), "cat\ndog\nbird\n").unwrap();
        let gallery = Gallery::load(&path, Some(&dir.join("ids.txt"))).map_err(|e| e.to_string()).unwrap();
        assert_eq!(gallery.ids, vec!["cat", "dog", "bird"]);
        let top = gallery.search_exact(&[0.0, 2.0], 2, &mut Vec::new());
        assert_eq!(gallery.ids[top[0].0], "dog");
        assert!(gallery.check_dimension(3).is_err());
        assert!(Gallery::load(&dir.join("ids.txt"), None).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
