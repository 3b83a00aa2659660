//! A session as everyone but its worker sees it: the stream's header, the worker's snapshot,
//! and the door to the worker. Every call that changes the session is a message to the worker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use myelin_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};

use super::attachment::AttachmentState;
use super::command::{Chunk, ChunkDone, Command, MarkersDone};
use super::error::SessionError;
use super::snapshot::Snapshot;
use crate::budget::MemoryBudget;
use crate::decode::job::InFlight;
use crate::metrics as m;
use crate::publish::SessionRoute;

pub struct Session {
    pub id: String,
    pub header: pb::StreamHeader,
    /// The door its samples come through.
    pub source: super::source::Source,
    /// The principal that opened it: only it (and admins) may stream it again.
    pub owner: String,
    /// The dashboard's decimated copy of its signal and markers.
    pub display: Arc<super::display::DisplayTap>,
    /// Latest LSL clock offset (f64 bits; NaN: none measured, or not an LSL source).
    pub(super) clock_offset: std::sync::atomic::AtomicU64,
    /// Samples each of the session's rings holds (`sessions.ring_buffer_seconds` of them).
    pub capacity: usize,
    pub recording_path: Option<std::path::PathBuf>,
    /// Set by the recorder if a write error stopped it.
    pub recording_error: Arc<std::sync::OnceLock<String>>,
    pub(super) route: Arc<SessionRoute>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) live: AtomicBool,
    pub(super) ended_at: Mutex<Option<Instant>>,
    /// Windows cut and not yet published, shared with every attachment.
    pub(super) in_flight: Arc<InFlight>,
    /// The worker's thread and the source threads feeding it (LSL inlets), joined at shutdown.
    pub(super) threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// The session's ring memory (`limits.session_buffer_bytes`, within the server's budget):
    /// its raw rings hold a reservation, each attachment's ring takes one.
    pub memory: Arc<MemoryBudget>,
    /// Why its source stopped feeding it, if an error did (an LSL inlet).
    pub(super) source_error: std::sync::OnceLock<String>,
}

impl Session {
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Ended more than `retain` ago.
    pub(super) fn ended_before(&self, retain: Duration) -> bool {
        !self.is_live() && self.ended_at.lock().unwrap_or_else(PoisonError::into_inner).is_some_and(|t| t.elapsed() >= retain)
    }

    /// Where this session's predictions are published.
    pub fn route(&self) -> &Arc<SessionRoute> {
        &self.route
    }

    /// The counter of the session's windows in flight, for its attachments.
    pub fn in_flight(&self) -> &Arc<InFlight> {
        &self.in_flight
    }

    /// A thread that feeds this session (an LSL inlet), joined when the server shuts down.
    pub fn add_source_thread(&self, thread: std::thread::JoinHandle<()>) {
        self.threads.lock().unwrap_or_else(PoisonError::into_inner).push(thread);
    }

    pub(super) fn take_threads(&self) -> Vec<std::thread::JoinHandle<()>> {
        std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The stream ended: marks the session ended at once and tells its worker (after whatever it
    /// has queued).
    pub fn end(&self) {
        if self.live.swap(false, Ordering::AcqRel) {
            metrics::gauge!(m::LIVE_SESSIONS).decrement(1.0);
        }
        *self.ended_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        if let Err(mpsc::error::TrySendError::Full(end)) = self.commands.try_send(Command::End) {
            let commands = self.commands.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(async move { commands.send(end).await })),
                Err(_) => drop(commands.blocking_send(end)),
            }
        }
    }

    /// Hands a chunk to the worker (waiting while its queue is full: backpressure on the stream)
    /// and waits until it was taken.
    pub async fn ingest(&self, chunk: Chunk) -> Result<ChunkDone, SessionError> {
        self.ask(|reply| Command::Chunk(chunk, reply)).await
    }

    /// Hands a chunk to the worker from a thread that may block (an LSL inlet), waiting while
    /// its queue is full; the outcome arrives on the returned oneshot once the chunk was taken.
    pub fn submit_blocking(&self, chunk: Chunk) -> Result<oneshot::Receiver<ChunkDone>, SessionError> {
        let (reply, answer) = oneshot::channel();
        self.commands.blocking_send(Command::Chunk(chunk, reply)).map_err(|_| self.stopped())?;
        Ok(answer)
    }

    pub async fn ingest_markers(&self, markers: Vec<pb::Marker>) -> Result<MarkersDone, SessionError> {
        self.ask(|reply| Command::Markers(markers, reply)).await
    }

    pub fn ingest_markers_blocking(&self, markers: Vec<pb::Marker>) -> Result<MarkersDone, SessionError> {
        self.ask_blocking(|reply| Command::Markers(markers, reply))
    }

