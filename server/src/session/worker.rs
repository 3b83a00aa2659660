//! A session's worker: one thread that owns all of the session's mutable state (its rings, gap
//! and marker bookkeeping, every attachment's filter, ring, cutter and calibration collector) and
//! does all of its heavy work: filtering every frame for every attachment, cutting windows and
//! handing them to their models. Everything else talks to it through its bounded inbox, so no
//! async thread ever filters, copies a window or waits on a lock that this work holds, and one
//! heavy session only ever slows itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use myelin_proto::v1 as pb;
use tokio::sync::mpsc;

use super::attachment::AttachmentState;
use super::command::{Chunk, ChunkDone, Command, MarkersDone};
use super::display::{DisplayDecimator, DisplayTap};
use super::error::SessionError;
use super::markers::PendingMarkers;
use super::snapshot::Snapshot;
use super::stream::StreamRings;
use super::warnings::Warnings;
use crate::budget::Reservation;
use crate::clock;
use crate::decode::WindowJob;
use crate::decode::job::InFlight;
use crate::metrics as m;
use crate::record::{Event, Recorder};
use crate::window::Cut;
use crate::window::dispatch::hand_over;

/// What the worker is built from (its rings are allocated on its own thread).
pub struct WorkerSpec {
    pub session_id: String,
    pub source: super::source::Source,
    pub capacity: usize,
    pub n_channels: usize,
    pub rate: f64,
    pub max_pending_markers: usize,
    pub snapshot: Arc<Snapshot>,
    pub in_flight: Arc<InFlight>,
    /// The raw rings' memory, given back when the session ends.
    pub memory: Reservation,
    pub max_attachments: usize,
    /// Repair timestamps that go backwards (else refuse the chunk).
    pub repair_timestamps: bool,
    /// The dashboard's decimated copy of the signal and markers.
    pub display: Arc<DisplayTap>,
}

struct Worker {
    session_id: String,
    stream: StreamRings,
    markers: PendingMarkers,
    attachments: Vec<AttachmentState>,
    recorder: Option<Recorder>,
    snapshot: Arc<Snapshot>,
    display: Arc<DisplayTap>,
    display_decimator: DisplayDecimator,
    in_flight: Arc<InFlight>,
    memory: Option<Reservation>,
    max_attachments: usize,
    /// One frame of zeros (gap filling), the cuts of one pass and its windows, reused.
    zeros: Vec<f32>,
    cuts: Vec<Cut>,
    cut_windows: Vec<WindowJob>,
    same_model: Vec<WindowJob>,
}

/// Starts the worker's thread; it runs until every sender of `inbox` is gone.
pub fn spawn(spec: WorkerSpec, mut inbox: mpsc::Receiver<Command>) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = format!("session-{}", spec.session_id);
    std::thread::Builder::new().name(name).spawn(move || {
        let mut worker = Worker {
            session_id: spec.session_id,
            stream: StreamRings::new(spec.capacity, spec.n_channels, spec.rate, spec.repair_timestamps, spec.source.as_str()),
            markers: PendingMarkers::new(spec.max_pending_markers),
            attachments: Vec::new(),
            recorder: None,
            snapshot: spec.snapshot,
            display_decimator: spec.display.decimator(),
            display: spec.display,
            in_flight: spec.in_flight,
            memory: Some(spec.memory),
            max_attachments: spec.max_attachments,
            zeros: vec![0.0; spec.n_channels],
            cuts: Vec::new(),
            cut_windows: Vec::new(),
            same_model: Vec::new(),
        };
        while let Some(command) = inbox.blocking_recv() {
            worker.handle(command);
        }
        worker.end();
    })
}

