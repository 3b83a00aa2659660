//! Retrieval galleries: embeddings of candidate items (images, for MEG image retrieval) and their
//! ids, searched by cosine similarity for the top k.
//!
//! * Exact: rows are L2-normalised once at load; a query is one matrix-vector product (faer's
//!   SIMD kernels) streaming the whole gallery from memory, then a k-sized heap. Its speed is
//!   bounded by memory bandwidth (`myelin-bench gallery` reports the achieved GB/s against a
//!   measured read bandwidth).
//! * Approximate: an HNSW graph (usearch, float16 vectors in the graph), built ahead of time and
//!   saved beside the gallery ([`index`]) for galleries too large to scan within a budget
//!   (small ones may still build theirs when they load). The graph proposes
//!   `RERANK_FACTOR * k` candidates, which are rescored exactly in float32; its recall@k
//!   against exact search is measured by the benchmark, not assumed.
//!
//! Files and the path rule for them: [`file`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub mod file;
pub mod index;

#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    #[error("{path:?}: {message}")]
    Path { path: String, message: String },
    #[error("{path} does not exist")]
    NotFound { path: String },
    #[error("{path}: {message}")]
    Load { path: String, message: String },
    #[error("gallery has dimension {gallery}, the model's embedding has {model}")]
    Dimension { gallery: usize, model: usize },
    #[error("building the approximate index: {0}")]
    Index(String),
}

/// Candidates the approximate index proposes per wanted result, rescored exactly.
const RERANK_FACTOR: usize = 4;

/// Threads that may search one HNSW graph at the same time.
const SEARCH_THREADS: usize = 64;

pub struct Gallery {
    pub ids: Vec<String>,
    pub dim: usize,
    /// Row-major [N x dim], each row L2-normalised.
    data: Vec<f32>,
    hnsw: Option<usearch::Index>,
}

/// Total order on f32 scores for the heap (ties: the lower row ranks higher).
struct Score(f32, usize);
impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Score {}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

