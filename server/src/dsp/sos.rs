//! [`SosFilter`]: causal IIR filtering in second-order sections (direct form II transposed, the
//! same recurrence as `scipy.signal.sosfilt`).
//!
//! The arithmetic is hand-written on purpose: it is a few lines, it must be bit-for-bit
//! predictable against scipy (the parity test), and it must not allocate per sample.

/// A cascade of biquads applied independently to each of `n_channels` channels.
#[derive(Debug, Clone)]
pub struct SosFilter {
    /// Normalised sections [b0, b1, b2, a1, a2] (a0 divided out).
    sections: Vec<[f64; 5]>,
    /// State per channel per section: z1, z2.
    state: Vec<[f64; 2]>,
    n_channels: usize,
}

impl SosFilter {
    /// `sos` rows are scipy's [b0, b1, b2, a0, a1, a2]. An empty list is the identity filter.
    pub fn new(sos: &[[f64; 6]], n_channels: usize) -> Self {
        let sections: Vec<[f64; 5]> = sos
            .iter()
            .map(|s| {
                let a0 = s[3];
                [s[0] / a0, s[1] / a0, s[2] / a0, s[4] / a0, s[5] / a0]
            })
            .collect();
        let state = vec![[0.0; 2]; sections.len() * n_channels];
        Self { sections, state, n_channels }
    }

    /// Filters one sample of every channel in place (`frame.len() == n_channels`).
    #[inline]
    pub fn process_frame(&mut self, frame: &mut [f32]) {
        if self.sections.is_empty() {
            return;
        }
        let n_sections = self.sections.len();
        for (channel, value) in frame.iter_mut().enumerate().take(self.n_channels) {
            let mut x = f64::from(*value);
            let states = &mut self.state[channel * n_sections..(channel + 1) * n_sections];
            for (section, z) in self.sections.iter().zip(states.iter_mut()) {
                let [b0, b1, b2, a1, a2] = *section;
                let y = b0 * x + z[0];
                z[0] = b1 * x - a1 * y + z[1];
                z[1] = b2 * x - a2 * y;
                x = y;
            }
            *value = x as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_filter_passes_samples_through() {
        let mut filter = SosFilter::new(&[], 2);
        let mut frame = [1.5, -2.0];
        filter.process_frame(&mut frame);
        assert_eq!(frame, [1.5, -2.0]);
    }

    #[test]
    fn first_order_section_matches_hand_computed_recurrence() {
        // y[n] = 0.5 x[n] + 0.5 x[n-1] (moving average): impulse response 0.5, 0.5, 0.
        let mut filter = SosFilter::new(&[[0.5, 0.5, 0.0, 1.0, 0.0, 0.0]], 1);
        let outputs: Vec<f32> = [1.0f32, 0.0, 0.0]
            .iter()
            .map(|&x| {
                let mut f = [x];
                filter.process_frame(&mut f);
                f[0]
            })
            .collect();
        assert_eq!(outputs, vec![0.5, 0.5, 0.0]);
    }
}
