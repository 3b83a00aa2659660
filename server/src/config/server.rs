//! The `[server]` section: the ports, their transport and the process's own settings.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// gRPC listen address (Ingest, Decoding, health, reflection).
    pub grpc_addr: SocketAddr,
    /// HTTP listen address (`/metrics`, `/healthz`).
    pub http_addr: SocketAddr,
    /// Largest gRPC message accepted, in bytes; larger ones end the call with RESOURCE_EXHAUSTED.
    pub max_message_bytes: usize,
    /// HTTP/2 stream window: how much of a stream's data waits in the server while its session's
    /// worker is busy (that stream is held back, by flow control, beyond it).
    pub http2_stream_window_bytes: u32,
    /// HTTP/2 connection window, shared by every stream of a connection: many stream windows
    /// wide, so that streams held back never hold back the others on their connection.
    pub http2_connection_window_bytes: u32,
    /// Log format: "pretty" or "json" (anything else is refused at start).
    pub log_format: LogFormat,
    /// HTTP/2 keepalive: a ping after this many seconds of silence on a connection, and the
    /// connection closed (its calls ended) when no answer comes within the timeout, so a peer
    /// that lost power does not hold its calls open.
    pub http2_keepalive_interval_s: f64,
    pub http2_keepalive_timeout_s: f64,
    /// Seconds from SIGTERM (or Ctrl-C) to exit: calls end with UNAVAILABLE, queued windows are
    /// decoded, recordings closed, threads joined; what is still running then is cut off.
    pub shutdown_grace_s: f64,
    /// Serve a non-loopback address without TLS and authentication (a closed lab network):
    /// warned about at every start. Otherwise the server refuses to start that way.
    pub allow_insecure_public: bool,
    /// A new connection (either port) that sends nothing for this long is closed: every
    /// protocol served here has the client speak first.
    pub first_byte_timeout_s: f64,
    /// A TLS handshake not finished by then is given up.
    pub tls_handshake_timeout_s: f64,
    /// Connections waiting for their first byte or handshake, per port, at most; beyond it the
    /// oldest waiting is closed for each newcomer (so idle connections cannot lock clients out).
    pub pending_connections: usize,
    /// The same from one address.
    pub pending_connections_per_address: usize,
    /// HTTP port: a request's headers must have arrived this long after the connection (or its
    /// previous request) was ready for them; an idle keep-alive connection is closed then too.
    pub http_header_timeout_s: f64,
    /// HTTP port: a connection that reads and writes nothing for this long is closed.
    pub http_idle_timeout_s: f64,
    /// gRPC port: HTTP/2 streams (calls) open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub http2_max_concurrent_streams: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_addr: "127.0.0.1:50051".parse().expect("valid address"),
            http_addr: "127.0.0.1:9464".parse().expect("valid address"),
            max_message_bytes: 4 * 1024 * 1024,
            http2_stream_window_bytes: 256 * 1024,
            http2_connection_window_bytes: 16 * 1024 * 1024,
            log_format: LogFormat::Pretty,
            http2_keepalive_interval_s: 10.0,
            http2_keepalive_timeout_s: 20.0,
            shutdown_grace_s: 10.0,
            allow_insecure_public: false,
            first_byte_timeout_s: 3.0,
            tls_handshake_timeout_s: 10.0,
            pending_connections: 256,
            pending_connections_per_address: 64,
            http_header_timeout_s: 10.0,
            http_idle_timeout_s: 60.0,
            http2_max_concurrent_streams: 256,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    Pretty,
    /// One JSON object per line, for a log collector.
    Json,
}