    /// The latest LSL clock offset measured for this session's source, if any (the dashboard).
    pub fn clock_offset(&self) -> Option<f64> {
        Some(f64::from_bits(self.clock_offset.load(Ordering::Relaxed))).filter(|o| !o.is_nan())
    }

    pub fn set_clock_offset(&self, offset: f64) {
        self.clock_offset.store(offset.to_bits(), Ordering::Relaxed);
    }

    /// Hands the session's recorder to its worker, ahead of any chunk (called before the door
    /// that feeds the session has it). Never waits: its inbox is still empty.
    pub(super) fn record_to(&self, recorder: crate::record::Recorder) {
        if self.commands.try_send(Command::Record(Box::new(recorder))).is_err() {
            let _ = self.recording_error.set("the session's worker did not take its recorder".into());
        }
    }

    /// Records a measured clock offset (LSL sources) when the session is recorded. Blocking.
    pub fn record_clock_offset(&self, timestamp: f64, json: String) {
        if self.recording_path.is_some() {
            let _ = self.commands.blocking_send(Command::ClockOffset { timestamp, json });
        }
    }

    /// Adds an attachment; returns once the worker has primed it. Blocking.
    pub fn attach(&self, attachment: AttachmentState) -> Result<(), SessionError> {
        self.ask_blocking(|reply| Command::Attach(Box::new(attachment), reply))?
    }

    /// Whether the attachment existed (it is gone either way).
    pub async fn detach(&self, attachment_id: &str) -> Result<bool, SessionError> {
        self.ask(|reply| Command::Detach(attachment_id.to_string(), reply)).await
    }

    /// Runs `visit` on the worker's state of `attachment_id` and returns what it returns.
    pub async fn visit<R: Send + 'static>(
        &self,
        attachment_id: &str,
        visit: impl FnOnce(&mut AttachmentState) -> R + Send + 'static,
    ) -> Result<R, SessionError> {
        let missing = || SessionError::NotFound(format!("attachment {} does not exist", crate::id::shown(attachment_id)));
        let (reply, answer) = oneshot::channel();
        let visit = Box::new(move |state: &mut AttachmentState| drop(reply.send(visit(state))));
        self.commands.send(Command::Visit(attachment_id.to_string(), visit)).await.map_err(|_| missing())?;
        answer.await.map_err(|_| missing())
    }

    pub fn attachment_count(&self) -> usize {
        self.snapshot.attachment_count()
    }

    pub fn has_attachment(&self, id: &str) -> bool {
        self.snapshot.has_attachment(id)
    }

    /// The attachment `id` as its windows' decoding sees it, while the session is live.
    pub fn attachment(&self, id: &str) -> Option<Arc<crate::decode::Attachment>> {
        self.snapshot.attachment(id)
    }

    /// The principal that made attachment `id` (live or ended).
    pub fn attachment_owner(&self, id: &str) -> Option<String> {
        self.snapshot.attachment_owner(id)
    }

    pub fn info(&self) -> pb::SessionInfo {
        pb::SessionInfo {
            session_id: self.id.clone(),
            header: Some(self.header.clone()),
            live: self.is_live(),
            samples_received: self.snapshot.samples_received.load(Ordering::Relaxed),
            markers_received: self.snapshot.markers_received.load(Ordering::Relaxed),
            gap_samples: self.snapshot.gap_samples.load(Ordering::Relaxed),
            attachments: self.snapshot.attachment_infos(),
            recording_path: self.recording_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            source: self.source.as_str().into(),
            recording_error: self.recording_error.get().cloned().unwrap_or_default(),
            owner: self.owner.clone(),
            warnings: self.snapshot.warnings(),
            source_error: self.source_error.get().cloned().unwrap_or_default(),
            replica: String::new(),
        }
    }

    /// Keeps what a door warned about on the session ([`pb::SessionInfo::warnings`]): for an LSL
    /// source, what an Ingest reply would have carried.
    pub fn note_warnings(&self, warnings: &super::warnings::Warnings) {
        self.snapshot.add_warnings(warnings);
    }

    /// Its source stopped on `error` (the first reason is kept).
    pub fn source_failed(&self, error: String) {
        let _ = self.source_error.set(error);
    }

    fn stopped(&self) -> SessionError {
        SessionError::Unavailable(format!("session {:?}: its worker has stopped", self.id))
    }

    async fn ask<R>(&self, command: impl FnOnce(oneshot::Sender<R>) -> Command) -> Result<R, SessionError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).await.map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())
    }

    fn ask_blocking<R>(&self, command: impl FnOnce(oneshot::Sender<R>) -> Command) -> Result<R, SessionError> {
        let (reply, answer) = oneshot::channel();
        self.commands.blocking_send(command(reply)).map_err(|_| self.stopped())?;
        answer.blocking_recv().map_err(|_| self.stopped())
    }
}
