//! One-line human-readable rendering of a prediction, shared by `myelin-cli` and the server's
//! built-in demo.

use myelin_proto::v1::{self as pb, PredictionStatus};

pub fn format_prediction(p: &pb::Prediction) -> String {
    let status = match PredictionStatus::try_from(p.status).unwrap_or(PredictionStatus::Unspecified) {
        PredictionStatus::Ok => "OK",
        PredictionStatus::Late => "LATE",
        PredictionStatus::Shed => "SHED",
        PredictionStatus::Error => "ERROR",
        PredictionStatus::Gap => "GAP",
        PredictionStatus::Unspecified => "?",
    };
    let result = match &p.result {
        Some(pb::prediction::Result::Classification(c)) => {
            let best = c.probabilities.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1));
            // Many classes (Du-IN's 61 words): the best few, as the attachment's top_k listed them.
            let (labels, probabilities) = if c.labels.len() > 4 && !c.top_labels.is_empty() {
                (&c.top_labels, &c.top_probabilities)
            } else {
                (&c.labels, &c.probabilities)
            };
            let all: Vec<String> = labels.iter().zip(probabilities).map(|(l, p)| format!("{l}={p:.3}")).collect();
            match best {
                Some((i, _)) => format!("{:<12} [{}]", c.labels.get(i).map_or("?", String::as_str), all.join(" ")),
                None => "(empty)".into(),
            }
        }
        Some(pb::prediction::Result::Retrieval(r)) => {
            let top: Vec<String> = r.ids.iter().zip(&r.scores).map(|(id, s)| format!("{id}:{s:.3}")).collect();
            format!("top [{}]", top.join(" "))
        }
        None if !p.error_reason.is_empty() => p.error_reason.clone(),
        None => String::new(),
    };
    let trigger = p.trigger.as_ref().map_or(String::new(), |m| format!(" marker={}", m.code));
    let timing = p.timing.unwrap_or_default();
    let inference_us = timing.decode_end_ns.saturating_sub(timing.decode_start_ns) / 1_000;
    let window = p.window.unwrap_or_default();
    format!(
        "{session} {attachment} #{seq:<5} {status:<5} {result}{trigger} | samples {first}-{last} | latency {lat:.3} ms (inference {inf:.3} ms, budget {budget} ms {verdict})",
        session = p.session_id,
        attachment = short_id(&p.attachment_id),
        seq = p.sequence,
        first = window.first_sample_index,
        last = window.last_sample_index,
        lat = timing.server_latency_us as f64 / 1000.0,
        inf = inference_us as f64 / 1000.0,
        budget = timing.budget_ms,
        verdict = if timing.budget_met { "met" } else { "MISSED" },
    )
}

/// An attachment id as a line shows it: its first 8 hex digits, as git shortens commits (the
/// full id, printed once when attaching, is what Detach takes).
fn short_id(id: &str) -> &str {
    match id.strip_prefix("att-") {
        Some(hex) if hex.len() > 8 && hex.is_char_boundary(8) => &id[..12],
        _ => id,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_attachment_ids_are_shortened_for_display() {
        assert_eq!(super::short_id("att-6a291649b1cb9f4bda670395b4321d19"), "att-6a291649");
        assert_eq!(super::short_id("att-1"), "att-1");
        assert_eq!(super::short_id("other"), "other");
    }
}
