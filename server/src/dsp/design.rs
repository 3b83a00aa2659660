//! Filters designed for the stream's own rate: a card states its filters as a specification
//! (`preprocessing.filters`), and the server turns it into second-order sections at Attach, for
//! whatever rate the stream has. Butterworth kinds come from sci-rs (a port of scipy.signal's
//! `butter`, the same zeros, poles, pairing and gain placement); scipy's `iirnotch` is a closed
//! form that sci-rs does not have, so it is written here. Both equal scipy to 1e-9
//! (`tests/python/test_resampling.py`).

use sci_rs::signal::filter::design::{DigitalFilter, FilterBandType, FilterOutputType, butter_dyn};

use crate::card::FilterDesign;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DesignError {
    #[error("{filter} cannot be designed for a {rate} Hz stream: its frequencies must lie below the Nyquist frequency ({} Hz)", rate / 2.0)]
    AboveNyquist { filter: String, rate: f64 },
    #[error("{filter}: the stream rate must be a positive number, got {rate}")]
    BadRate { filter: String, rate: f64 },
}

/// The cascade of every filter in `filters`, in order, as scipy-layout sections
/// [b0, b1, b2, a0, a1, a2] for a stream at `rate` Hz. No filters: no sections.
pub fn design_sos(filters: &[FilterDesign], rate: f64) -> Result<Vec<[f64; 6]>, DesignError> {
    let mut sections = Vec::new();
    for filter in filters {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(DesignError::BadRate { filter: filter.describe(), rate });
        }
        // Card validation has checked every frequency is positive and every band ordered; the
        // stream rate is what decides whether the design exists (sci-rs panics otherwise).
        if !(filter.highest_hz() < rate / 2.0) {
            return Err(DesignError::AboveNyquist { filter: filter.describe(), rate });
        }
        match *filter {
            FilterDesign::Lowpass { order, cutoff_hz } => {
                sections.extend(butterworth(order, vec![cutoff_hz], FilterBandType::Lowpass, rate))
            }
            FilterDesign::Highpass { order, cutoff_hz } => {
                sections.extend(butterworth(order, vec![cutoff_hz], FilterBandType::Highpass, rate))
            }
            FilterDesign::Bandpass { order, low_hz, high_hz } => {
                sections.extend(butterworth(order, vec![low_hz, high_hz], FilterBandType::Bandpass, rate))
            }
            FilterDesign::Bandstop { order, low_hz, high_hz } => {
                sections.extend(butterworth(order, vec![low_hz, high_hz], FilterBandType::Bandstop, rate))
            }
            FilterDesign::Notch { freq_hz, quality } => sections.push(notch(freq_hz, quality, rate)),
        }
    }
    Ok(sections)
}

fn butterworth(order: usize, band_hz: Vec<f64>, kind: FilterBandType, rate: f64) -> Vec<[f64; 6]> {
    match butter_dyn(order, band_hz, Some(kind), Some(false), Some(FilterOutputType::Sos), Some(rate)) {
        DigitalFilter::Sos(filter) => filter.sos.iter().map(|s| [s.b[0], s.b[1], s.b[2], s.a[0], s.a[1], s.a[2]]).collect(),
        // butter_dyn returns the form asked for.
        _ => unreachable!("butter_dyn was asked for second-order sections"),
    }
}

/// scipy.signal.iirnotch: a second-order notch at `freq_hz` with quality factor `quality`
/// (-3 dB bandwidth freq_hz / quality).
fn notch(freq_hz: f64, quality: f64, rate: f64) -> [f64; 6] {
    let w0 = 2.0 * freq_hz / rate;
    let bandwidth = w0 / quality * std::f64::consts::PI;
    let w0 = w0 * std::f64::consts::PI;
    let gain_at_band_edge = 1.0 / 2f64.sqrt();
    let beta = ((1.0 - gain_at_band_edge.powi(2)).sqrt() / gain_at_band_edge) * (bandwidth / 2.0).tan();
    let gain = 1.0 / (1.0 + beta);
    [gain, -2.0 * gain * w0.cos(), gain, 1.0, -2.0 * gain * w0.cos(), 2.0 * gain - 1.0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_band_above_nyquist_is_refused_with_the_filter_and_rate() {
        let band = FilterDesign::Bandpass { order: 4, low_hz: 0.5, high_hz: 40.0 };
        let error = design_sos(&[band], 64.0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Butterworth band-pass 0.5-40 Hz, order 4 cannot be designed for a 64 Hz stream: its frequencies must lie below the Nyquist frequency (32 Hz)"
        );
    }

    #[test]
    fn butterworth_band_pass_matches_scipy() {
        // scipy.signal.butter(2, [1, 20], btype="bandpass", fs=256, output="sos")
        let expected = [
            [0.04050907411610063, 0.08101814823220126, 0.04050907411610063, 1.0, -1.3693408469483663, 0.5356194275826914],
            [1.0, -2.0, 1.0, 1.0, -1.9655949211829014, 0.9662440535673409],
        ];
        let got = design_sos(&[FilterDesign::Bandpass { order: 2, low_hz: 1.0, high_hz: 20.0 }], 256.0).unwrap();
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            for (a, b) in g.iter().zip(e) {
                assert!((a - b).abs() < 1e-9, "{got:?}");
            }
        }
    }

    #[test]
    fn notch_matches_scipy() {
        // scipy.signal.iirnotch(50, 30, fs=1000): b, a
        let b = [0.9947912376593769, -1.8922053778585424, 0.9947912376593769];
        let a = [1.0, -1.8922053778585424, 0.9895824753187539];
        let got = design_sos(&[FilterDesign::Notch { freq_hz: 50.0, quality: 30.0 }], 1000.0).unwrap();
        for (g, e) in got[0].iter().zip(b.iter().chain(&a)) {
            assert!((g - e).abs() < 1e-12, "{got:?}");
        }
    }
}
