//! Every metric the server emits, in one place (names follow Prometheus conventions: base units,
//! `_total` counters, `_seconds` histograms). Labels stay low-cardinality: model id, status,
//! reason, warning kind; never session or attachment ids.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const SERVER_LATENCY: &str = "myelin_server_latency_seconds";
pub const QUEUE_WAIT: &str = "myelin_queue_wait_seconds";
pub const INFERENCE: &str = "myelin_inference_seconds";
pub const SAMPLES_INGESTED: &str = "myelin_samples_ingested_total";
pub const MARKERS_INGESTED: &str = "myelin_markers_ingested_total";
pub const CHUNKS_REJECTED: &str = "myelin_chunks_rejected_total";
pub const INGEST_WARNINGS: &str = "myelin_ingest_warnings_total";
pub const NON_FINITE_SAMPLES: &str = "myelin_non_finite_samples_total";
pub const PREDICTIONS: &str = "myelin_predictions_total";
pub const DEADLINE_MISSES: &str = "myelin_deadline_misses_total";
pub const LATE_DROPPED: &str = "myelin_late_predictions_dropped_total";
pub const SUBSCRIBER_DROPS: &str = "myelin_subscriber_dropped_total";
pub const LIVE_SESSIONS: &str = "myelin_live_sessions";
pub const SUBSCRIBERS: &str = "myelin_subscribers";
pub const MODEL_QUEUE_DEPTH: &str = "myelin_model_queue_depth";
pub const BUFFER_BYTES: &str = "myelin_buffer_bytes";
pub const INGEST_IDLE_TIMEOUTS: &str = "myelin_ingest_idle_timeouts_total";
pub const SHED: &str = "myelin_predictions_shed_total";
pub const BATCH_SIZE: &str = "myelin_batch_size";
pub const BATCH_FORMATION: &str = "myelin_batch_formation_seconds";
pub const INFERENCE_ESTIMATE: &str = "myelin_model_inference_estimate_seconds";
pub const STAGE: &str = "myelin_stage_seconds";
pub const FILTER_RESETS: &str = "myelin_filter_resets_total";
pub const NON_FINITE_OUTPUTS: &str = "myelin_non_finite_outputs_total";

/// Latency buckets from 10 us to 2.5 s: decoding budgets are typically 10-500 ms, and the
/// server's own share (and each of its stages) is sub-millisecond.
const LATENCY_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Windows per model run: 1 to the largest `input.max_batch` (1024).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// Installs the global Prometheus recorder and describes every metric.
/// `replica`: this replica's name in a cluster (`cluster.replica`), carried as a label by every
/// series, so that one Prometheus scraping every replica tells them apart; empty: no label.
pub fn install(replica: &str) -> anyhow::Result<PrometheusHandle> {
    let mut builder = PrometheusBuilder::new();
    if !replica.is_empty() {
        builder = builder.add_global_label("replica", replica);
    }
    let handle = builder
        .set_buckets(LATENCY_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS))
        .map_err(|e| anyhow::anyhow!("prometheus buckets: {e}"))?
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    describe_histogram!(
        SERVER_LATENCY,
        metrics::Unit::Seconds,
        "Receipt of a window's last sample to publication of its prediction, per model."
    );
    describe_histogram!(QUEUE_WAIT, metrics::Unit::Seconds, "Time a window waited in its model's queue until its batch was taken.");
    describe_histogram!(
        INFERENCE,
        metrics::Unit::Seconds,
        "Preprocessing plus model run time per batch (one run of the model on one or more windows)."
    );
    describe_counter!(SHED, "Windows not decoded (SHED), by model and reason: deadline unreachable, model queue full, shutdown.");
    describe_histogram!(BATCH_SIZE, "Windows per model run (dynamic batching across sessions).");
    describe_histogram!(BATCH_FORMATION, metrics::Unit::Seconds, "From a batch's first window taken off the queue to its run's start.");
    describe_gauge!(
        INFERENCE_ESTIMATE,
        metrics::Unit::Seconds,
        "Estimated run time by batch size (warm-up measurement, then moving average), which the scheduler plans with."
    );
    describe_histogram!(
        STAGE,
        metrics::Unit::Seconds,
        "Server-side stages of a sample's way to a prediction: handoff (chunk receipt to its session worker), dsp (filtering a chunk and placing markers), cut (copying a window out of the ring and preprocessing it into the model's input), publish (end of inference to the subscribers' queues)."
    );
    describe_histogram!(GALLERY_SEARCH, metrics::Unit::Seconds, "Gallery search time per retrieval prediction (exact or approximate).");
    describe_counter!(SAMPLES_INGESTED, "Samples accepted from ingest streams.");
    describe_counter!(MARKERS_INGESTED, "Markers accepted from ingest streams.");
    describe_counter!(
        CHUNKS_REJECTED,
        "Ingest messages (gRPC) or samples (LSL, which cannot be told) refused, by reason and door (grpc, lsl)."
    );
    describe_counter!(
        FILTER_RESETS,
        "Attachment filters reset because their state became non-finite, by model (windows within the filter's settling time are ERROR)."
    );
    describe_counter!(NON_FINITE_OUTPUTS, "Windows whose model output was not finite (published ERROR \"non-finite output\"), by model.");
    describe_counter!(INGEST_WARNINGS, "Ingest warnings (gap, overlap, out_of_order, clock_jump, ...), by kind.");
    describe_counter!(NON_FINITE_SAMPLES, "Non-finite sample values seen (rejected or zero-filled).");
    describe_counter!(
        INGEST_IDLE_TIMEOUTS,
        "Ingest calls ended because they sent nothing for sessions.ingest_idle_timeout_s (taken for dead)."
    );
    describe_counter!(PREDICTIONS, "Predictions by model and status (ok, late, shed, error).");
    describe_counter!(DEADLINE_MISSES, "Predictions published (or dropped) after their latency budget.");
    describe_counter!(LATE_DROPPED, "Late predictions not published because their attachment's late policy is drop.");
    describe_counter!(SUBSCRIBER_DROPS, "Predictions a slow subscriber lost (its oldest ones).");
    describe_gauge!(LIVE_SESSIONS, "Sessions with a live ingest stream.");
    describe_gauge!(SUBSCRIBERS, "Open Subscribe streams.");
    describe_gauge!(MODEL_QUEUE_DEPTH, "Windows waiting in a model's queue.");
    describe_gauge!(
        BUFFER_BYTES,
        metrics::Unit::Bytes,
        "Ring and calibration buffer memory reserved (limits.server_buffer_bytes at most)."
    );
    describe_lsl_and_recording();
    register_counters();
    Ok(handle)
}

