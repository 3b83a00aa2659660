//! LSL outlets for an attachment's predictions: a float32 stream (one channel per label:
//! probabilities, or retrieval scores) and a JSON marker stream, each sample stamped with the
//! source time of its window's last sample. One dedicated thread owns both outlets (liblsl
//! objects are not for concurrent use); it taps the attachment's route through a bounded queue
//! of its own, so a stalled LSL consumer never slows decoding.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use myelin_lsl::{CF_FLOAT32, CF_STRING, Lsl};
use myelin_proto::v1 as pb;

use super::AttachmentRoute;
use super::json::prediction_json;
use super::tap::Tap;
use crate::metrics as m;

/// Closes the outlets when dropped (detach): removes the tap at once and stops the outlet thread
/// within its 200 ms poll.
pub struct OutletGuard {
    closed: Arc<AtomicBool>,
    _tap: Tap,
}

impl Drop for OutletGuard {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
    }
}

pub struct OutletSpec {
    pub session_id: String,
    pub attachment_id: String,
    pub model_id: String,
    pub model_version: String,
    pub labels: Vec<String>,
    pub unit: String,
}

/// Source ids of the server's prediction outlets start with this.
pub const OUTLET_SOURCE_PREFIX: &str = "myelin/";

/// Creates the outlets (visible to LSL at once) and feeds them the predictions of `route`.
/// Returns their names.
pub fn start(lsl: &Lsl, spec: OutletSpec, route: &AttachmentRoute) -> std::io::Result<(Vec<String>, OutletGuard)> {
    let name = format!("{}/{}", spec.session_id, spec.attachment_id);
    let json_name = format!("{name}/json");
    let source = format!("{OUTLET_SOURCE_PREFIX}{name}");
    let channels = spec.labels.len().max(1);
    let mut numeric = lsl.stream_info(&name, "Predictions", channels, 0.0, CF_FLOAT32, &source);
    let channel_list: Vec<(&str, &str, &str)> = spec.labels.iter().map(|l| (l.as_str(), spec.unit.as_str(), "Prediction")).collect();
    numeric.append_channels(&channel_list);
    let about = [
        ("model", spec.model_id.as_str()),
        ("version", spec.model_version.as_str()),
        ("session", spec.session_id.as_str()),
        ("attachment", spec.attachment_id.as_str()),
        ("timestamps", "source time of each window's last sample"),
    ];
    numeric.append_desc("myelin", &about);
    let mut json = lsl.stream_info(&json_name, "Markers", 1, 0.0, CF_STRING, &format!("{source}/json"));
    json.append_desc("myelin", &about);

    let closed = Arc::new(AtomicBool::new(false));
    let (sender, receiver) = crossbeam_channel::bounded::<Arc<pb::Prediction>>(1024);
    let tap = route.tap(move |prediction| {
        if sender.try_send(prediction.clone()).is_err() {
            metrics::counter!(m::LSL_OUTLET_DROPPED).increment(1);
        }
    });
    let thread_closed = closed.clone();
    let width = channels;
    std::thread::Builder::new().name(format!("lsl-out-{}", spec.attachment_id)).spawn(move || {
        let mut numeric_outlet = myelin_lsl::Outlet::new(&numeric);
        let mut json_outlet = myelin_lsl::Outlet::new(&json);
        let mut values = vec![0.0f32; width];
        while !thread_closed.load(Ordering::Acquire) {
            let prediction = match receiver.recv_timeout(Duration::from_millis(200)) {
                Ok(p) => p,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            };
            let timestamp = prediction.window.map_or(0.0, |w| w.last_timestamp);
            values.iter_mut().for_each(|v| *v = f32::NAN);
            match &prediction.result {
                Some(pb::prediction::Result::Classification(c)) => {
                    for (v, p) in values.iter_mut().zip(&c.probabilities) {
                        *v = *p;
                    }
                }
                Some(pb::prediction::Result::Retrieval(r)) => {
                    for (v, s) in values.iter_mut().zip(&r.scores) {
                        *v = *s;
                    }
                }
                None => {}
            }
            if let Err(error) = numeric_outlet.push_f32(&values, timestamp) {
                tracing::warn!(%error, "LSL outlet push failed");
            }
            if let Err(error) = json_outlet.push_str(&prediction_json(&prediction), timestamp) {
                tracing::warn!(%error, "LSL outlet push failed");
            }
        }
    })?;
    Ok((vec![name, json_name], OutletGuard { closed, _tap: tap }))
}
