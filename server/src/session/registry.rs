//! Every session the server knows, live or recently ended, by id. Opening one starts its worker
//! (and its recorder); nothing here ever waits on a session's work.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use myelin_proto::v1 as pb;
use tokio::sync::mpsc;

use super::display::DisplayTap;
use super::error::SessionError;
use super::handle::Session;
use super::snapshot::Snapshot;
use super::worker::{self, WorkerSpec};
use crate::auth::{Principal, audit};
use crate::budget::MemoryBudget;
use crate::config::{LimitsConfig, RecordingConfig, SessionsConfig, TimestampPolicy};
use crate::decode::job::InFlight;
use crate::metrics as m;
use crate::publish::Hub;
use crate::record::Recorder;

pub struct SessionManager {
    sessions: RwLock<HashMap<String, Arc<Session>>>,
    config: SessionsConfig,
    recording: RecordingConfig,
    limits: LimitsConfig,
    hub: Hub,
    /// The server's buffer memory; each session's rings draw on it.
    memory: Arc<MemoryBudget>,
    /// Set when the server shuts down: no session opens any more.
    closed: AtomicBool,
}

impl SessionManager {
    pub fn new(config: SessionsConfig, recording: RecordingConfig, limits: LimitsConfig, hub: Hub, memory: Arc<MemoryBudget>) -> Self {
        Self { sessions: RwLock::new(HashMap::new()), config, recording, limits, hub, memory, closed: AtomicBool::new(false) }
    }

    pub fn config(&self) -> &SessionsConfig {
        &self.config
    }

    pub fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    /// Registers a new live session from its header (validated by the ingest layer) and starts
    /// its worker. `source` says where its samples come from ("grpc", "lsl"); the session belongs
    /// to `owner`. An id that another principal's session holds (live or still retained after
    /// it ended) is refused: only its owner (or an admin) may stream it again.
    pub fn open(&self, header: pb::StreamHeader, source: &'static str, owner: &Principal) -> Result<Arc<Session>, SessionError> {
        let mut sessions = self.sessions.write().unwrap_or_else(PoisonError::into_inner);
        if self.closed.load(Ordering::Acquire) {
            return Err(SessionError::Unavailable("shutting down".into()));
        }
        self.forget_ended_in(&mut sessions);
        if let Some(existing) = sessions.get(&header.session_id).filter(|s| !owner.may_change(&s.owner)) {
            let action = if source == "lsl" { "connect_lsl" } else { "open_session" };
            let resource = format!("session {:?}", existing.id);
            return Err(SessionError::Refused(audit::not_owner(owner, action, &resource)));
        }
        if sessions.get(&header.session_id).is_some_and(|existing| existing.is_live()) {
            return Err(SessionError::AlreadyExists(format!("session {:?} is already being streamed by another call", header.session_id)));
        }
        let live = sessions.values().filter(|s| s.is_live());
        let (live_all, live_lsl) = live.fold((0, 0), |(all, lsl), s| (all + 1, lsl + usize::from(s.source == "lsl")));
        if live_all >= self.limits.sessions {
            return Err(SessionError::ResourceExhausted(format!("{live_all} sessions are live, the most at once (limits.sessions)")));
        }
        if source == "lsl" && live_lsl >= self.limits.lsl_sources {
            return Err(SessionError::ResourceExhausted(format!("{live_lsl} LSL sources are live, the most at once (limits.lsl_sources)")));
        }
        let n_channels = header.channels.len();
        // Rate and channels are bounded by the ingest checks (limits.rate_hz, limits.channels).
        let capacity = ((self.config.ring_buffer_seconds * header.nominal_rate_hz).ceil() as usize).max(1);
        // Samples, timestamps and receive times; attachments add their own filtered copies.
        let bytes = capacity as u64 * (n_channels as u64 * 4 + 16);
        if bytes > self.limits.session_buffer_bytes {
            return Err(SessionError::InvalidArgument(format!(
                "header: {n_channels} channels at {} Hz need {bytes} bytes of ring buffer for sessions.ring_buffer_seconds = {} s; one session may have {} (limits.session_buffer_bytes)",
                header.nominal_rate_hz, self.config.ring_buffer_seconds, self.limits.session_buffer_bytes
            )));
        }
        let memory = self.memory.child(self.limits.session_buffer_bytes, "limits.session_buffer_bytes");
        let rings = memory.reserve(bytes, || format!("session {:?}", header.session_id))?;
        let route = self.hub.session_route(&header.session_id);
        let recording_error = Arc::new(std::sync::OnceLock::new());
        let recorder = if self.recording.enabled {
            let flush = Duration::from_millis(self.recording.flush_interval_ms.max(10));
            let recorder =
                Recorder::start(&self.recording.dir, &header, flush, source, &route, recording_error.clone()).map_err(|error| {
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
        let display = Arc::new(DisplayTap::new(n_channels, header.nominal_rate_hz));
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
            memory: rings,
            max_attachments: self.limits.attachments_per_session,
            repair_timestamps: self.config.timestamp_policy == TimestampPolicy::Repair,
            display: display.clone(),
        };
        let worker =
            worker::spawn(spec, inbox).map_err(|e| SessionError::Unavailable(format!("starting the session's worker thread: {e}")))?;
        let session = Arc::new(Session {
            id: header.session_id.clone(),
            source,
            owner: owner.name().to_string(),
            display,
            clock_offset: AtomicU64::new(f64::NAN.to_bits()),
            capacity,
            recording_path,
            recording_error,
            header,
            route,
            commands,
            snapshot,
            live: AtomicBool::new(true),
            ended_at: Mutex::new(None),
            in_flight,
            threads: Mutex::new(vec![worker]),
            memory,
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