impl Worker {
    fn handle(&mut self, command: Command) {
        match command {
            Command::Chunk(chunk, reply) => {
                let mut warnings = Warnings::default();
                let accepted = self.ingest_chunk(&chunk, &mut warnings);
                let _ = reply.send(ChunkDone { chunk, accepted, accepted_until: self.stream.total(), warnings });
            }
            Command::Markers(markers, reply) => {
                let mut warnings = Warnings::default();
                self.ingest_markers(markers, &mut warnings);
                let _ = reply.send(MarkersDone { accepted_until: self.stream.total(), warnings });
            }
            Command::Record(recorder) => self.recorder = Some(*recorder),
            Command::ClockOffset { timestamp, json } => {
                if let Some(recorder) = &self.recorder {
                    recorder.send(Event::ClockOffset { timestamp, json });
                }
            }
            Command::Attach(attachment, reply) => {
                if self.memory.is_none() {
                    let _ = reply.send(Err(SessionError::FailedPrecondition(format!("session {:?} has ended", self.session_id))));
                    return;
                }
                if self.attachments.len() >= self.max_attachments {
                    let _ = reply.send(Err(SessionError::attachments_full(&self.session_id, self.max_attachments)));
                    return;
                }
                let mut attachment = *attachment;
                attachment.prime(&self.stream.raw, &self.stream.gaps, &self.zeros);
                tracing::info!(session = %self.session_id, attachment = %attachment.id(), model = %attachment.shared.model.card.id, "attached");
                self.attachments.push(attachment);
                self.publish_attachments();
                let _ = reply.send(Ok(()));
            }
            Command::Detach(id, reply) if self.memory.is_none() => {
                let _ = reply.send(self.snapshot.remove(&id));
            }
            Command::Detach(id, reply) => {
                let position = self.attachments.iter().position(|a| a.id() == id);
                if let Some(position) = position {
                    self.attachments.remove(position);
                    self.publish_attachments();
                    tracing::info!(session = %self.session_id, attachment = %id, "detached");
                }
                let _ = reply.send(position.is_some());
            }
            Command::Visit(id, visit) => {
                if let Some(attachment) = self.attachments.iter_mut().find(|a| a.id() == id) {
                    visit(attachment);
                    self.publish_attachments();
                }
            }
            Command::End => self.end(),
        }
    }

    /// Takes one chunk: places it by sample index, fills a gap before it, filters it for every
    /// attachment, records it, then places waiting markers and cuts every window now complete.
    fn ingest_chunk(&mut self, chunk: &Chunk, warnings: &mut Warnings) -> Result<u64, SessionError> {
        if self.memory.is_none() {
            return Err(SessionError::FailedPrecondition(format!("session {:?} has ended", self.session_id)));
        }
        let started = clock::now_ns();
        m::stage("handoff", started.saturating_sub(chunk.received_ns));
        let c = self.stream.n_channels;
        let n = chunk.samples.len() / c;
        let Some(admission) = self.stream.admit(chunk, n, warnings)? else { return Ok(0) };
        if admission.gap > 0 {
            self.skip_gap(admission.gap);
        }
        let new = &chunk.samples[admission.skip * c..n * c];
        // The timestamps as stored (repaired), kept for the recording: a chunk may be longer than
        // the ring, whose first samples are then gone by the time it is recorded.
        let mut stored = Vec::with_capacity(if self.recorder.is_some() { n - admission.skip } else { 0 });
        let mut repaired: Option<(usize, f64, u64)> = None;
        let mut display = self.display.writer(&mut self.display_decimator);
        for (i, frame) in new.chunks_exact(c).enumerate() {
            let (timestamp, was_repaired) = self.stream.repaired(chunk.timestamp(admission.skip + i));
            display.frame(frame, timestamp);
            if was_repaired {
                repaired.get_or_insert((i, timestamp, 0)).2 += 1;
            }
            if self.recorder.is_some() {
                stored.push(timestamp);
            }
            self.stream.push(frame, timestamp, chunk.received_ns);
        }
        drop(display);
        if let Some((first, to, count)) = repaired {
            let index = chunk.first_index + (admission.skip + first) as u64;
            warnings.add(pb::IngestWarningKind::TimestampsRepaired, "timestamps_repaired", index, count, || {
                format!("timestamps went backwards at sample {index}: {count} raised to {to} s and on, so they never decrease (sessions.timestamp_policy = \"repair\"; the recording keeps the raw ones)")
            });
        }
        if let Some((start, end)) = chunk.replaced {
            self.stream.add_replaced(start.max(chunk.first_index + admission.skip as u64), end);
        }
        // Attachment by attachment: each filter's state stays in cache for the whole chunk.
        for attachment in &mut self.attachments {
            for frame in new.chunks_exact(c) {
                attachment.push_frame(frame);
            }
        }
        if let Some(recorder) = &self.recorder {
            let first = chunk.first_index + admission.skip as u64;
            let timestamp = stored.first().copied().unwrap_or(f64::NAN);
            recorder.send(Event::Samples { timestamps: stored, values: new.to_vec() });
            if repaired.is_some() {
                let raw: Vec<f64> = (admission.skip..n).map(|i| chunk.timestamp(i)).collect();
                recorder.send(Event::RawTimestamps { first_sample: first, timestamp, raw });
            }
        }
        let accepted = (n - admission.skip) as u64;
        self.snapshot.add_samples(accepted);
        metrics::counter!(m::SAMPLES_INGESTED).increment(accepted);
        self.place_markers(warnings);
        m::stage("dsp", clock::now_ns().saturating_sub(started));
        self.dispatch_windows();
        Ok(accepted)
    }

