//! `myelin-bench gallery`: retrieval gallery search at 10 k, 100 k and 1 M entries of dimension
//! 768 (DINOv2-base sized), in process, on the code the server runs:
//! * exact cosine top-5 (one matrix-vector product over the whole gallery, memory-bandwidth
//!   bound): achieved GB/s next to this machine's measured read bandwidth;
//! * HNSW (usearch, built on every core): build time, query time, recall@5 against exact.
//!
//! The bandwidth probe reads a 1 GiB buffer (far larger than any cache) with five kernels and
//! keeps the fastest, best of 3 runs each, on one thread (a query runs on one inference thread):
//! an xor-fold of u64 words over one, four or eight sequential streams at once, a
//! 16-accumulator f32 sum (all read-only, vectorised by the compiler), and `copy_from_slice`
//! (glibc memcpy, counted as bytes read). This machine's
//! bandwidth drifts by tens of percent from minute to minute (a shared VM), so the probe runs
//! again right before each gallery size's queries, and the exact search's best query time is
//! compared with it (best against best).

use std::time::Instant;

use myelin_server::decode::gallery::Gallery;

const DIM: usize = 768;
const K: usize = 5;
const QUERIES: usize = 100;

struct Rng(u64);

impl Rng {
    /// Uniform in [-0.5, 0.5) (xorshift64: fast enough to fill 3 GB).
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// `n` vectors: isotropic noise ("random"), or a 32-dimensional latent through a fixed random
/// linear map plus 50 % isotropic noise ("structured", like image-model embeddings, which
/// concentrate near a low-dimensional set).
fn vectors(n: usize, structured: bool, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed.max(1) * 0x9E37_79B9_7F4A_7C15);
    if !structured {
        return (0..n * DIM).map(|_| rng.next()).collect();
    }
    const LATENT: usize = 32;
    let mut basis_rng = Rng(0xB5AD_4ECE_DA1C_E2A9);
    let basis: Vec<f32> = (0..LATENT * DIM).map(|_| basis_rng.next()).collect();
    let mut out = Vec::with_capacity(n * DIM);
    let mut latent = [0.0f32; LATENT];
    for _ in 0..n {
        latent.iter_mut().for_each(|v| *v = rng.next());
        for d in 0..DIM {
            let signal: f32 = (0..LATENT).map(|l| latent[l] * basis[l * DIM + d]).sum();
            out.push(signal + 0.6 * rng.next());
        }
    }
    out
}

fn best_of<F: FnMut()>(mut f: F) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn xor_fold(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    for chunk in words.chunks_exact(8) {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a ^= v;
        }
    }
    acc.iter().fold(0, |x, y| x ^ y)
}

/// Xor-fold of `STREAMS` equal parts of `words` at once: several sequential streams in flight,
/// as a matrix-vector product reading several rows together has (one stream alone leaves the
/// core's memory parallelism unused).
fn xor_fold_streams<const STREAMS: usize>(words: &[u64]) -> u64 {
    let part = words.len() / STREAMS / 8 * 8;
    let parts: [&[u64]; STREAMS] = std::array::from_fn(|i| &words[i * part..(i + 1) * part]);
    let mut acc = [[0u64; 8]; STREAMS];
    for offset in (0..part).step_by(8) {
        for (a, p) in acc.iter_mut().zip(&parts) {
            for (x, v) in a.iter_mut().zip(&p[offset..offset + 8]) {
                *x ^= v;
            }
        }
    }
    acc.iter().flatten().fold(0, |x, y| x ^ y)
}

