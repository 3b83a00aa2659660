//! [`SosFilter`]: causal IIR filtering in second-order sections (direct form II transposed, the
//! same recurrence as `scipy.signal.sosfilt`).
//!
//! The arithmetic is hand-written on purpose: it is a few lines, it must be bit-for-bit
//! predictable against scipy (the parity test), and it must not allocate per sample.
//!
//! A non-finite value inside a recursive filter's state stays there for ever (every later output
//! is NaN), so the filter checks its state as it goes and starts again from rest when it is not
//! finite; its caller then refuses the windows within [`SosFilter::settling_samples`] of it.

/// The longest settling time reported, in seconds: past it, a filter's impulse response is taken
/// to have died out (a 0.1 Hz high-pass, the slowest a card designs, needs about 10 s).
pub const MAX_SETTLING_S: f64 = 30.0;

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

    /// Filters one sample of every channel in place (`frame.len() == n_channels`). False when
    /// an output is not finite (its state stopped being finite): the filter is then reset to
    /// rest, every channel of it, and the frame set to 0.
    #[inline]
    #[must_use]
    pub fn process_frame(&mut self, frame: &mut [f32]) -> bool {
        if self.sections.is_empty() {
            return frame.iter().all(|v| v.is_finite()) || self.reset(frame);
        }
        let n_sections = self.sections.len();
        let mut finite = true;
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
            // A state that is not finite reaches the output within two samples (each section's
            // states feed its next outputs), so the output (as f32, which may overflow where
            // the f64 did not) is all that needs checking: nothing non-finite leaves the filter.
            finite &= value.is_finite();
        }
        finite || self.reset(frame)
    }

    /// Back to rest (zero state), the frame zeroed; false, for `process_frame` to return.
    #[cold]
    fn reset(&mut self, frame: &mut [f32]) -> bool {
        self.state.fill([0.0; 2]);
        frame.fill(0.0);
        false
    }

    /// Samples after a disturbance until what the filter still carries of it is a ten-thousandth
    /// (-80 dB) of it, at most [`MAX_SETTLING_S`] at `rate`: how long a reset or a refused span
    /// keeps windows from being decoded. A filter restarted from rest differs from one that
    /// never stopped by its zero-input response, which decays as its slowest pole, |p|^n (so the
    /// step of a 1 mV electrode offset is about 0.1 uV off by then, under a percent of an
    /// evoked potential). 0 for the identity filter.
    pub fn settling_samples(&self, rate: f64) -> u64 {
        if self.sections.is_empty() {
            return 0;
        }
        let most = (MAX_SETTLING_S * rate).ceil() as u64;
        // The poles of 1 + a1 z^-1 + a2 z^-2: z^2 + a1 z + a2 = 0.
        let slowest = self
            .sections
            .iter()
            .map(|&[_, _, _, a1, a2]| {
                let discriminant = a1 * a1 - 4.0 * a2;
                if discriminant >= 0.0 {
                    let root = discriminant.sqrt();
                    ((-a1 + root) / 2.0).abs().max(((-a1 - root) / 2.0).abs())
                } else {
                    a2.abs().sqrt()
                }
            })
            .fold(0.0f64, f64::max);
        // Each section's two delays hold a disturbance for two samples even without feedback.
        let delays = 2 * self.sections.len() as u64;
        if slowest >= 1.0 || !slowest.is_finite() {
            return most;
        }
        if slowest == 0.0 {
            return delays.min(most);
        }
        let decay = (1e-4f64.ln() / slowest.ln()).ceil() as u64;
        (decay + delays).min(most)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_filter_passes_samples_through() {
        let mut filter = SosFilter::new(&[], 2);
        let mut frame = [1.5, -2.0];
        assert!(filter.process_frame(&mut frame));
        assert_eq!(frame, [1.5, -2.0]);
        assert_eq!(filter.settling_samples(256.0), 0);
    }

    #[test]
    fn first_order_section_matches_hand_computed_recurrence() {
        // y[n] = 0.5 x[n] + 0.5 x[n-1] (moving average): impulse response 0.5, 0.5, 0.
        let mut filter = SosFilter::new(&[[0.5, 0.5, 0.0, 1.0, 0.0, 0.0]], 1);
        let outputs: Vec<f32> = [1.0f32, 0.0, 0.0]
            .iter()
            .map(|&x| {
                let mut f = [x];
                assert!(filter.process_frame(&mut f));
                f[0]
            })
            .collect();
        assert_eq!(outputs, vec![0.5, 0.5, 0.0]);
    }

    /// A 4th-order Butterworth band-pass, 1-20 Hz at 256 Hz (scipy.signal.butter(2, [1, 20],
    /// "bandpass", fs=256, output="sos")).
    fn bandpass() -> SosFilter {
        let sos = [[0.03657484, 0.07314967, 0.03657484, 1.0, -1.44823023, 0.55861993], [1.0, -2.0, 1.0, 1.0, -1.97267357, 0.97316017]];
        SosFilter::new(&sos, 2)
    }

    #[test]
    fn a_non_finite_state_resets_the_filter_and_it_settles_again() {
        // An EEG-like signal on a large electrode offset; `clean` never breaks.
        let signal = |i: usize| (i as f32 * 0.3).sin() * 50.0 + 800.0;
        let (mut filter, mut clean) = (bandpass(), bandpass());
        let feed_clean = |clean: &mut SosFilter, i: usize| {
            let mut b = [signal(i), -signal(i)];
            assert!(clean.process_frame(&mut b));
            b
        };
        let mut i = 0;
        while i < 1024 {
            let mut a = [signal(i), -signal(i)];
            assert!(filter.process_frame(&mut a));
            feed_clean(&mut clean, i);
            i += 1;
        }
        // What the door screens out, should it ever get past: an infinity and a NaN.
        for bad in [f32::INFINITY, f32::NAN] {
            let mut frame = [bad, -signal(i)];
            let mut steps = 0;
            while filter.process_frame(&mut frame) {
                feed_clean(&mut clean, i);
                i += 1;
                frame = [signal(i), -signal(i)];
                steps += 1;
                assert!(steps < 4, "a non-finite state is found within a few samples");
            }
            feed_clean(&mut clean, i);
            i += 1;
            assert_eq!(frame, [0.0, 0.0], "the frame of a reset is zeroed");
            assert!(filter.state.iter().all(|z| *z == [0.0, 0.0]), "every channel back at rest");
        }
        // Restarted from rest, it meets the filter that never broke within its settling time.
        let settle = filter.settling_samples(256.0) as usize;
        assert!((256..=5 * 256).contains(&settle), "1-20 Hz band-pass at 256 Hz settles in 1-5 s, got {settle} samples");
        let (mut worst_before, mut worst_after) = (0.0f32, 0.0f32);
        for k in 0..settle + 256 {
            let mut a = [signal(i), -signal(i)];
            assert!(filter.process_frame(&mut a));
            let b = feed_clean(&mut clean, i);
            let off = (a[0] - b[0]).abs();
            if k < 16 {
                worst_before = worst_before.max(off);
            } else if k >= settle {
                worst_after = worst_after.max(off);
            }
            i += 1;
        }
        assert!(worst_before > 10.0, "just after a reset the output is off (the offset's step response), got {worst_before}");
        assert!(worst_after < 0.5, "after settling within 0.5 uV of the unbroken filter (800 uV offset), got {worst_after}");
    }
}