    /// A gap of `gap` missing samples: the rings skip it without writing, and windows touching
    /// it are refused when cut (those wholly beyond the buffer's reach are not cut at all). The
    /// filters see zeros for the gap's length (10 s of them at most, by which any filter of a
    /// card has settled), as if the signal had been 0, so that the windows after the gap match
    /// an offline run over the zero-filled stream.
    fn skip_gap(&mut self, gap: u64) {
        let start = self.stream.total();
        self.stream.open_gap(gap);
        self.snapshot.set_gap_samples(self.stream.gap_samples);
        let settle = gap.min(self.stream.capacity as u64).min((self.stream.rate * 10.0).ceil() as u64);
        let unbuffered = gap.saturating_sub(self.stream.capacity as u64);
        for attachment in &mut self.attachments {
            attachment.skip_gap(gap, settle, &self.zeros);
            if unbuffered > 0 {
                attachment.cutter.skip_before(start + unbuffered);
            }
        }
        self.stream.forget_old_gaps();
    }

    fn ingest_markers(&mut self, markers: Vec<pb::Marker>, warnings: &mut Warnings) {
        if let Some(recorder) = &self.recorder {
            let value = |m: &pb::Marker| if m.label.is_empty() { m.code.to_string() } else { m.label.clone() };
            recorder.send(Event::Markers(markers.iter().map(|m| (m.timestamp, value(m))).collect()));
        }
        self.snapshot.add_markers(markers.len() as u64);
        metrics::counter!(m::MARKERS_INGESTED).increment(markers.len() as u64);
        for marker in markers {
            self.display.marker(marker.timestamp, marker.code);
            self.markers.add(marker, warnings);
        }
        self.place_markers(warnings);
        self.dispatch_windows();
    }

    /// Places every waiting marker whose sample has arrived and hands it to the event-locked
    /// attachments.
    fn place_markers(&mut self, warnings: &mut Warnings) {
        let view = self.stream.view();
        let attachments = &mut self.attachments;
        let cut_windows = &mut self.cut_windows;
        let valid_from = self.stream.valid_from();
        self.markers.place(&self.stream.timestamps, valid_from, self.stream.rate, warnings, |index, marker| {
            for attachment in attachments.iter_mut() {
                if let Some(cut) = attachment.cutter.on_marker(index, marker) {
                    attachment.dispatch(cut, &view, cut_windows);
                }
            }
        });
    }

    /// Cuts every window whose samples are all in, then hands this pass's windows (the
    /// event-locked ones of `place_markers` too) to their models.
    fn dispatch_windows(&mut self) {
        let total = self.stream.total();
        let view = self.stream.view();
        for attachment in &mut self.attachments {
            attachment.cutter.ready_windows(total, &mut self.cuts);
            for cut in self.cuts.drain(..) {
                attachment.dispatch(cut, &view, &mut self.cut_windows);
            }
        }
        hand_over(&mut self.cut_windows, &mut self.same_model);
    }

    /// The stream ended: a calibration collecting from it fits on what it has (no more epochs
    /// come); once the windows already cut are published (their attachments' largest budget at
    /// most, 5 s at the very most), the recording is closed (its thread writes the footers) and
    /// the session's memory goes.
    fn end(&mut self) {
        for attachment in &mut self.attachments {
            attachment.collector = None;
        }
        // Subscribers (at shutdown, before their streams end) and the recording get them all.
        let budget_ms = self.attachments.iter().map(|a| u64::from(a.shared.budget_ms)).max().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_millis(budget_ms.min(5_000) + 100);
        while self.in_flight.count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.recorder = None;
        // The session's memory goes at once; its listing stays.
        self.snapshot.freeze();
        self.attachments.clear();
        self.stream = StreamRings::new(1, self.stream.n_channels, self.stream.rate, false, "");
        self.memory = None;
    }

    fn publish_attachments(&self) {
        self.snapshot.set_attachments(self.attachments.iter().map(|a| a.shared.clone()).collect());
    }
}