fn sum16(values: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    for chunk in values.chunks_exact(16) {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    acc.iter().sum()
}

const PROBE_BYTES: usize = 1 << 30;

/// Buffers of the bandwidth probe, allocated once.
struct Probe {
    words: Vec<u64>,
    floats: Vec<f32>,
    copy_target: Vec<u64>,
}

impl Probe {
    fn new() -> Self {
        Self {
            words: (0..(PROBE_BYTES / 8) as u64).collect(),
            floats: (0..PROBE_BYTES / 4).map(|i| i as f32).collect(),
            copy_target: vec![1u64; PROBE_BYTES / 8],
        }
    }
}

/// Read bandwidth in GB/s: (one thread, all threads, which kernel won on one thread).
fn read_bandwidth(probe: &mut Probe) -> (f64, f64, &'static str) {
    const BYTES: usize = PROBE_BYTES;
    let Probe { words, floats, copy_target } = probe;
    let (words, floats) = (&*words, &*floats);
    let gbs = |seconds: f64| BYTES as f64 / seconds / 1e9;
    let single = [
        (
            "xor-fold",
            gbs(best_of(|| {
                std::hint::black_box(xor_fold(words));
            })),
        ),
        (
            "xor 4-stream",
            gbs(best_of(|| {
                std::hint::black_box(xor_fold_streams::<4>(words));
            })),
        ),
        (
            "xor 8-stream",
            gbs(best_of(|| {
                std::hint::black_box(xor_fold_streams::<8>(words));
            })),
        ),
        (
            "f32 sum",
            gbs(best_of(|| {
                std::hint::black_box(sum16(floats));
            })),
        ),
        (
            "memcpy",
            gbs(best_of(|| {
                copy_target.copy_from_slice(words);
                std::hint::black_box(&*copy_target);
            })),
        ),
    ];
    let (kernel, one) = single.iter().copied().fold(("", 0.0), |best, k| if k.1 > best.1 { k } else { best });
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = words.len().div_ceil(threads);
    let all = gbs(best_of(|| {
        std::thread::scope(|s| {
            for part in words.chunks(per_thread) {
                s.spawn(move || std::hint::black_box(xor_fold(part)));
            }
        })
    }));
    (one, all, kernel)
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

pub fn run(hnsw_up_to: usize, data: &str, max_entries: usize) -> anyhow::Result<()> {
    let structured = match data {
        "structured" => true,
        "random" => false,
        other => anyhow::bail!("--data {other:?}: expected structured or random"),
    };
    let mut probe = Probe::new();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("myelin-bench gallery: dimension {DIM}, top-{K}, float32, {data} data, {QUERIES} queries, one thread per query");
    println!(
        "{:>9} {:>7} {:>10} {:>10} {:>10} {:>19} {:>9} | {:>10} {:>9} {:>9} {:>9}",
        "entries", "MB", "exact p50", "exact p99", "GB/s best", "probe 1-thr", "of probe", "hnsw build", "hnsw p50", "hnsw p99", "recall@5"
    );
    for &n in [10_000usize, 100_000, 1_000_000].iter().filter(|&&n| n <= max_entries) {
        let mut gallery = Gallery::from_vectors(vectors(n, structured, n as u64), DIM, None)?;
        // Queries: new vectors from the gallery's distribution, plus noise (a decoder's prediction
        // of an unseen item), so the nearest neighbours are not trivially the query itself.
        let mut rng = Rng(7);
        let stored = vectors(QUERIES, structured, 3);
        let queries: Vec<f32> = stored.iter().map(|v| v + 0.3 * rng.next()).collect();
        let mut scores = Vec::new();
        let mut exact_times = Vec::new();
        let mut exact_results = Vec::new();
        let (before, _, _) = read_bandwidth(&mut probe);
        for q in queries.chunks_exact(DIM) {
            let t = Instant::now();
            let top = gallery.search_exact(q, K, &mut scores);
            exact_times.push(t.elapsed().as_secs_f64());
            exact_results.push(top.iter().map(|x| x.0).collect::<Vec<_>>());
        }
        let (one, all, kernel) = read_bandwidth(&mut probe);
        let p50 = percentile(exact_times.clone(), 0.5);
        let best = percentile(exact_times.clone(), 0.0);
        let p99 = percentile(exact_times, 0.99);
        let gbs = gallery.bytes() as f64 / best / 1e9;
        let approx = if n <= hnsw_up_to {
            let t = Instant::now();
            gallery.build_hnsw(threads)?;
            let build = t.elapsed().as_secs_f64();
            let mut times = Vec::new();
            let mut hits = 0;
            for (q, exact) in queries.chunks_exact(DIM).zip(&exact_results) {
                let t = Instant::now();
                let top = gallery.search_approx(q, K);
                times.push(t.elapsed().as_secs_f64());
                hits += top.iter().filter(|x| exact.contains(&x.0)).count();
            }
            format!(
                "{:>9.1}s {:>7.3}ms {:>7.3}ms {:>9.3}",
                build,
                percentile(times.clone(), 0.5) * 1e3,
                percentile(times, 0.99) * 1e3,
                hits as f64 / (exact_results.len() * K) as f64
            )
        } else {
            format!("{:>10} {:>9} {:>9} {:>9}", "not built", "-", "-", "-")
        };
        // The probe ran just before and just after the queries: compare with the faster of the two.
        let one = one.max(before);
        println!(
            "{:>9} {:>7.0} {:>8.3}ms {:>8.3}ms {:>10.1} {:>5.1} ({:<12}) {:>8.0}% | {approx}",
            n,
            gallery.bytes() as f64 / 1e6,
            p50 * 1e3,
            p99 * 1e3,
            gbs,
            one,
            kernel,
            gbs / one * 100.0
        );
        eprintln!("  (probe on {threads} threads: {all:.1} GB/s)");
    }
    Ok(())
}
