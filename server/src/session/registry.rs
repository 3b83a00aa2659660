//! Every session the server knows, live or recently ended, by id. Opening one starts its worker
//! (and its recorder); nothing here ever waits on a session's work.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use myelin_proto::v1 as pb;
use tokio::sync::mpsc;

use super::error::SessionError;
use super::handle::Session;
use super::snapshot::Snapshot;
use super::worker::{self, WorkerSpec};
use crate::config::{RecordingConfig, SessionsConfig};
use crate::decode::job::InFlight;
use crate::metrics as m;
use crate::publish::Hub;
use crate::record::Recorder;

/// Largest ring buffer one session may ask for (a header with an absurd rate or channel count
/// is refused instead of aborting the process on allocation).
const MAX_SESSION_BUFFER_BYTES: f64 = 4.0 * (1u64 << 30) as f64;

pub struct SessionManager {
    sessions: RwLock<HashMap<String, Arc<Session>>>,
    config: SessionsConfig,
    recording: RecordingConfig,
    hub: Hub,
    /// Set when the server shuts down: no session opens any more.
    closed: AtomicBool,
}

impl SessionManager {
    pub fn new(config: SessionsConfig, recording: RecordingConfig, hub: Hub) -> Self {
        Self { sessions: RwLock::new(HashMap::new()), config, recording, hub, closed: AtomicBool::new(false) }
    }

    pub fn config(&self) -> &SessionsConfig {
        &self.config
    }

    /// Registers a new live session from its header (validated by the ingest layer) and starts
    /// its worker. `source` says where its samples come from ("grpc", "lsl").
    pub fn open(&self, header: pb::StreamHeader, source: &'static str) -> Result<Arc<Session>, SessionError> {
        let mut sessions = self.sessions.write().unwrap_or_else(PoisonError::into_inner);
        if self.closed.load(Ordering::Acquire) {
            return Err(SessionError::Unavailable("shutting down".into()));
        }
        self.forget_ended_in(&mut sessions);
        if sessions.get(&header.session_id).is_some_and(|existing| existing.is_live()) {
            return Err(SessionError::AlreadyExists(format!("session {:?} is already being streamed by another call", header.session_id)));
        }
        let n_channels = header.channels.len();
        let capacity = ((self.config.ring_buffer_seconds * header.nominal_rate_hz).ceil() as usize).max(1);
        // Samples, timestamps and receive times; attachments add their own filtered copies.
        let bytes = capacity as f64 * (n_channels as f64 * 4.0 + 16.0);
        if bytes > MAX_SESSION_BUFFER_BYTES {
            return Err(SessionError::InvalidArgument(format!(
                "header: {n_channels} channels at {} Hz need {:.1} GiB for sessions.ring_buffer_seconds = {} s; the limit is {:.0} GiB",
                header.nominal_rate_hz,
                bytes / f64::from(1u32 << 30),
                self.config.ring_buffer_seconds,
                MAX_SESSION_BUFFER_BYTES / f64::from(1u32 << 30)
            )));
        }
        let route = self.hub.session_route(&header.session_id);
        let recorder = if self.recording.enabled {
            let flush = Duration::from_millis(self.recording.flush_interval_ms.max(10));
            let recorder = Recorder::start(&self.recording.dir, &header, flush, source, &route).map_err(|error| {
                SessionError::Unavailable(format!(
                    "cannot record session {:?} in {}: {error}",
                    header.session_id,
                    self.recording.dir.display()
                ))
            })?;
            Some(recorder)
        } else {
            None
        };
        let recording_path = recorder.as_ref().map(|r| r.path.clone());
        let snapshot = Arc::new(Snapshot::default());
        let in_flight = Arc::new(InFlight::default());
        let (commands, inbox) = mpsc::channel(self.config.worker_queue);
        let spec = WorkerSpec {
            session_id: header.session_id.clone(),
            capacity,
            n_channels,
            rate: header.nominal_rate_hz,
            max_pending_markers: self.config.max_pending_markers,
            recorder,
            snapshot: snapshot.clone(),
            in_flight: in_flight.clone(),
        };
        let worker =
            worker::spawn(spec, inbox).map_err(|e| SessionError::Unavailable(format!("starting the session's worker thread: {e}")))?;
        let session = Arc::new(Session {
            id: header.session_id.clone(),
            source,
            capacity,
            recording_path,
            header,
            route,
            commands,
            snapshot,
            live: AtomicBool::new(true),
            ended_at: Mutex::new(None),
            in_flight,
            threads: Mutex::new(vec![worker]),
        });
        metrics::gauge!(m::LIVE_SESSIONS).increment(1.0);
        sessions.insert(session.id.clone(), session.clone());
        Ok(session)
    }

    /// Forgets sessions that ended more than `sessions.retain_ended_seconds` ago: their workers
    /// stop once the last call using them is done, freeing their rings.
    pub fn forget_ended(&self) {
        self.forget_ended_in(&mut self.sessions.write().unwrap_or_else(PoisonError::into_inner));
    }

    fn forget_ended_in(&self, sessions: &mut HashMap<String, Arc<Session>>) {
        let retain = Duration::from_secs(self.config.retain_ended_seconds);
        sessions.retain(|_, s| !s.ended_before(retain));
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.read().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
    }

    /// Every session, sorted by id.
    pub fn list(&self) -> Vec<Arc<Session>> {
        let mut list: Vec<_> = self.sessions.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Shutdown: no session opens any more; every session ends (its windows already cut are
    /// published and its recording closed) and its threads are joined until `deadline`, once
    /// the calls still using it have ended. Blocking.
    pub fn shutdown(&self, deadline: std::time::Instant) {
        self.closed.store(true, Ordering::Release);
        let sessions: Vec<Arc<Session>> = self.sessions.write().unwrap_or_else(PoisonError::into_inner).drain().map(|(_, s)| s).collect();
        let mut threads = Vec::new();
        for session in &sessions {
            session.end();
            // Its worker stops once nobody holds the session: not its sources (which stop on the
            // shutdown signal) nor the calls using it.
            threads.extend(session.take_threads());
        }
        drop(sessions);
        let left = crate::shutdown::join_until(threads, deadline);
        if left > 0 {
            tracing::warn!(threads = left, "session threads still running at the shutdown deadline");
        }
    }

    /// The session that has attachment `attachment_id`.
    pub fn with_attachment(&self, attachment_id: &str) -> Result<Arc<Session>, SessionError> {
        self.list()
            .into_iter()
            .find(|s| s.has_attachment(attachment_id))
            .ok_or_else(|| SessionError::NotFound(format!("attachment {attachment_id:?} does not exist")))
    }
}
