//! Every session the server knows, live or recently ended, by id. Opening one starts its worker
//! (and its recorder); nothing here ever waits on a session's work.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use myelin_proto::v1 as pb;
use tokio::sync::mpsc;

use super::directory::Directory;
use super::display::DisplayTap;
use super::error::SessionError;
use super::handle::Session;
use super::snapshot::Snapshot;
use super::source::Source;
use super::worker::{self, WorkerSpec};
use crate::auth::{Principal, audit};
use crate::budget::{MemoryBudget, Reservation};
use crate::config::{LimitsConfig, RecordingConfig, SessionsConfig, TimestampPolicy};
use crate::decode::job::InFlight;
use crate::id::shown;
use crate::metrics as m;
use crate::publish::Hub;
use crate::record::RecordingFile;

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
    /// With several replicas: who holds which session (set once, at start).
    directory: OnceLock<Arc<dyn Directory>>,
}

impl SessionManager {
    pub fn new(config: SessionsConfig, recording: RecordingConfig, limits: LimitsConfig, hub: Hub, memory: Arc<MemoryBudget>) -> Self {
        Self {
            sessions: RwLock::new(HashMap::new()),
            config,
            recording,
            limits,
            hub,
            memory,
            closed: AtomicBool::new(false),
            directory: OnceLock::new(),
        }
    }

    /// Sessions are claimed in `directory` before they open (several replicas). Once, at start.
    pub fn use_directory(&self, directory: Arc<dyn Directory>) {
        let _ = self.directory.set(directory);
    }

    pub fn config(&self) -> &SessionsConfig {
        &self.config
    }

    pub fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    /// Registers a new live session from its header (validated by the ingest layer) and starts
    /// its worker. `source`: the door its samples come through; the session belongs to `owner`.
    /// An id that another principal's session holds (live or still retained after it ended) is
    /// refused: only its owner (or an admin) may stream it again.
    ///
    /// The recording's file is created before the registry is locked, so that a stalled disk
    /// delays this session only, never the listings, attaches and opens of the others; every
    /// rule is checked before it (nothing is written for a refused session) and again, with the
    /// lock held, after it.
    pub fn open(&self, header: pb::StreamHeader, source: Source, owner: &Principal) -> Result<Arc<Session>, SessionError> {
        let bytes = self.admit(&self.sessions.read().unwrap_or_else(PoisonError::into_inner), &header, source, owner)?;
        let memory = self.memory.child(self.limits.session_buffer_bytes, "limits.session_buffer_bytes");
        let rings = memory.reserve(bytes, || format!("session {:?}", header.session_id))?;
        let Some(directory) = self.directory.get() else {
            return self.open_claimed(header, source, owner, memory, rings);
        };
        let session_id = header.session_id.clone();
        directory.claim(&session_id, owner)?;
        let opened = self.open_claimed(header, source, owner, memory, rings);
        match &opened {
            Ok(session) => directory.opened(session),
            Err(_) => directory.release(&session_id),
        }
        opened
    }

    fn open_claimed(
        &self,
        header: pb::StreamHeader,
        source: Source,
        owner: &Principal,
        memory: Arc<MemoryBudget>,
        rings: Reservation,
    ) -> Result<Arc<Session>, SessionError> {
        let file = if self.recording.enabled {
            let file = RecordingFile::create(&self.recording.dir, &header, source.as_str()).map_err(|error| {
                SessionError::Unavailable(format!(
                    "cannot record session {:?} in {}: {error}",
                    header.session_id,
                    self.recording.dir.display()
                ))
            })?;
            Some(file)
        } else {
            None
        };
        let mut sessions = self.sessions.write().unwrap_or_else(PoisonError::into_inner);
        self.forget_ended_in(&mut sessions);
        if let Err(error) = self.admit(&sessions, &header, source, owner) {
            drop(sessions);
            if let Some(file) = file {
                file.discard();
            }
            return Err(error);
        }
        let path = file.as_ref().map(|f| f.path.clone());
        let started = self.start(&mut sessions, header, source, owner, (memory, rings), path);
        drop(sessions);
        let session = match started {
            Ok(session) => session,
            Err(error) => {
                if let Some(file) = file {
                    file.discard();
                }
                return Err(error);
            }
        };
        // The recorder goes to the worker ahead of anything else: the door that feeds the
        // session gets it only once this returns.
        if let Some(file) = file {
            let flush = Duration::from_millis(self.recording.flush_interval_ms.max(10));
            match file.start(flush, self.recording.queue_events, &session.route, session.recording_error.clone()) {
                Ok(recorder) => session.record_to(recorder),
                Err(error) => {
                    let _ = session.recording_error.set(format!("starting the recording's writer thread failed: {error}"));
                }
            }
        }
        Ok(session)
    }

