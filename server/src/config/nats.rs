//! The `[publish.nats]` section: every prediction also on a NATS server.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// NATS server URL(s), comma-separated ("nats://127.0.0.1:4222"). Empty: off.
    pub url: String,
    /// Protobuf `Prediction`s go to `<subject_prefix>.<session>.<attachment>` (a '.' in an id is
    /// written %2E: NATS splits subjects at dots).
    pub subject_prefix: String,
    /// Also publish each prediction as JSON on `<json_subject_prefix>.<session>.<attachment>`.
    pub json: bool,
    pub json_subject_prefix: String,
    /// A JetStream stream to create (or reuse) over `<subject_prefix>.>`, for consumers that must
    /// not miss a prediction while they are away. Empty: core NATS only.
    pub jetstream_stream: String,
    /// The JetStream stream keeps predictions this long at most (seconds)...
    pub jetstream_max_age_s: u64,
    /// ...and this many bytes at most; the oldest go first.
    pub jetstream_max_bytes: u64,
    /// Predictions waiting to be published; beyond that (a slow server) they are dropped and
    /// counted (`myelin_nats_dropped_total`), never holding up decoding. While the connection is
    /// down they are dropped at once (counted as `disconnected`).
    pub queue: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            subject_prefix: "myelin.predictions".into(),
            json: false,
            json_subject_prefix: "myelin.predictions-json".into(),
            jetstream_stream: String::new(),
            jetstream_max_age_s: 24 * 3600,
            jetstream_max_bytes: 1 << 30,
            queue: 4096,
        }
    }
}

impl NatsConfig {
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    pub(super) fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((1..=1 << 20).contains(&self.queue), "publish.nats.queue must be 1 to 1048576, got {}", self.queue);
        for (key, prefix) in
            [("publish.nats.subject_prefix", &self.subject_prefix), ("publish.nats.json_subject_prefix", &self.json_subject_prefix)]
        {
            let valid = !prefix.is_empty()
                && prefix.split('.').all(|token| !token.is_empty() && !token.contains(['*', '>']) && !token.contains(char::is_whitespace));
            anyhow::ensure!(valid, "{key} must be dot-separated NATS subject tokens without wildcards, got {prefix:?}");
        }
        let (a, b) = (format!("{}.", self.subject_prefix), format!("{}.", self.json_subject_prefix));
        anyhow::ensure!(
            !a.starts_with(&b) && !b.starts_with(&a),
            "publish.nats.subject_prefix and json_subject_prefix must not contain one another ({:?}, {:?}): subscribers of one would get the other",
            self.subject_prefix,
            self.json_subject_prefix
        );
        anyhow::ensure!(
            self.jetstream_max_age_s > 0 && self.jetstream_max_bytes > 0,
            "publish.nats.jetstream_max_age_s and jetstream_max_bytes must be > 0"
        );
        anyhow::ensure!(
            self.jetstream_stream.is_empty() || self.jetstream_stream.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)),
            "publish.nats.jetstream_stream must be letters, digits, '_' and '-', got {:?}",
            self.jetstream_stream
        );
        Ok(())
    }
}
