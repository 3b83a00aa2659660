//! Server configuration: one TOML file (documented example: `deploy/myelin.example.toml`) with
//! environment overrides `MYELIN_<SECTION>__<KEY>` (e.g. `MYELIN_SERVER__GRPC_ADDR=0.0.0.0:50051`).
//! Precedence: built-in defaults < file < environment.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

mod cluster;
mod limits;
mod nats;
mod security;
mod server;
pub use cluster::ClusterConfig;
pub use limits::LimitsConfig;
pub use nats::NatsConfig;
pub use security::{AuthConfig, PrincipalConfig, Scope, TlsConfig, check_public_binding};
pub use server::{LogFormat, ServerConfig};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub models: ModelsConfig,
    pub sessions: SessionsConfig,
    pub decoding: DecodingConfig,
    pub publish: PublishConfig,
    pub lsl: LslConfig,
    pub recording: RecordingConfig,
    pub limits: LimitsConfig,
    pub demo: DemoConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub cluster: ClusterConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LslConfig {
    /// Path of liblsl; empty = runtime/liblsl.so.2 (installed by deploy/setup.sh from the pylsl
    /// wheel), then the system search path. Without liblsl the server runs and every LSL request
    /// fails with UNAVAILABLE.
    pub library: PathBuf,
    /// How long to wait for a stream to appear when connecting a source.
    pub resolve_timeout_seconds: f64,
    /// No samples for this long marks a source as lost (it keeps reconnecting).
    pub stall_seconds: f64,
    /// LSL sources connected at start (each becomes a session).
    pub sources: Vec<LslSourceConfig>,
}