    /// Whether `owner` may open a session from `header` now; the bytes of its rings if so.
    fn admit(
        &self,
        sessions: &HashMap<String, Arc<Session>>,
        header: &pb::StreamHeader,
        source: Source,
        owner: &Principal,
    ) -> Result<u64, SessionError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SessionError::Unavailable("shutting down".into()));
        }
        let existing = sessions.get(&header.session_id).filter(|s| !s.ended_before(Duration::from_secs(self.config.retain_ended_seconds)));
        if let Some(existing) = existing.filter(|s| !owner.may_change(&s.owner)) {
            let resource = format!("session {:?}", existing.id);
            return Err(SessionError::Refused(audit::not_owner(owner, source.open_action(), &resource)));
        }
        if existing.is_some_and(|existing| existing.is_live()) {
            return Err(SessionError::AlreadyExists(format!("session {:?} is already being streamed by another call", header.session_id)));
        }
        let (mut live_all, mut live_lsl, mut live_own) = (0, 0, 0);
        for session in sessions.values().filter(|s| s.is_live()) {
            live_all += 1;
            live_lsl += usize::from(session.source == Source::Lsl);
            live_own += usize::from(session.owner == owner.name());
        }
        let limits = &self.limits;
        if live_all >= limits.sessions {
            return Err(SessionError::ResourceExhausted(format!("{live_all} sessions are live, the most at once (limits.sessions)")));
        }
        if source == Source::Lsl && live_lsl >= limits.lsl_sources {
            return Err(SessionError::ResourceExhausted(format!("{live_lsl} LSL sources are live, the most at once (limits.lsl_sources)")));
        }
        if owner.has_quota() && live_own >= limits.sessions_per_principal {
            return Err(SessionError::ResourceExhausted(format!(
                "principal {:?} has {live_own} live sessions, the most one principal may have (limits.sessions_per_principal)",
                owner.name()
            )));
        }
        let n_channels = header.channels.len();
        // Rate and channels are bounded by the ingest checks (limits.rate_hz, limits.channels).
        let capacity = self.capacity(header);
        // Samples, timestamps and receive times; attachments add their own filtered copies.
        let bytes = capacity as u64 * (n_channels as u64 * 4 + 16);
        if bytes > limits.session_buffer_bytes {
            return Err(SessionError::InvalidArgument(format!(
                "header: {n_channels} channels at {} Hz need {bytes} bytes of ring buffer for sessions.ring_buffer_seconds = {} s; one session may have {} (limits.session_buffer_bytes)",
                header.nominal_rate_hz, self.config.ring_buffer_seconds, limits.session_buffer_bytes
            )));
        }
        Ok(bytes)
    }

    fn capacity(&self, header: &pb::StreamHeader) -> usize {
        ((self.config.ring_buffer_seconds * header.nominal_rate_hz).ceil() as usize).max(1)
    }

    /// Starts the session's worker and registers it (its memory already reserved; its recording,
    /// if any, at `recording_path`, started once the registry is unlocked).
    fn start(
        &self,
        sessions: &mut HashMap<String, Arc<Session>>,
        header: pb::StreamHeader,
        source: Source,
        owner: &Principal,
        (memory, rings): (Arc<MemoryBudget>, Reservation),
        recording_path: Option<std::path::PathBuf>,
    ) -> Result<Arc<Session>, SessionError> {
        let route = self.hub.session_route(&header.session_id);
        let recording_error = Arc::new(std::sync::OnceLock::new());
        let n_channels = header.channels.len();
        let snapshot = Arc::new(Snapshot::default());
        let display = Arc::new(DisplayTap::new(n_channels, header.nominal_rate_hz));
        let in_flight = Arc::new(InFlight::default());
        let (commands, inbox) = mpsc::channel(self.config.worker_queue);
        let capacity = self.capacity(&header);
        let spec = WorkerSpec {
            session_id: header.session_id.clone(),
            source,
            capacity,
            n_channels,
            rate: header.nominal_rate_hz,
            max_pending_markers: self.config.max_pending_markers,
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
            source_error: std::sync::OnceLock::new(),
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
            .ok_or_else(|| SessionError::NotFound(format!("attachment {} does not exist", shown(attachment_id))))
    }
}
