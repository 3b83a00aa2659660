//! Robust scaling fitted on the session itself: per channel, the median and interquartile range
//! of the first samples an attachment filters, then frozen (brainmagick fits its robust scaler
//! per recording; online, the first seconds are what a session has). Quantiles use numpy's
//! default linear interpolation, so the offline twin computes the same statistics.
//!
//! Written here: a sort and two interpolations per channel, once per attachment.

/// The first `needed` filtered frames of an attachment, kept until they are all in.
pub struct RobustFit {
    needed: usize,
    filled: usize,
    width: usize,
    /// Channel-major [width x needed], allocated once at Attach.
    values: Vec<f32>,
}

impl RobustFit {
    pub fn new(width: usize, needed: usize) -> Self {
        Self { needed: needed.max(1), filled: 0, width, values: vec![0.0; width * needed.max(1)] }
    }

    /// Bytes the fit keeps until it completes.
    pub fn bytes(width: usize, needed: usize) -> u64 {
        (width * needed.max(1) * 4) as u64
    }

    /// Takes one filtered frame; with the last one needed, returns each channel's (median,
    /// interquartile range), the range 1 where it is 0 (a flat channel is left unscaled). A
    /// frame that is not finite starts the fit again from the next one: statistics that saw a
    /// NaN would scale every later window to NaN.
    pub fn push(&mut self, frame: &[f32]) -> Option<Vec<(f64, f64)>> {
        if self.filled >= self.needed {
            return None;
        }
        if !frame.iter().all(|v| v.is_finite()) {
            self.filled = 0;
            return None;
        }
        for (ch, &v) in frame.iter().enumerate().take(self.width) {
            self.values[ch * self.needed + self.filled] = v;
        }
        self.filled += 1;
        (self.filled == self.needed).then(|| {
            (0..self.width)
                .map(|ch| {
                    let mut column: Vec<f64> =
                        self.values[ch * self.needed..(ch + 1) * self.needed].iter().map(|&v| f64::from(v)).collect();
                    column.sort_unstable_by(f64::total_cmp);
                    let (q25, q50, q75) = (quantile(&column, 0.25), quantile(&column, 0.5), quantile(&column, 0.75));
                    let range = q75 - q25;
                    (q50, if range > 0.0 && range.is_finite() { range } else { 1.0 })
                })
                .collect()
        })
    }
}

/// numpy.percentile(sorted, 100 q) with its default ("linear") interpolation.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let (low, high) = (position.floor() as usize, position.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (position - low as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_iqr_match_numpy_and_a_flat_channel_keeps_unit_scale() {
        // numpy.percentile([1, 2, 3, 4, 10], [25, 50, 75]) = [2, 3, 4].
        let mut fit = RobustFit::new(2, 5);
        let mut out = None;
        for v in [1.0f32, 2.0, 3.0, 4.0, 10.0] {
            out = fit.push(&[v, 7.0]);
        }
        let stats = out.expect("complete after five frames");
        assert_eq!(stats, vec![(3.0, 2.0), (7.0, 1.0)]);
        assert!(fit.push(&[0.0, 0.0]).is_none(), "frozen once fitted");
    }

    #[test]
    fn a_non_finite_frame_starts_the_fit_again() {
        let mut fit = RobustFit::new(1, 3);
        assert!(fit.push(&[1.0]).is_none() && fit.push(&[2.0]).is_none());
        assert!(fit.push(&[f32::NAN]).is_none(), "not counted");
        assert!(fit.push(&[10.0]).is_none() && fit.push(&[20.0]).is_none(), "started again: two of three");
        let stats = fit.push(&[30.0]).expect("complete with three finite frames after the NaN");
        assert_eq!(stats, vec![(20.0, 10.0)]);
    }
}