impl Default for LslConfig {
    fn default() -> Self {
        Self { library: PathBuf::new(), resolve_timeout_seconds: 5.0, stall_seconds: 1.0, sources: Vec::new() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LslSourceConfig {
    /// Session id for the stream.
    pub session_id: String,
    /// LSL predicate of the data stream, e.g. "name='EEG' and type='EEG'".
    pub data: String,
    /// LSL predicate of its marker stream (string or numeric); empty = none.
    pub markers: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Record every session to XDF (raw samples, markers, predictions, clock offsets).
    pub enabled: bool,
    /// One file per session: <dir>/<session id>-<UTC start time>.xdf.
    pub dir: PathBuf,
    /// Longest time data waits in memory before it is written and flushed (a crash loses at most this).
    pub flush_interval_ms: u64,
    /// Events (a chunk of samples, a marker message, a prediction) a recording holds in memory
    /// while its disk is slow; beyond it they are dropped, counted and warned about (once per
    /// 10 s), and the session carries on.
    pub queue_events: usize,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self { enabled: false, dir: PathBuf::from("recordings"), flush_interval_ms: 250, queue_events: 65_536 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Directory scanned (recursively) for model cards (`*.card.toml`).
    pub dir: PathBuf,
    /// Where decoders fitted by live calibration are saved (card + parameters, one version per
    /// fit); also scanned at start, so they can be attached by id after a restart.
    pub calibrations_dir: PathBuf,
    /// Directory that retrieval galleries are loaded from (`AttachRequest.gallery.path` is
    /// relative to it).
    pub galleries_dir: PathBuf,
    /// Execution providers in order of preference: "cuda", "tensorrt", "cpu". A GPU provider that
    /// cannot load falls back to the next one, and finally to CPU, with one log line.
    pub execution_providers: Vec<String>,
    /// ONNX Runtime intra-op threads per model session.
    pub intra_op_threads: usize,
    /// Dedicated inference threads per model (each owns one ONNX Runtime session); 0 = sized to
    /// the machine (half its cores, 1 to 4).
    pub workers_per_model: usize,
    /// Windows waiting for each model, ordered by deadline; a full queue sheds the window with
    /// the least slack (status SHED).
    pub queue_depth: usize,
    /// How long a batch may wait for more windows after its first (microseconds; never past
    /// what the earliest deadline in it allows). 0: a batch takes only the windows already
    /// waiting, so that no window waits for company.
    pub max_batch_delay_us: u64,
    /// Models whose single-window run is measured below this (microseconds) also decode on the
    /// session's own thread when nothing waits for them: a hand-off to an inference thread would
    /// cost more than the decode. 0 = never.
    pub inline_below_us: u64,
    /// Path of libonnxruntime; empty = $ORT_DYLIB_PATH, then next to the executable, then
    /// runtime/libonnxruntime.so.1.31.1 under the working directory, then the system search path.
    pub onnxruntime_library: PathBuf,
}

impl ModelsConfig {
    /// Inference threads per model: `workers_per_model`, or half the machine's cores (1 to 4).
    pub fn workers(&self) -> usize {
        match self.workers_per_model {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get() / 2).clamp(1, 4),
            n => n,
        }
    }
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("models"),
            calibrations_dir: PathBuf::from("calibrations"),
            galleries_dir: PathBuf::from("galleries"),
            execution_providers: vec!["cpu".into()],
            intra_op_threads: 1,
            workers_per_model: 0,
            queue_depth: 512,
            max_batch_delay_us: 0,
            inline_below_us: 100,
            onnxruntime_library: PathBuf::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NonFinitePolicy {
    /// End the ingest call with INVALID_ARGUMENT.
    Reject,
    /// Replace NaN/Inf by 0 and warn.
    ZeroFill,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TimestampPolicy {
    /// Keep the stream: timestamps that go backwards are raised to the last one (so they never
    /// decrease), with a warning; the recording keeps the raw ones.
    Repair,
    /// End the ingest call with INVALID_ARGUMENT.
    Reject,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Seconds of raw samples kept per stream (windows and late markers can reach this far back).
    pub ring_buffer_seconds: f64,
    /// What to do with NaN / Inf samples.
    pub non_finite_policy: NonFinitePolicy,
    /// What to do with timestamps that go backwards (clock jitter of real rigs).
    pub timestamp_policy: TimestampPolicy,
    /// Markers waiting for their samples, per session; older ones are dropped with a warning.
    pub max_pending_markers: usize,
    /// Sessions that ended are forgotten after this many seconds.
    pub retain_ended_seconds: u64,
    /// Messages waiting for a session's worker thread; a stream waits while its queue is full.
    pub worker_queue: usize,
    /// An Ingest call that sends nothing for this long is taken for dead: it ends with
    /// DEADLINE_EXCEEDED and its session id is free again.
    pub ingest_idle_timeout_s: f64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            ring_buffer_seconds: 30.0,
            non_finite_policy: NonFinitePolicy::Reject,
            timestamp_policy: TimestampPolicy::Repair,
            max_pending_markers: 1024,
            retain_ended_seconds: 600,
            worker_queue: 16,
            ingest_idle_timeout_s: 60.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodingConfig {
    /// Latency budget used when an Attach asks for 0 ms.
    pub default_latency_budget_ms: u32,
}

impl Default for DecodingConfig {
    fn default() -> Self {
        Self { default_latency_budget_ms: 100 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    /// Predictions buffered per subscriber; a subscriber further behind loses its oldest ones.
    pub subscriber_queue: usize,
    /// Predictions each attachment keeps for subscribers that resume after a sequence number
    /// (`SubscribeRequest.after_sequence`); 0: none.
    pub replay_predictions: usize,
    /// Every prediction also published on a NATS server.
    pub nats: NatsConfig,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self { subscriber_queue: 256, replay_predictions: 256, nats: NatsConfig::default() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Replay the bundled real recording into this server, attach `model_id`, print predictions.
    pub enabled: bool,
    pub model_id: String,
    /// Replay speed (1 = real time).
    pub speed: f64,
    /// Marker codes that open a window.
    pub marker_codes: Vec<i32>,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self { enabled: false, model_id: "erp-linear-muse".into(), speed: 1.0, marker_codes: vec![1, 2] }
    }
}

impl Config {
    /// Defaults, then the file (if any), then `MYELIN_*` environment variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                anyhow::bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only MYELIN_<SECTION>__<KEY> variables are configuration; other MYELIN_* variables
        // (MYELIN_SERVER for myelin-cli, MYELIN_BIN for the tests) are not.
        figment = figment.merge(Env::prefixed("MYELIN_").filter(|key| key.as_str().contains("__")).split("__"));
        let config: Config = figment.extract().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// [`check_public_binding`] for the two ports.
    pub fn check_public_binding(&self) -> anyhow::Result<bool> {
        let addresses = [("server.grpc_addr", self.server.grpc_addr), ("server.http_addr", self.server.http_addr)];
        check_public_binding(&addresses, &self.tls, &self.auth, self.server.allow_insecure_public)
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.sessions.ring_buffer_seconds > 0.0, "sessions.ring_buffer_seconds must be > 0");
        anyhow::ensure!(self.models.queue_depth > 0, "models.queue_depth must be > 0");
        anyhow::ensure!(self.models.workers_per_model <= 64, "models.workers_per_model must be 0 (sized to the machine) to 64");
        anyhow::ensure!(self.models.max_batch_delay_us <= 1_000_000, "models.max_batch_delay_us must be at most 1000000 (1 s)");
        // Microseconds are turned into nanoseconds: beyond a second nothing is cheap, and u64 would overflow.
        anyhow::ensure!(self.models.inline_below_us <= 1_000_000, "models.inline_below_us must be at most 1000000 (1 s)");
        // Queues made per session and per route: bounded, so that a typo cannot ask for more than
        // the machine has (a route's ring is allocated whole, a slot per prediction).
        for (key, value, most) in [
            ("sessions.worker_queue", self.sessions.worker_queue, 65_536),
            ("publish.subscriber_queue", self.publish.subscriber_queue, 1 << 20),
            ("recording.queue_events", self.recording.queue_events, 1 << 24),
            ("server.pending_connections", self.server.pending_connections, 65_536),
            ("server.pending_connections_per_address", self.server.pending_connections_per_address, 65_536),
            ("server.http2_max_concurrent_streams", self.server.http2_max_concurrent_streams as usize, 1 << 20),
        ] {
            anyhow::ensure!((1..=most).contains(&value), "{key} must be 1 to {most}, got {value}");
        }
        anyhow::ensure!(self.server.max_message_bytes >= 1024, "server.max_message_bytes must be >= 1024");
        for (key, value) in [
            ("server.http2_keepalive_interval_s", self.server.http2_keepalive_interval_s),
            ("server.http2_keepalive_timeout_s", self.server.http2_keepalive_timeout_s),
            ("sessions.ingest_idle_timeout_s", self.sessions.ingest_idle_timeout_s),
            ("server.first_byte_timeout_s", self.server.first_byte_timeout_s),
            ("server.tls_handshake_timeout_s", self.server.tls_handshake_timeout_s),
            ("server.http_header_timeout_s", self.server.http_header_timeout_s),
            ("server.http_idle_timeout_s", self.server.http_idle_timeout_s),
        ] {
            anyhow::ensure!(value > 0.0 && value <= 86_400.0, "{key} must be > 0 and <= 86400 s, got {value}");
        }
        anyhow::ensure!(
            self.server.shutdown_grace_s > 0.0 && self.server.shutdown_grace_s <= 3600.0,
            "server.shutdown_grace_s must be > 0 and <= 3600, got {}",
            self.server.shutdown_grace_s
        );
        // HTTP/2 allows windows of 65,535 bytes to 2^31 - 1.
        for (key, value) in [
            ("server.http2_stream_window_bytes", self.server.http2_stream_window_bytes),
            ("server.http2_connection_window_bytes", self.server.http2_connection_window_bytes),
        ] {
            anyhow::ensure!((65_535..=i32::MAX as u32).contains(&value), "{key} must be 65535 to 2147483647 bytes, got {value}");
        }
        self.limits.validate()?;
        security::validate(&self.tls)?;
        self.publish.nats.validate()?;
        anyhow::ensure!(
            self.publish.replay_predictions <= 65_536,
            "publish.replay_predictions must be 0 to 65536, got {}",
            self.publish.replay_predictions
        );
        self.cluster.validate(self.server.grpc_addr)?;
        for provider in &self.models.execution_providers {
            anyhow::ensure!(
                matches!(provider.as_str(), "cpu" | "cuda" | "tensorrt"),
                "models.execution_providers: unknown provider {provider:?} (expected cpu, cuda or tensorrt)"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