/// Counters appear in `/metrics` at 0 from the start, not only after their first event: a rate()
/// or an alert over them then works from the first scrape (Prometheus' advice for counters
/// whose labels are known in advance). `increment(0)` registers without changing a value.
fn register_counters() {
    for name in [
        SAMPLES_INGESTED,
        MARKERS_INGESTED,
        SUBSCRIBER_DROPS,
        NON_FINITE_SAMPLES,
        INGEST_IDLE_TIMEOUTS,
        RECORDING_DROPPED,
        RECORDING_ERRORS,
        LSL_STREAM_LOSSES,
        LSL_OUTLET_DROPPED,
    ] {
        counter!(name).increment(0);
    }
    for reason in ["unauthenticated", "no_scope", "not_owner"] {
        counter!(CALLS_REFUSED, "reason" => reason).increment(0);
    }
    gauge!(LIVE_SESSIONS).increment(0.0);
    gauge!(SUBSCRIBERS).increment(0.0);
}

/// A model's counters at 0 once it is loaded (see [`register_counters`]); `shed_reasons`: the
/// scheduler's reasons.
pub fn register_model_counters(model: &str, shed_reasons: &[&'static str]) {
    counter!(DEADLINE_MISSES, "model" => model.to_string()).increment(0);
    counter!(LATE_DROPPED, "model" => model.to_string()).increment(0);
    for status in ["ok", "late", "shed", "error"] {
        counter!(PREDICTIONS, "model" => model.to_string(), "status" => status).increment(0);
    }
    counter!(NON_FINITE_OUTPUTS, "model" => model.to_string()).increment(0);
    counter!(FILTER_RESETS, "model" => model.to_string()).increment(0);
    for reason in shed_reasons {
        counter!(SHED, "model" => model.to_string(), "reason" => *reason).increment(0);
    }
}

/// One refusal by ingest, through `door` ("grpc" or "lsl").
pub fn rejected(reason: &'static str, door: &'static str) {
    counter!(CHUNKS_REJECTED, "reason" => reason, "door" => door).increment(1);
}

pub fn warnings(kind: &'static str, count: u64) {
    counter!(INGEST_WARNINGS, "kind" => kind).increment(count);
}

pub fn prediction(model: &str, status: &'static str) {
    counter!(PREDICTIONS, "model" => model.to_string(), "status" => status).increment(1);
}

pub fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

pub fn observe_latency(model: &str, server_latency_ns: u64) {
    histogram!(SERVER_LATENCY, "model" => model.to_string()).record(seconds(server_latency_ns));
}

/// A model's metric handles, registered once (not looked up per window).
#[derive(Clone)]
pub struct ModelMetrics {
    pub queue_wait: metrics::Histogram,
    pub queue_depth: metrics::Gauge,
    inference: metrics::Histogram,
    batch_size: metrics::Histogram,
    batch_formation: metrics::Histogram,
}

impl ModelMetrics {
    pub fn new(model: &str) -> Self {
        let label = || [("model", model.to_string())];
        Self {
            queue_wait: histogram!(QUEUE_WAIT, &label()),
            queue_depth: gauge!(MODEL_QUEUE_DEPTH, &label()),
            inference: histogram!(INFERENCE, &label()),
            batch_size: histogram!(BATCH_SIZE, &label()),
            batch_formation: histogram!(BATCH_FORMATION, &label()),
        }
    }

    /// One model run of `n` windows, taken off the queue at `formed_from`, run from `start` to `end`.
    pub fn observe_batch(&self, n: usize, formed_from: u64, start: u64, end: u64) {
        self.batch_size.record(n as f64);
        self.batch_formation.record(seconds(start.saturating_sub(formed_from)));
        self.inference.record(seconds(end.saturating_sub(start)));
    }
}

pub fn inference_estimate(model: &str, batch: usize, ns: u64) {
    gauge!(INFERENCE_ESTIMATE, "model" => model.to_string(), "batch" => batch.to_string()).set(seconds(ns));
}

/// A server-side stage (`handoff`, `dsp`, `publish`) that took `ns`.
pub fn stage(stage: &'static str, ns: u64) {
    histogram!(STAGE, "stage" => stage).record(seconds(ns));
}

pub fn observe_gallery_search(search_ns: u64) {
    histogram!(GALLERY_SEARCH).record(seconds(search_ns));
}

pub const GALLERY_SEARCH: &str = "myelin_gallery_search_seconds";
pub const RECORDING_DROPPED: &str = "myelin_recording_dropped_total";
pub const RECORDING_ERRORS: &str = "myelin_recording_errors_total";
pub const LSL_CLOCK_OFFSET: &str = "myelin_lsl_clock_offset_seconds";
pub const LSL_CLOCK_UNCERTAINTY: &str = "myelin_lsl_clock_uncertainty_seconds";
pub const LSL_STREAM_LOSSES: &str = "myelin_lsl_stream_losses_total";
pub const LSL_OUTLET_DROPPED: &str = "myelin_lsl_outlet_dropped_total";
pub const CALLS_REFUSED: &str = "myelin_calls_refused_total";
pub const NATS_PUBLISHED: &str = "myelin_nats_published_total";
pub const NATS_DROPPED: &str = "myelin_nats_dropped_total";
pub const NATS_CONNECTED: &str = "myelin_nats_connected";
pub const TLS_HANDSHAKE_FAILURES: &str = "myelin_tls_handshake_failures_total";
pub const TLS_RELOADS: &str = "myelin_tls_reloads_total";
pub const CONNECTIONS_SHED: &str = "myelin_connections_shed_total";
pub const UNAUTHENTICATED_REFUSED: &str = "myelin_unauthenticated_calls_refused_total";
pub const FORWARDED_CALLS: &str = "myelin_forwarded_calls_total";

/// Descriptions of the LSL and recording metrics (called from `install`).
fn describe_lsl_and_recording() {
    describe_counter!(RECORDING_DROPPED, "Recording events not written because the recorder's queue was full.");
    describe_counter!(RECORDING_ERRORS, "Recordings stopped by a write error (a full disk); each file ends with its last whole chunk.");
    describe_gauge!(LSL_CLOCK_OFFSET, "Latest LSL clock offset of a source (seconds to add to its timestamps), by stream.");
    describe_gauge!(LSL_CLOCK_UNCERTAINTY, "Uncertainty (round-trip time) of the latest LSL clock offset, by stream.");
    describe_counter!(LSL_STREAM_LOSSES, "LSL sources that stopped delivering samples (each is reconnected automatically).");
    describe_counter!(LSL_OUTLET_DROPPED, "Predictions not pushed to an LSL outlet because its queue was full.");
    describe_counter!(CALLS_REFUSED, "Calls refused by authentication or authorization, by reason: unauthenticated, no_scope, not_owner.");
    describe_counter!(TLS_HANDSHAKE_FAILURES, "TLS handshakes that failed (plaintext clients, untrusted client certificates), by port.");
    describe_counter!(NATS_PUBLISHED, "Predictions published on NATS ([publish.nats]).");
    describe_counter!(
        NATS_DROPPED,
        "Predictions not published on NATS, by reason: disconnected, queue_full (a slow server), lagged, publish_failed."
    );
    describe_gauge!(NATS_CONNECTED, "1 while the NATS connection is up, 0 while it reconnects.");
    describe_counter!(
        CONNECTIONS_SHED,
        "Connections closed before they were served, by port and reason: first_byte_timeout (sent nothing), evicted (the oldest waiting, for a newcomer)."
    );
    describe_counter!(
        UNAUTHENTICATED_REFUSED,
        "Calls to methods that need no credentials (health, open reflection) refused because limits.unauthenticated_calls were open."
    );
    describe_counter!(FORWARDED_CALLS, "Calls for a session another replica holds, forwarded to it (cluster), by destination replica.");
    describe_counter!(TLS_RELOADS, "TLS certificate and principal reloads (SIGHUP or a changed file), by outcome.");
}
