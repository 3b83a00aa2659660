//! The `[limits]` section: what clients may ask of the server.

use serde::{Deserialize, Serialize};

/// What clients may ask of the server, each refused (INVALID_ARGUMENT for one unreasonable
/// request, RESOURCE_EXHAUSTED when the server is full) before anything is allocated.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Live sessions (ingest streams and LSL sources) at once.
    pub sessions: usize,
    /// Channels in one stream.
    pub channels: usize,
    /// Highest nominal rate of a stream, Hz.
    pub rate_hz: f64,
    /// Ring memory of one session: its raw rings plus its attachments' filtered rings, bytes.
    pub session_buffer_bytes: u64,
    /// Ring and calibration memory of the whole server, bytes.
    pub server_buffer_bytes: u64,
    /// Attachments on one session.
    pub attachments_per_session: usize,
    /// Open Subscribe streams.
    pub subscribers: usize,
    /// Attachments publishing LSL outlets.
    pub lsl_outlets: usize,
    /// LSL sources (ConnectLsl and configured) at once.
    pub lsl_sources: usize,
    /// Calibrations collecting or fitting at once.
    pub calibrations: usize,
    /// Bytes of a marker label, a channel label, unit or type, or a stream name.
    pub label_bytes: usize,
    /// Markers in one Markers message.
    pub markers_per_message: usize,
    /// Longest ConnectLsl resolve timeout a client may ask for, seconds.
    pub connect_lsl_timeout_s: f64,
    /// What one principal may hold at once, with authentication on (without it every caller is
    /// the same anonymous admin, held to the limits above only): live sessions, open Subscribe
    /// streams, calibrations. So one rig's runaway script cannot take every slot from the others.
    pub sessions_per_principal: usize,
    pub subscribers_per_principal: usize,
    pub calibrations_per_principal: usize,
    /// Calls in progress at once to methods that need no credentials (health checks and
    /// watches, reflection when open); beyond it RESOURCE_EXHAUSTED, so that nobody can hold
    /// thousands of health watches open without a token.
    pub unauthenticated_calls: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            sessions: 64,
            channels: 1024,
            rate_hz: 100_000.0,
            session_buffer_bytes: 1 << 30,
            server_buffer_bytes: 8 << 30,
            attachments_per_session: 64,
            subscribers: 1024,
            lsl_outlets: 64,
            lsl_sources: 32,
            calibrations: 4,
            label_bytes: 256,
            markers_per_message: 10_000,
            connect_lsl_timeout_s: 60.0,
            sessions_per_principal: 16,
            subscribers_per_principal: 256,
            calibrations_per_principal: 2,
            unauthenticated_calls: 256,
        }
    }
}

impl LimitsConfig {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        let limits = self;
        anyhow::ensure!(limits.rate_hz > 0.0 && limits.rate_hz.is_finite(), "limits.rate_hz must be > 0, got {}", limits.rate_hz);
        anyhow::ensure!(
            limits.connect_lsl_timeout_s > 0.0 && limits.connect_lsl_timeout_s.is_finite(),
            "limits.connect_lsl_timeout_s must be > 0, got {}",
            limits.connect_lsl_timeout_s
        );
        // 0 would lock every caller out; a semaphore holds at most usize::MAX >> 3 permits.
        for (key, value) in [
            ("limits.sessions_per_principal", limits.sessions_per_principal),
            ("limits.subscribers_per_principal", limits.subscribers_per_principal),
            ("limits.calibrations_per_principal", limits.calibrations_per_principal),
            ("limits.unauthenticated_calls", limits.unauthenticated_calls),
        ] {
            anyhow::ensure!((1..=1 << 20).contains(&value), "{key} must be 1 to {}, got {value}", 1 << 20);
        }
        anyhow::ensure!(
            limits.session_buffer_bytes <= limits.server_buffer_bytes,
            "limits.session_buffer_bytes ({}) must not exceed limits.server_buffer_bytes ({})",
            limits.session_buffer_bytes,
            limits.server_buffer_bytes
        );
        Ok(())
    }
}
