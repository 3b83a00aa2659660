//! `myelin-bench gallery`: retrieval gallery search at 10 k, 100 k and 1 M entries of dimension
//! 768 (DINOv2-base sized), in process: exact cosine top-5 (one matrix-vector product over the
//! whole gallery, so memory-bandwidth bound: the achieved GB/s is compared with this machine's
//! measured single-thread read bandwidth) and HNSW (build time, query time, recall@5 against
//! exact search).

use std::time::Instant;

use myelin_server::decode::gallery::Gallery;

const DIM: usize = 768;
const K: usize = 5;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// Single-thread read bandwidth: xor-fold a 1 GiB buffer of u64 (integer ops vectorise freely),
/// best of 5, in GB/s.
fn read_bandwidth() -> f64 {
    let buffer: Vec<u64> = (0..(1u64 << 27)).collect();
    let mut best = f64::INFINITY;
    let mut total = 0u64;
    for _ in 0..5 {
        let t = Instant::now();
        let mut acc = [0u64; 8];
        for chunk in buffer.chunks_exact(8) {
            for (a, v) in acc.iter_mut().zip(chunk) {
                *a ^= v;
            }
        }
        total ^= acc.iter().fold(0, |x, y| x ^ y);
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(total);
    (buffer.len() * 8) as f64 / best / 1e9
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

pub fn run(hnsw_up_to: usize) -> anyhow::Result<()> {
    let bandwidth = read_bandwidth();
    println!("myelin-bench gallery: dimension {DIM}, top-{K}, float32; measured single-thread read bandwidth {bandwidth:.1} GB/s");
    println!(
        "{:>9} {:>9} {:>11} {:>11} {:>9} {:>8} | {:>10} {:>11} {:>9}",
        "entries", "MB", "exact p50", "exact p99", "GB/s", "of peak", "hnsw build", "hnsw p50", "recall@5"
    );
    for &n in &[10_000usize, 100_000, 1_000_000] {
        let mut gallery = Gallery::from_vectors(random(n * DIM, n as u64), DIM, None)?;
        let queries = random(100 * DIM, 7);
        let mut scores = Vec::new();
        let mut exact_times = Vec::new();
        let mut exact_results = Vec::new();
        for q in queries.chunks_exact(DIM) {
            let t = Instant::now();
            let top = gallery.search_exact(q, K, &mut scores);
            exact_times.push(t.elapsed().as_secs_f64());
            exact_results.push(top.iter().map(|x| x.0).collect::<Vec<_>>());
        }
        let p50 = percentile(exact_times.clone(), 0.5);
        let p99 = percentile(exact_times, 0.99);
        let gbs = gallery.bytes() as f64 / p50 / 1e9;
        let approx = if n <= hnsw_up_to {
            let t = Instant::now();
            gallery.build_hnsw(64, 1);
            let build = t.elapsed().as_secs_f64();
            let mut times = Vec::new();
            let mut hits = 0;
            for (q, exact) in queries.chunks_exact(DIM).zip(&exact_results) {
                let t = Instant::now();
                let top = gallery.search_approx(q, K);
                times.push(t.elapsed().as_secs_f64());
                hits += top.iter().filter(|x| exact.contains(&x.0)).count();
            }
            format!("{:>9.1}s {:>9.3}ms {:>9.3}", build, percentile(times, 0.5) * 1e3, hits as f64 / (exact_results.len() * K) as f64)
        } else {
            format!("{:>10} {:>11} {:>9}", "not built", "-", "-")
        };
        println!(
            "{:>9} {:>9.0} {:>9.3}ms {:>9.3}ms {:>9.1} {:>7.0}% | {approx}",
            n,
            gallery.bytes() as f64 / 1e6,
            p50 * 1e3,
            p99 * 1e3,
            gbs,
            gbs / bandwidth * 100.0
        );
    }
    Ok(())
}