impl Gallery {
    pub fn from_vectors(mut data: Vec<f32>, dim: usize, ids: Option<Vec<String>>) -> Result<Self, GalleryError> {
        let bad = |message: String| GalleryError::Load { path: "(memory)".into(), message };
        if dim == 0 || !data.len().is_multiple_of(dim) || data.is_empty() {
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

    /// Builds the HNSW graph on `threads` threads (usearch: connectivity 16, expansion 128 when
    /// adding, 64 when searching; float16 vectors in the graph).
    pub fn build_hnsw(&mut self, threads: usize) -> Result<(), GalleryError> {
        self.build_hnsw_counting(threads, &std::sync::atomic::AtomicUsize::new(0))
    }

    /// [`Self::build_hnsw`], counting the items added in `added` as it goes (for progress).
    pub fn build_hnsw_counting(&mut self, threads: usize, added: &std::sync::atomic::AtomicUsize) -> Result<(), GalleryError> {
        let index_error = |e: &dyn std::fmt::Display| GalleryError::Index(e.to_string());
        let options = usearch::IndexOptions {
            dimensions: self.dim,
            metric: usearch::MetricKind::IP,
            quantization: usearch::ScalarKind::F16,
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
            multi: false,
        };
        let index = usearch::Index::new(&options).map_err(|e| index_error(&e))?;
        let threads = threads.max(1);
        // Search slots too: attachments sharing this gallery search it from several inference
        // threads at once, and a search without a free slot fails.
        index.reserve_capacity_and_threads(self.len(), threads.max(SEARCH_THREADS)).map_err(|e| index_error(&e))?;
        let rows: Vec<&[f32]> = self.data.chunks_exact(self.dim).collect();
        let per_thread = rows.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = rows
                .chunks(per_thread)
                .enumerate()
                .map(|(t, chunk)| {
                    let index = &index;
                    scope.spawn(move || {
                        for (i, row) in chunk.iter().enumerate() {
                            index.add((t * per_thread + i) as u64, row).map_err(|e| index_error(&e))?;
                            added.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok::<(), GalleryError>(())
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| h.join().map_err(|_| GalleryError::Index("a build thread panicked".into()))?)
        })?;
        self.hnsw = Some(index);
        Ok(())
    }

    /// Searches through `index` from now on: a graph built for this gallery and saved
    /// ([`index::open_saved`] checks it is this gallery's).
    pub fn use_index(&mut self, index: usearch::Index) -> Result<(), GalleryError> {
        index.reserve_capacity_and_threads(self.len(), SEARCH_THREADS).map_err(|e| GalleryError::Index(e.to_string()))?;
        self.hnsw = Some(index);
        Ok(())
    }

    /// Top-k through the HNSW graph when one was built, exactly otherwise. `scores`: as for
    /// [`Self::search_exact`].
    pub fn search(&self, query: &[f32], k: usize, scores: &mut Vec<f32>) -> Vec<(usize, f32)> {
        if self.hnsw.is_some() { self.search_approx(query, k) } else { self.search_exact(query, k, scores) }
    }

    /// Approximate top-k through the HNSW graph, rescored exactly (exact search when no graph
    /// was built).
    pub fn search_approx(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        let Some(index) = &self.hnsw else {
            return self.search_exact(query, k, &mut Vec::new());
        };
        let mut q = query.to_vec();
        normalise(&mut q);
        let found = match index.search(&q, k * RERANK_FACTOR) {
            Ok(found) => found,
            Err(error) => {
                // Never expected (slots are reserved); exact search is slower but correct.
                tracing::warn!(%error, "HNSW search failed; searching exactly");
                return self.search_exact(query, k, &mut Vec::new());
            }
        };
        let scores: Vec<(usize, f32)> = found
            .keys
            .iter()
            .map(|&key| {
                let i = key as usize;
                (i, dot(&self.data[i * self.dim..(i + 1) * self.dim], &q))
            })
            .collect();
        let mut best = scores;
        best.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        best.truncate(k);
        best
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
    use std::path::Path;

    use sha2::Digest;

    use super::file::{load_resolved, resolve};
    use super::*;

    /// What the server does for an Attach: resolve under the directory, then load.
    fn open(dir: &Path, relative: &str) -> Result<Gallery, GalleryError> {
        load_resolved(&resolve(dir, relative)?)
    }

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
        gallery.build_hnsw(2).unwrap();
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
        while !(10 + header.len() + 1).is_multiple_of(64) {
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
        std::fs::write(dir.join("g.npy.ids"), "cat\ndog\nbird\n").unwrap();
        let gallery = open(&dir, "g.npy").map_err(|e| e.to_string()).unwrap();
        assert_eq!(gallery.ids, vec!["cat", "dog", "bird"]);
        let top = gallery.search_exact(&[0.0, 2.0], 2, &mut Vec::new());
        assert_eq!(gallery.ids[top[0].0], "dog");
        assert!(gallery.check_dimension(3).is_err());
        // The fingerprint is of the bytes that were loaded (here checked against the file's own).
        let (again, fingerprint) = super::file::load_resolved_fingerprinted(&dir.join("g.npy")).unwrap();
        assert_eq!(again.ids, gallery.ids);
        assert_eq!(fingerprint.ids_sha256.as_deref(), Some("564a6a0197d4f845e2c34a59f3354b2a1cbfa97647399692cc1204470a41271f"));
        assert_eq!(fingerprint.gallery_sha256, hex::encode(sha2::Sha256::digest(std::fs::read(&path).unwrap())));
        assert!(Gallery::load(&dir.join("g.npy.ids"), None).is_err());
        assert!(matches!(open(&dir, "../g.npy"), Err(GalleryError::Path { .. })));
        assert!(matches!(open(&dir, "/etc/passwd"), Err(GalleryError::Path { .. })));
        assert!(matches!(open(&dir, "nope.npy"), Err(GalleryError::NotFound { .. })));
        let outside = std::env::temp_dir().join(format!("myelin-gallery-outside-{}.npy", std::process::id()));
        std::fs::copy(&path, &outside).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link.npy")).unwrap();
        assert!(matches!(open(&dir, "link.npy"), Err(GalleryError::Path { .. })), "a link out of the directory is refused");
        std::fs::remove_file(&outside).ok();
        // The same rows as safetensors (float32), header as the format defines it.
        let header = r#"{"embeddings":{"dtype":"F32","shape":[3,2],"data_offsets":[0,24]}}"#;
        let mut st = (header.len() as u64).to_le_bytes().to_vec();
        st.extend_from_slice(header.as_bytes());
        for v in [1.0f32, 0.0, 0.0, 1.0, 0.6, 0.8] {
            st.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(dir.join("g.safetensors"), st).unwrap();
        let st_gallery = open(&dir, "g.safetensors").map_err(|e| e.to_string()).unwrap();
        assert_eq!(st_gallery.ids, vec!["0", "1", "2"]);
        assert_eq!(st_gallery.search_exact(&[0.6, 0.8], 1, &mut Vec::new())[0].0, 2);
        std::fs::remove_dir_all(&dir).ok();
    }
}
