//! An attachment's windows, checked against its model and stream: the filters designed for the
//! stream's rate (or fixed coefficients and their design rate), how the stream reaches the
//! model's rate (integer decimation, or polyphase resampling by any rational ratio), and the
//! window policy (event-locked around marker codes, or sliding) in stream samples.

use std::collections::VecDeque;

use myelin_proto::v1 as pb;

use crate::card::{ModelCard, Resample};
use crate::decode::input::Resampling;
use crate::dsp::design::design_sos;
use crate::dsp::polyphase::Polyphase;
use crate::session::SessionError;
use crate::window::Cutter;

pub struct WindowPlan {
    pub cutter: Cutter,
    /// Stream samples a window's span covers, first to last model sample.
    pub length: usize,
    /// Stream samples after the span that the resampler needs before a window is decoded.
    pub lookahead: usize,
    /// Window length in model samples.
    pub model_samples: usize,
    pub resampling: Resampling,
    /// The stream filter, as sections designed for this stream's rate.
    pub sos: Vec<[f64; 6]>,
    /// Window start relative to its marker (event-locked) or the card's (sliding), in seconds.
    pub tmin_s: f64,
}

/// Window offsets and lengths a request may give, seconds: beyond any model's window, and small
/// enough that every sample count derived from them is exact.
const MAX_WINDOW_SECONDS: f64 = 600.0;
/// Longest hop between sliding windows, seconds.
const MAX_HOP_SECONDS: f64 = 3600.0;

pub fn plan_window(
    card: &ModelCard,
    stream_rate: f64,
    policy: &pb::WindowPolicy,
    max_pending_markers: usize,
) -> Result<WindowPlan, SessionError> {
    let invalid = SessionError::InvalidArgument;
    let bounded = |field: &str, value: f64, most: f64| {
        if value.is_finite() && value.abs() <= most {
            Ok(())
        } else {
            Err(invalid(format!("{field} must be finite and within +-{most} s, got {value}")))
        }
    };
    match &policy.policy {
        Some(pb::window_policy::Policy::EventLocked(locked)) => {
            bounded("window.event_locked.tmin_s", locked.tmin_s, MAX_WINDOW_SECONDS)?;
            bounded("window.event_locked.tmax_s", locked.tmax_s, MAX_WINDOW_SECONDS)?;
            if locked.marker_codes.len() > 1024 {
                return Err(invalid(format!("window.event_locked.marker_codes: {} codes, at most 1024", locked.marker_codes.len())));
            }
        }
        Some(pb::window_policy::Policy::Sliding(sliding)) => {
            bounded("window.sliding.length_s", sliding.length_s, MAX_WINDOW_SECONDS)?;
            bounded("window.sliding.hop_s", sliding.hop_s, MAX_HOP_SECONDS)?;
        }
        None => {}
    }
    let (resampling, sos) = rates(card, stream_rate)?;
    let model_samples = card.window_samples();
    let (length, reach) = (resampling.span(model_samples), resampling.reach(model_samples));
    let seconds_to_samples = |s: f64| (s * stream_rate).round() as i64;
    let (cutter, tmin_s) = match &policy.policy {
        Some(pb::window_policy::Policy::EventLocked(locked)) => {
            if locked.marker_codes.is_empty() {
                return Err(invalid("window.event_locked.marker_codes must not be empty".into()));
            }
            let (tmin, tmax) = if locked.tmin_s == 0.0 && locked.tmax_s == 0.0 {
                (card.window.tmin_s, card.window.tmax_s)
            } else {
                (locked.tmin_s, locked.tmax_s)
            };
            let asked = match &resampling {
                Resampling::Decimate { .. } => seconds_to_samples(tmax) - seconds_to_samples(tmin),
                // Compared in model samples: the span need not be a whole number of stream samples.
                Resampling::Polyphase(_) => ((tmax - tmin) * card.sample_rate_hz).round() as i64,
            };
            let needed = if matches!(resampling, Resampling::Polyphase(_)) { model_samples } else { length };
            if asked != needed as i64 {
                return Err(invalid(format!(
                    "window.event_locked: [{tmin}, {tmax}) s is {asked} samples at {} Hz; model {} needs {needed} ({} s)",
                    if matches!(resampling, Resampling::Polyphase(_)) { card.sample_rate_hz } else { stream_rate },
                    card.id,
                    card.window.tmax_s - card.window.tmin_s
                )));
            }
            let cutter = Cutter::EventLocked {
                codes: locked.marker_codes.clone(),
                start_offset: seconds_to_samples(tmin),
                length: reach,
                pending: VecDeque::new(),
                max_pending: max_pending_markers,
            };
            (cutter, tmin)
        }
        Some(pb::window_policy::Policy::Sliding(sliding)) => {
            if sliding.length_s != 0.0 && ((sliding.length_s * card.sample_rate_hz).round() as usize) != model_samples {
                return Err(invalid(format!(
                    "window.sliding.length_s {} s does not match model {}'s window of {} s",
                    sliding.length_s,
                    card.id,
                    card.window.tmax_s - card.window.tmin_s
                )));
            }
            let hop = seconds_to_samples(sliding.hop_s);
            if !(sliding.hop_s > 0.0) || hop < 1 {
                return Err(invalid(format!("window.sliding.hop_s must be at least one sample period, got {} s", sliding.hop_s)));
            }
            (Cutter::Sliding { length: reach, hop: hop as usize, next_end: 0 }, card.window.tmin_s)
        }
        None => return Err(invalid("window: a policy (event_locked or sliding) is required".into())),
    };
    Ok(WindowPlan { cutter, length, lookahead: reach - length, model_samples, resampling, sos, tmin_s })
}

