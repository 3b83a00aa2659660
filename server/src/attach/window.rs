//! An attachment's windows, checked against its model and stream: the rates (integer decimation
//! only, so the server and offline code cut identical windows), the filter's design rate, and the
//! window policy (event-locked around marker codes, or sliding) in stream samples.

use std::collections::VecDeque;

use myelin_proto::v1 as pb;

use crate::card::ModelCard;
use crate::session::SessionError;
use crate::window::Cutter;

pub struct WindowPlan {
    pub cutter: Cutter,
    /// Window length in stream samples.
    pub length: usize,
    /// Window length in model samples.
    pub model_samples: usize,
    /// Stream samples per model sample.
    pub decimation: usize,
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
    let ratio = stream_rate / card.sample_rate_hz;
    let decimation = ratio.round();
    if decimation < 1.0 || (ratio - decimation).abs() > 1e-9 {
        return Err(invalid(format!(
            "stream rate {stream_rate} Hz is not an integer multiple of model {}'s rate {} Hz",
            card.id, card.sample_rate_hz
        )));
    }
    let decimation = decimation as usize;
    if let Some(filter) = &card.preprocessing.filter
        && (filter.design_rate_hz - stream_rate).abs() > 1e-9
    {
        return Err(invalid(format!(
            "model {}'s filter was designed for {} Hz streams; this stream is {stream_rate} Hz",
            card.id, filter.design_rate_hz
        )));
    }
    let model_samples = card.window_samples();
    let length = model_samples * decimation;
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
            let asked = seconds_to_samples(tmax) - seconds_to_samples(tmin);
            if asked != length as i64 {
                return Err(invalid(format!(
                    "window.event_locked: [{tmin}, {tmax}) s is {asked} samples at {stream_rate} Hz; model {} needs {length} ({} s)",
                    card.id,
                    card.window.tmax_s - card.window.tmin_s
                )));
            }
            let cutter = Cutter::EventLocked {
                codes: locked.marker_codes.clone(),
                start_offset: seconds_to_samples(tmin),
                length,
                pending: VecDeque::new(),
                max_pending: max_pending_markers,
            };
            (cutter, tmin)
        }
        Some(pb::window_policy::Policy::Sliding(sliding)) => {
            if sliding.length_s != 0.0 && seconds_to_samples(sliding.length_s) != length as i64 {
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
            (Cutter::Sliding { length, hop: hop as usize, next_end: 0 }, card.window.tmin_s)
        }
        None => return Err(invalid("window: a policy (event_locked or sliding) is required".into())),
    };
    Ok(WindowPlan { cutter, length, model_samples, decimation, tmin_s })
}
