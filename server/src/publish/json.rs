//! Predictions as text: the status label of metrics and JSON, and one JSON object per prediction
//! (the LSL marker outlet, XDF recordings).

use myelin_proto::v1::{Prediction, PredictionStatus};

/// The lower-case name of a prediction status (`ok`, `late`, `shed`, `error`, `gap`).
pub fn status_label(status: i32) -> &'static str {
    match PredictionStatus::try_from(status).unwrap_or(PredictionStatus::Unspecified) {
        PredictionStatus::Ok => "ok",
        PredictionStatus::Late => "late",
        PredictionStatus::Shed => "shed",
        PredictionStatus::Error => "error",
        PredictionStatus::Gap => "gap",
        PredictionStatus::Unspecified => "unspecified",
    }
}

/// A prediction as one JSON object (LSL marker outlets, XDF recordings).
pub fn prediction_json(p: &Prediction) -> String {
    use myelin_proto::v1::prediction::Result as R;
    let window = p.window.unwrap_or_default();
    let timing = p.timing.unwrap_or_default();
    let mut value = serde_json::json!({
        "session": p.session_id,
        "attachment": p.attachment_id,
        "model": p.model_id,
        "version": p.model_version,
        "sequence": p.sequence,
        "status": status_label(p.status),
        "window": {
            "first_sample": window.first_sample_index,
            "last_sample": window.last_sample_index,
            "first_timestamp": window.first_timestamp,
            "last_timestamp": window.last_timestamp,
        },
        "timing": {
            "last_sample_received_ns": timing.last_sample_received_ns,
            "decode_start_ns": timing.decode_start_ns,
            "decode_end_ns": timing.decode_end_ns,
            "published_ns": timing.published_ns,
            "budget_ms": timing.budget_ms,
            "budget_met": timing.budget_met,
            "server_latency_us": timing.server_latency_us,
        },
    });
    match &p.result {
        Some(R::Classification(c)) => {
            value["labels"] = serde_json::json!(c.labels);
            value["probabilities"] = serde_json::json!(c.probabilities);
        }
        Some(R::Retrieval(r)) => {
            value["ids"] = serde_json::json!(r.ids);
            value["scores"] = serde_json::json!(r.scores);
        }
        None => {}
    }
    if let Some(trigger) = &p.trigger {
        value["trigger"] = serde_json::json!({ "code": trigger.code, "timestamp": trigger.timestamp, "label": trigger.label });
    }
    if !p.error_reason.is_empty() {
        value["error"] = serde_json::json!(p.error_reason);
    }
    value.to_string()
}