/// The stream filter's sections for a stream at `stream_rate` and how its samples reach the
/// model's rate (also `myelin models design`).
pub fn rates(card: &ModelCard, stream_rate: f64) -> Result<(Resampling, Vec<[f64; 6]>), SessionError> {
    let invalid = SessionError::InvalidArgument;
    let pre = &card.preprocessing;
    let sos = match &pre.filter {
        Some(filter) if (filter.design_rate_hz - stream_rate).abs() > 1e-9 => {
            return Err(invalid(format!(
                "model {}'s filter has fixed coefficients designed for {} Hz streams; this stream is {stream_rate} Hz (a card \
                 with `preprocessing.filters` is designed for any rate)",
                card.id, filter.design_rate_hz
            )));
        }
        Some(filter) => filter.sos.clone(),
        None => design_sos(&pre.filters, stream_rate).map_err(|e| invalid(format!("model {}: {e}", card.id)))?,
    };
    let resampling = match pre.resample {
        Resample::Decimate => {
            let ratio = stream_rate / card.sample_rate_hz;
            let factor = ratio.round();
            if factor < 1.0 || (ratio - factor).abs() > 1e-9 {
                return Err(invalid(format!(
                    "stream rate {stream_rate} Hz is not an integer multiple of model {}'s rate {} Hz (its card resamples by \
                     decimation only)",
                    card.id, card.sample_rate_hz
                )));
            }
            Resampling::Decimate { factor: factor as usize }
        }
        Resample::Polyphase => match Polyphase::new(stream_rate, card.sample_rate_hz, pre.resample_half_width) {
            Ok(p) if p.up() == 1 && p.down() == 1 => Resampling::Decimate { factor: 1 },
            Ok(p) => Resampling::Polyphase(p),
            Err(e) => return Err(invalid(format!("model {} at {} Hz: {e}", card.id, card.sample_rate_hz))),
        },
    };
    Ok((resampling, sos))
}

/// What Attach designs for a stream at `stream_rate`, as JSON (`myelin models design`).
pub fn design_report(card: &ModelCard, stream_rate: f64) -> Result<serde_json::Value, SessionError> {
    let (resampling, sos) = rates(card, stream_rate)?;
    let t = card.window_samples();
    let resample = match &resampling {
        Resampling::Decimate { factor } => serde_json::json!({ "method": "decimate", "factor": factor }),
        Resampling::Polyphase(p) => serde_json::json!({
            "method": "polyphase", "up": p.up(), "down": p.down(), "taps": p.taps(),
            "history": p.history(), "lookahead": resampling.reach(t) - resampling.span(t),
        }),
    };
    // How long after a refused span or a filter reset windows are not decoded.
    let settling = crate::dsp::sos::SosFilter::new(&sos, 1).settling_samples(stream_rate);
    Ok(serde_json::json!({
        "model": card.id, "stream_rate_hz": stream_rate, "model_rate_hz": card.sample_rate_hz, "sos": sos, "resample": resample,
        "settling_samples": settling, "settling_s": settling as f64 / stream_rate,
    }))
}
