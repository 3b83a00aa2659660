//! What a model's inference costs per batch size: measured at warm-up, then kept up to date from
//! every run (exponentially weighted moving average), so that the scheduler knows whether a
//! window can still make its deadline and how many windows a batch can take.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::backend::Backend;
use crate::card::ModelCard;

/// Weight of the newest run in the moving average.
const EWMA_WEIGHT: f64 = 0.1;

pub struct CostModel {
    /// Estimated nanoseconds of one run, by batch size - 1.
    ns: Vec<AtomicU64>,
    model: String,
}

impl CostModel {
    /// Costs for batches of 1..=`max_batch`, from measured (batch size, ns) pairs (interpolated
    /// linearly between them, extrapolated from the last two beyond them).
    pub fn from_measured(model: &str, max_batch: usize, measured: &[(usize, u64)]) -> Self {
        let mut points: Vec<(usize, u64)> = measured.iter().copied().filter(|&(n, _)| n >= 1).collect();
        points.sort_unstable();
        let estimate = |n: usize| -> u64 {
            match points.iter().position(|&(size, _)| size >= n) {
                None if points.is_empty() => 0,
                None if points.len() == 1 => points[0].1 * n as u64 / points[0].0 as u64,
                Some(0) => points[0].1,
                Some(i) if points[i].0 == n => points[i].1,
                found => {
                    let i = found.unwrap_or(points.len() - 1).max(1);
                    let ((n0, c0), (n1, c1)) = (points[i - 1], points[i]);
                    let slope = (c1 as f64 - c0 as f64) / (n1 - n0).max(1) as f64;
                    (c0 as f64 + slope * (n as f64 - n0 as f64)).max(c0.min(c1) as f64) as u64
                }
            }
        };
        let model_costs = Self { ns: (1..=max_batch.max(1)).map(|n| AtomicU64::new(estimate(n))).collect(), model: model.to_string() };
        model_costs.export();
        model_costs
    }

    /// Estimated nanoseconds of one run of `batch` windows (the largest batch's beyond it).
    pub fn estimate_ns(&self, batch: usize) -> u64 {
        let i = batch.clamp(1, self.ns.len()) - 1;
        self.ns[i].load(Ordering::Relaxed)
    }

    /// Takes one measured run of `batch` windows into the average. Concurrent updates from two
    /// inference threads may lose one of them, which an average can afford.
    pub fn observe(&self, batch: usize, ns: u64) {
        let i = batch.clamp(1, self.ns.len()) - 1;
        let old = self.ns[i].load(Ordering::Relaxed) as f64;
        let new = if old == 0.0 { ns as f64 } else { old + EWMA_WEIGHT * (ns as f64 - old) };
        self.ns[i].store(new as u64, Ordering::Relaxed);
    }

    /// Sets the `myelin_model_inference_estimate_seconds` gauge for batch sizes 1, 2, 4, ... and
    /// the largest (a few label values per model, not one per size).
    pub fn export(&self) {
        let max = self.ns.len();
        let sizes = std::iter::successors(Some(1usize), |n| n.checked_mul(2)).take_while(|&n| n < max).chain([max]);
        for n in sizes {
            crate::metrics::inference_estimate(&self.model, n, self.estimate_ns(n));
        }
    }
}

/// Runs the model on zeros at batch sizes 1, 2, 4, ... and its largest, a few times each, and
/// keeps the fastest run of each size (the first runs also warm the model up).
pub fn measure(backend: &mut dyn Backend, card: &ModelCard) -> anyhow::Result<CostModel> {
    let max = card.input.max_batch.max(1);
    let per_window = card.channels.len() * card.window_samples();
    let zeros = vec![0.0f32; per_window * max];
    let sizes: Vec<usize> = std::iter::successors(Some(1usize), |n| n.checked_mul(2)).take_while(|&n| n < max).chain([max]).collect();
    let mut measured = Vec::with_capacity(sizes.len());
    for n in sizes {
        let mut fastest = u64::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            backend
                .infer(&zeros[..n * per_window], n, &[])
                .map_err(|e| anyhow::anyhow!("model {}: a run of {n} windows at warm-up failed: {e}", card.id))?;
            fastest = fastest.min(started.elapsed().as_nanos() as u64);
        }
        measured.push((n, fastest));
    }
    tracing::debug!(model = %card.id, ?measured, "inference cost by batch size (ns)");
    Ok(CostModel::from_measured(&card.id, max, &measured))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_between_measured_sizes_and_averages_runs() {
        let cost = CostModel::from_measured("m", 8, &[(1, 100), (2, 150), (4, 250), (8, 450)]);
        assert_eq!(cost.estimate_ns(1), 100);
        assert_eq!(cost.estimate_ns(3), 200);
        assert_eq!(cost.estimate_ns(6), 350);
        assert_eq!(cost.estimate_ns(8), 450);
        assert_eq!(cost.estimate_ns(100), 450);
        cost.observe(1, 200);
        assert_eq!(cost.estimate_ns(1), 110);
        let one = CostModel::from_measured("m", 4, &[(1, 100)]);
        assert_eq!(one.estimate_ns(3), 300);
        let unmeasured = CostModel::from_measured("m", 4, &[]);
        assert_eq!(unmeasured.estimate_ns(2), 0);
        unmeasured.observe(2, 70);
        assert_eq!(unmeasured.estimate_ns(2), 70);
    }
}
