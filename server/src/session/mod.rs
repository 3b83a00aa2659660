//! Sessions: one per ingest stream. Each holds ring buffers of raw samples, their source
//! timestamps and server receive times, the sample-index bookkeeping (gaps, overlaps,
//! out-of-order chunks), markers placed on sample indices, and its attachments.

pub mod ring;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use myelin_proto::v1::{self as pb, IngestWarningKind, PredictionStatus};

use crate::config::SessionsConfig;
use crate::decode::{Lookup, ModelRegistry};
use crate::dsp::{SosFilter, WindowPreprocessor};
use crate::metrics as m;
use crate::publish::Hub;
use crate::window::{Attachment, AttachmentRuntime, Cut, Cutter, WindowJob};
use ring::{FrameRing, ScalarRing};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<SessionError> for tonic::Status {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::NotFound(m) => tonic::Status::not_found(m),
            SessionError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            SessionError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            SessionError::AlreadyExists(m) => tonic::Status::already_exists(m),
            SessionError::Unavailable(m) => tonic::Status::unavailable(m),
        }
    }
}

/// Timestamps of one chunk.
#[derive(Debug, Clone, Copy)]
pub enum ChunkTimestamps<'a> {
    PerSample(&'a [f64]),
    Regular { first: f64, rate: f64 },
}

impl ChunkTimestamps<'_> {
    fn at(&self, i: usize) -> f64 {
        match self {
            ChunkTimestamps::PerSample(ts) => ts[i],
            ChunkTimestamps::Regular { first, rate } => first + i as f64 / rate,
        }
    }
}

pub struct Session {
    pub id: String,
    pub header: pb::StreamHeader,
    /// "grpc" or "lsl".
    pub source: &'static str,
    hub: Hub,
    recording_path: Option<std::path::PathBuf>,
    live: AtomicBool,
    ended_at: Mutex<Option<Instant>>,
    state: Mutex<SessionState>,
    samples_received: AtomicU64,
}

struct SessionState {
    n_channels: usize,
    rate: f64,
    raw: FrameRing,
    timestamps: ScalarRing<f64>,
    received_ns: ScalarRing<u64>,
    /// Gaps [start, end) still inside the buffer.
    gaps: VecDeque<(u64, u64)>,
    gap_samples: u64,
    pending_markers: VecDeque<pb::Marker>,
    max_pending_markers: usize,
    markers_received: u64,
    attachments: Vec<AttachmentRuntime>,
    recorder: Option<crate::record::Recorder>,
    capacity: usize,
    zeros: Vec<f32>,
    cuts: Vec<Cut>,
}

/// What one chunk did.
pub struct ChunkOutcome {
    pub accepted_until: u64,
    pub accepted_samples: u64,
}

fn warn(kind: IngestWarningKind, label: &'static str, sample_index: u64, count: u64, message: String) -> pb::IngestWarning {
    m::warning(label);
    pb::IngestWarning { kind: kind as i32, message, sample_index, count }
}

impl Session {
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    pub fn end(&self) {
        if let Some(path) = &self.recording_path {
            self.hub.untap(&self.id, path);
        }
        if self.live.swap(false, Ordering::AcqRel) {
            metrics::gauge!(m::LIVE_SESSIONS).decrement(1.0);
        }
        // A calibration collecting from this stream fits on what it has: no more epochs come.
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for attachment in &mut st.attachments {
            attachment.collector = None;
        }
        // Closing the recorder's queue lets its thread write the stream footers and close.
        st.recorder = None;
        drop(st);
        *self.ended_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    /// Accepts one chunk (already validated for shape and finiteness), places waiting markers,
    /// cuts every window that became complete and dispatches it.
    pub fn ingest_chunk(
        &self,
        first_index: u64,
        timestamps: ChunkTimestamps<'_>,
        samples: &[f32],
        received_ns: u64,
        hub: &Hub,
        warnings: &mut Vec<pb::IngestWarning>,
    ) -> Result<ChunkOutcome, SessionError> {
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = st.n_channels;
        let n = samples.len() / c;
        let total = st.raw.total();
        let Some(end) = first_index.checked_add(n as u64) else {
            m::rejected("bad_index");
            return Err(SessionError::InvalidArgument(format!("chunk first_sample_index {first_index} is out of range")));
        };
        if n == 0 {
            return Ok(ChunkOutcome { accepted_until: total, accepted_samples: 0 });
        }
        if end <= total {
            warnings.push(warn(
                IngestWarningKind::OutOfOrder,
                "out_of_order",
                first_index,
                n as u64,
                format!("chunk [{first_index}, {end}) lies before sample {total} already received; dropped"),
            ));
            return Ok(ChunkOutcome { accepted_until: total, accepted_samples: 0 });
        }
        let skip = total.saturating_sub(first_index) as usize;
        if skip > 0 {
            warnings.push(warn(
                IngestWarningKind::Overlap,
                "overlap",
                first_index,
                skip as u64,
                format!("chunk starts at {first_index} but {total} samples were already received; {skip} repeated samples dropped"),
            ));
        }
        let first_ts = timestamps.at(skip);
        let last_ts = st.timestamps.get(total.wrapping_sub(1)).filter(|_| total > 0);
        if let Some(last_ts) = last_ts {
            if first_ts < last_ts {
                m::rejected("timestamps_backwards");
                return Err(SessionError::InvalidArgument(format!(
                    "timestamps go backwards: sample {} at {first_ts} s comes after sample {} at {last_ts} s",
                    first_index + skip as u64,
                    total - 1
                )));
            }
        }
        if first_index > total {
            let gap = first_index - total;
            warnings.push(warn(
                IngestWarningKind::Gap,
                "gap",
                total,
                gap,
                format!("samples [{total}, {first_index}) never arrived; windows touching them are not decoded"),
            ));
            st.fill_gap(gap, last_ts, first_ts);
        } else if let Some(last_ts) = last_ts {
            let expected = last_ts + 1.0 / st.rate;
            let tolerance = 10.0 / st.rate + 0.05;
            if (first_ts - expected).abs() > tolerance {
                warnings.push(warn(
                    IngestWarningKind::ClockJump,
                    "clock_jump",
                    first_index + skip as u64,
                    1,
                    format!(
                        "timestamp jumped by {:+.6} s relative to the sample count; sample indices stay authoritative",
                        first_ts - expected
                    ),
                ));
            }
        }
        for i in skip..n {
            st.push_frame(&samples[i * c..(i + 1) * c], timestamps.at(i), received_ns);
        }
        if let Some(recorder) = &st.recorder {
            recorder.send(crate::record::Event::Samples {
                timestamps: (skip..n).map(|i| timestamps.at(i)).collect(),
                values: samples[skip * c..n * c].to_vec(),
            });
        }
        let accepted = (n - skip) as u64;
        self.samples_received.fetch_add(accepted, Ordering::Relaxed);
        metrics::counter!(m::SAMPLES_INGESTED).increment(accepted);
        st.place_markers(hub, warnings);
        st.dispatch_windows(hub);
        Ok(ChunkOutcome { accepted_until: st.raw.total(), accepted_samples: accepted })
    }

    pub fn ingest_markers(&self, markers: &[pb::Marker], hub: &Hub, warnings: &mut Vec<pb::IngestWarning>) -> u64 {
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for marker in markers {
            if st.pending_markers.len() >= st.max_pending_markers {
                let dropped = st.pending_markers.pop_front().expect("non-empty");
                warnings.push(warn(
                    IngestWarningKind::MarkerOutsideBuffer,
                    "marker_outside_buffer",
                    0,
                    1,
                    format!("marker {} at {} s dropped: too many markers ahead of their samples", dropped.code, dropped.timestamp),
                ));
            }
            st.pending_markers.push_back(marker.clone());
        }
        st.markers_received += markers.len() as u64;
        if let Some(recorder) = &st.recorder {
            let value = |m: &pb::Marker| if m.label.is_empty() { m.code.to_string() } else { m.label.clone() };
            recorder.send(crate::record::Event::Markers(markers.iter().map(|m| (m.timestamp, value(m))).collect()));
        }
        metrics::counter!(m::MARKERS_INGESTED).increment(markers.len() as u64);
        st.place_markers(hub, warnings);
        st.dispatch_windows(hub);
        markers.len() as u64
    }

    /// Records a measured clock offset (LSL sources) when the session is recorded.
    pub fn record_clock_offset(&self, timestamp: f64, json: String) {
        let st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(recorder) = &st.recorder {
            recorder.send(crate::record::Event::ClockOffset { timestamp, json });
        }
    }

    pub fn accepted_until(&self) -> u64 {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).raw.total()
    }

    pub fn info(&self) -> pb::SessionInfo {
        let st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pb::SessionInfo {
            session_id: self.id.clone(),
            header: Some(self.header.clone()),
            live: self.is_live(),
            samples_received: self.samples_received.load(Ordering::Relaxed),
            markers_received: st.markers_received,
            gap_samples: st.gap_samples,
            attachments: st
                .attachments
                .iter()
                .map(|a| pb::AttachmentInfo {
                    attachment_id: a.shared.id.clone(),
                    model_id: a.shared.model.card.id.clone(),
                    model_version: a.shared.model.card.version.clone(),
                    window: Some(a.shared.policy.clone()),
                    latency_budget_ms: a.shared.budget_ms,
                    predictions: a.shared.predictions.load(Ordering::Relaxed),
                })
                .collect(),
            recording_path: self.recording_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            source: self.source.into(),
        }
    }

    fn has_attachment(&self, id: &str) -> bool {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).attachments.iter().any(|a| a.shared.id == id)
    }
}

impl SessionState {
    fn push_frame(&mut self, frame: &[f32], timestamp: f64, received_ns: u64) {
        self.raw.push(frame);
        self.timestamps.push(timestamp);
        self.received_ns.push(received_ns);
        for attachment in &mut self.attachments {
            attachment.push_frame(frame);
        }
    }

    /// Records `gap` missing samples before a chunk whose first sample is at `next_ts`: zeros
    /// keep every ring and filter aligned with sample indices. Their timestamps are interpolated
    /// between the last real sample and the next, so stored timestamps never go backwards.
    fn fill_gap(&mut self, gap: u64, last_ts: Option<f64>, next_ts: f64) {
        let start = self.raw.total();
        self.gaps.push_back((start, start + gap));
        self.gap_samples += gap;
        let written = gap.min(self.capacity as u64);
        let skipped = gap - written;
        if skipped > 0 {
            self.raw.advance(skipped);
            self.timestamps.advance(skipped);
            self.received_ns.advance(skipped);
            for attachment in &mut self.attachments {
                attachment.ring.advance(skipped);
            }
        }
        // Windows that lie wholly in the part of the gap that was never buffered are skipped
        // (the client was told about the gap); the ones that touch buffered zeros are refused
        // one by one as usual.
        if skipped > 0 {
            let buffered_from = start + skipped;
            for attachment in &mut self.attachments {
                attachment.skip_before(buffered_from);
            }
        }
        let zeros = std::mem::take(&mut self.zeros);
        for k in 0..written {
            let position = (skipped + k + 1) as f64 / (gap + 1) as f64;
            let ts = match last_ts {
                Some(last) if next_ts > last => last + (next_ts - last) * position,
                Some(last) => last,
                None => next_ts - (written - k) as f64 / self.rate,
            };
            self.push_frame(&zeros, ts, 0);
        }
        self.zeros = zeros;
        let oldest = self.raw.oldest();
        while self.gaps.front().is_some_and(|&(_, end)| end <= oldest) {
            self.gaps.pop_front();
        }
    }

    /// Places every waiting marker whose sample has arrived on its nearest sample, and hands it
    /// to the event-locked attachments.
    fn place_markers(&mut self, hub: &Hub, warnings: &mut Vec<pb::IngestWarning>) {
        let total = self.raw.total();
        if total == 0 {
            return;
        }
        let half_period = 0.5 / self.rate;
        let newest_ts = self.timestamps.get(total - 1).unwrap_or(f64::NEG_INFINITY);
        let oldest_ts = self.timestamps.get(self.timestamps.oldest()).unwrap_or(f64::INFINITY);
        let mut i = 0;
        while i < self.pending_markers.len() {
            let ts = self.pending_markers[i].timestamp;
            if ts > newest_ts + half_period {
                i += 1;
                continue;
            }
            let marker = self.pending_markers.remove(i).expect("index in range");
            if ts < oldest_ts - half_period {
                warnings.push(warn(
                    IngestWarningKind::MarkerOutsideBuffer,
                    "marker_outside_buffer",
                    self.timestamps.oldest(),
                    1,
                    format!("marker {} at {ts} s is older than the buffered samples (from {oldest_ts} s); no window", marker.code),
                ));
                continue;
            }
            let index = self.timestamps.nearest_index(ts).expect("non-empty ring");
            for attachment in &mut self.attachments {
                if let Some(cut) = attachment.on_marker(index, &marker) {
                    dispatch(attachment, cut, &self.timestamps, &self.received_ns, &self.gaps, hub);
                }
            }
        }
    }

    /// Cuts and dispatches every window whose samples are all in.
    fn dispatch_windows(&mut self, hub: &Hub) {
        let total = self.raw.total();
        let mut cuts = std::mem::take(&mut self.cuts);
        for attachment in &mut self.attachments {
            attachment.ready_windows(total, &mut cuts);
            for cut in cuts.drain(..) {
                dispatch(attachment, cut, &self.timestamps, &self.received_ns, &self.gaps, hub);
            }
        }
        self.cuts = cuts;
    }
}

/// Sends a window to its model, or publishes why it could not be decoded (SHED, ERROR).
fn dispatch(
    attachment: &mut AttachmentRuntime,
    cut: Cut,
    timestamps: &ScalarRing<f64>,
    received_ns: &ScalarRing<u64>,
    gaps: &VecDeque<(u64, u64)>,
    hub: &Hub,
) {
    let length = attachment.cutter.length() as u64;
    let (start, trigger, mut refusal) = match cut {
        Cut::Ready { start, trigger } => (start as i64, trigger, None),
        Cut::Refused { start, trigger, reason } => (start, trigger, Some(reason)),
    };
    let first = start.max(0) as u64;
    let last = first + length - 1;
    let span = pb::WindowSpan {
        first_sample_index: first,
        last_sample_index: last,
        first_timestamp: timestamps.get(first).unwrap_or(f64::NAN),
        last_timestamp: timestamps.get(last).unwrap_or(f64::NAN),
    };
    if refusal.is_none() {
        if let Some(&(a, b)) = gaps.iter().find(|&&(a, b)| a <= last && b > first) {
            refusal = Some(format!("window [{first}, {}] touches missing samples [{a}, {b})", last + 1));
        }
    }
    let mut job = WindowJob {
        attachment: attachment.shared.clone(),
        data: Vec::new(),
        span,
        trigger,
        sequence: attachment.next_sequence(),
        last_sample_received_ns: received_ns.get(last).unwrap_or_else(crate::clock::now_ns),
        enqueued_ns: crate::clock::now_ns(),
    };
    if refusal.is_none() {
        job.data = vec![0.0; attachment.channel_index.len() * length as usize];
        if !attachment.ring.copy_channel_major(first, length as usize, &mut job.data) {
            refusal = Some(format!("window [{first}, {}] is no longer buffered", last + 1));
        }
    }
    if let (None, Some(collector), Some(trigger)) = (&refusal, &attachment.collector, &job.trigger) {
        collector.offer(&job.data, trigger);
    }
    if let Some(reason) = refusal {
        let prediction = job.prediction(PredictionStatus::Error, reason);
        hub.publish(prediction, job.attachment.late_policy);
        return;
    }
    if let Err(job) = attachment.shared.model.submit(job) {
        let prediction = job.prediction(PredictionStatus::Shed, "model queue full".into());
        hub.publish(prediction, job.attachment.late_policy);
    }
}

/// Largest ring buffer one session may ask for (a header with an absurd rate or channel count
/// is refused instead of aborting the process on allocation).
const MAX_SESSION_BUFFER_BYTES: f64 = 4.0 * (1u64 << 30) as f64;

/// Every session the server knows, live or recently ended.
pub struct SessionManager {
    sessions: RwLock<HashMap<String, Arc<Session>>>,
    config: SessionsConfig,
    recording: crate::config::RecordingConfig,
    hub: Hub,
    lsl: Option<myelin_lsl::Lsl>,
    shutdown: crate::shutdown::Shutdown,
    next_attachment: AtomicU64,
    /// Galleries in use, shared by the attachments that ask for the same file and index (a 1 M
    /// gallery is 3 GB, and its HNSW graph takes minutes to build). Entries die with their last
    /// attachment.
    galleries: std::sync::Mutex<HashMap<GalleryKey, std::sync::Weak<crate::decode::gallery::Gallery>>>,
    /// One lock per gallery file while it loads, so two attaches asking for it at once load it
    /// once (the second waits, then shares).
    gallery_loads: std::sync::Mutex<HashMap<std::path::PathBuf, Arc<std::sync::Mutex<()>>>>,
}

/// A gallery file as loaded: its path, the index asked for, and the size and modification time
/// of the file and of its ids file (a rewritten file is loaded again).
type GalleryKey = (std::path::PathBuf, bool, [(u64, Option<std::time::SystemTime>); 2]);

fn file_stamp(path: &std::path::Path) -> (u64, Option<std::time::SystemTime>) {
    std::fs::metadata(path).map_or((0, None), |m| (m.len(), m.modified().ok()))
}

/// What Attach asked for, validated against the session and the model.
pub struct AttachSpec {
    pub session_id: String,
    pub model_id: String,
    pub model_version: String,
    pub window: pb::WindowPolicy,
    pub budget_ms: u32,
    pub late_policy: pb::LatePolicy,
    pub channel_map: Vec<pb::ChannelMapping>,
    pub lsl_outlet: bool,
    pub subject: String,
    pub top_k: usize,
    /// Retrieval: the gallery to load (path under `models.galleries_dir`) and its index.
    pub gallery: Option<pb::GallerySpec>,
    pub include_embedding: bool,
}

impl SessionManager {
    pub fn new(
        config: SessionsConfig,
        recording: crate::config::RecordingConfig,
        hub: Hub,
        lsl: Option<myelin_lsl::Lsl>,
        shutdown: crate::shutdown::Shutdown,
    ) -> Self {
        Self {
            sessions: RwLock::new(HashMap::new()),
            config,
            recording,
            hub,
            lsl,
            shutdown,
            next_attachment: AtomicU64::new(1),
            galleries: Default::default(),
            gallery_loads: Default::default(),
        }
    }

    pub fn lsl(&self) -> Option<&myelin_lsl::Lsl> {
        self.lsl.as_ref()
    }

    /// Registers a new live session from its header (validated by the ingest layer).
    /// `source` says where its samples come from ("grpc", "lsl").
    pub fn open(&self, header: pb::StreamHeader, source: &'static str) -> Result<Arc<Session>, SessionError> {
        let mut sessions = self.sessions.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let retain = std::time::Duration::from_secs(self.config.retain_ended_seconds);
        sessions.retain(|_, s| {
            s.is_live() || s.ended_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_none_or(|t| t.elapsed() < retain)
        });
        if let Some(existing) = sessions.get(&header.session_id) {
            if existing.is_live() {
                return Err(SessionError::AlreadyExists(format!(
                    "session {:?} is already being streamed by another call",
                    header.session_id
                )));
            }
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
        let state = SessionState {
            n_channels,
            rate: header.nominal_rate_hz,
            raw: FrameRing::new(capacity, n_channels),
            timestamps: ScalarRing::new(capacity),
            received_ns: ScalarRing::new(capacity),
            gaps: VecDeque::new(),
            gap_samples: 0,
            pending_markers: VecDeque::new(),
            max_pending_markers: self.config.max_pending_markers,
            markers_received: 0,
            attachments: Vec::new(),
            recorder: None,
            capacity,
            zeros: vec![0.0; n_channels],
            cuts: Vec::new(),
        };
        let mut state = state;
        let mut recording_path = None;
        if self.recording.enabled {
            let flush = std::time::Duration::from_millis(self.recording.flush_interval_ms.max(10));
            match crate::record::Recorder::start(&self.recording.dir, &header, flush, source) {
                Ok(recorder) => {
                    recording_path = Some(recorder.path.clone());
                    self.hub.tap(&header.session_id, recorder.clone());
                    state.recorder = Some(recorder);
                }
                Err(error) => {
                    return Err(SessionError::Unavailable(format!(
                        "cannot record session {:?} in {}: {error}",
                        header.session_id,
                        self.recording.dir.display()
                    )));
                }
            }
        }
        let session = Arc::new(Session {
            id: header.session_id.clone(),
            source,
            hub: self.hub.clone(),
            recording_path,
            header,
            live: AtomicBool::new(true),
            ended_at: Mutex::new(None),
            state: Mutex::new(state),
            samples_received: AtomicU64::new(0),
        });
        metrics::gauge!(m::LIVE_SESSIONS).increment(1.0);
        sessions.insert(session.id.clone(), session.clone());
        Ok(session)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Session>> {
        let mut list: Vec<_> = self.sessions.read().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    pub fn attachment_exists(&self, id: &str) -> bool {
        self.list().iter().any(|s| s.has_attachment(id))
    }

    pub fn attach(&self, spec: AttachSpec, models: &ModelRegistry) -> Result<pb::AttachReply, SessionError> {
        let session =
            self.get(&spec.session_id).ok_or_else(|| SessionError::NotFound(format!("session {:?} does not exist", spec.session_id)))?;
        let model = match models.find(&spec.model_id, &spec.model_version, &spec.subject) {
            Lookup::Ready(model) => model,
            Lookup::Failed(error) => {
                return Err(SessionError::FailedPrecondition(format!("model {:?} is not available: {error}", spec.model_id)));
            }
            Lookup::Missing => {
                let version = if spec.model_version.is_empty() { String::new() } else { format!(" version {:?}", spec.model_version) };
                return Err(SessionError::NotFound(format!("model {:?}{version} is not loaded", spec.model_id)));
            }
        };
        let card = &model.card;
        let header = &session.header;
        let invalid = |m: String| SessionError::InvalidArgument(m);

        // Channels: explicit mapping first, identical labels otherwise.
        for mapping in &spec.channel_map {
            if !card.channels.contains(&mapping.model_channel) {
                return Err(invalid(format!(
                    "channel_map: model {} has no channel {:?} (model channels: {:?})",
                    card.id, mapping.model_channel, card.channels
                )));
            }
        }
        let stream_labels: Vec<&str> = header.channels.iter().map(|c| c.label.as_str()).collect();
        let optional_channels = card.sensors.as_ref().is_some_and(|s| s.optional);
        let mut channel_index = Vec::with_capacity(card.channels.len());
        let mut missing_channels = Vec::new();
        for model_channel in &card.channels {
            let mapping = spec.channel_map.iter().find(|m| &m.model_channel == model_channel);
            let wanted = mapping.map_or(model_channel.as_str(), |m| m.stream_channel.as_str());
            match stream_labels.iter().position(|l| *l == wanted) {
                Some(index) => channel_index.push(index),
                // A spatial-attention model decodes from the sensors it has; an explicit mapping
                // to a channel that does not exist is still an error.
                None if optional_channels && mapping.is_none() => {
                    channel_index.push(crate::window::ABSENT);
                    missing_channels.push(model_channel.clone());
                }
                None => {
                    return Err(invalid(format!(
                        "channel_map: stream {:?} has no channel {wanted:?} for model channel {model_channel:?} (stream channels: {stream_labels:?})",
                        header.session_id
                    )));
                }
            }
        }
        let sensors = match &card.sensors {
            Some(sensors_spec) => Some(Arc::new(sensor_inputs(card, sensors_spec, header, &channel_index)?)),
            None => None,
        };

        // Rates: integer decimation only, so the server and offline code cut identical windows.
        let stream_rate = header.nominal_rate_hz;
        let ratio = stream_rate / card.sample_rate_hz;
        let decimation = ratio.round();
        if decimation < 1.0 || (ratio - decimation).abs() > 1e-9 {
            return Err(invalid(format!(
                "stream rate {stream_rate} Hz is not an integer multiple of model {}'s rate {} Hz",
                card.id, card.sample_rate_hz
            )));
        }
        let decimation = decimation as usize;
        if let Some(filter) = &card.preprocessing.filter {
            if (filter.design_rate_hz - stream_rate).abs() > 1e-9 {
                return Err(invalid(format!(
                    "model {}'s filter was designed for {} Hz streams; this stream is {stream_rate} Hz",
                    card.id, filter.design_rate_hz
                )));
            }
        }
        let model_samples = card.window_samples();
        let length = model_samples * decimation;
        let seconds_to_samples = |s: f64| (s * stream_rate).round() as i64;

        let (cutter, window_tmin) = match &spec.window.policy {
            Some(pb::window_policy::Policy::EventLocked(locked)) => {
                if locked.marker_codes.is_empty() {
                    return Err(invalid("window.event_locked.marker_codes must not be empty".into()));
                }
                let (tmin, tmax) = if locked.tmin_s == 0.0 && locked.tmax_s == 0.0 {
                    (card.window.tmin_s, card.window.tmax_s)
                } else {
                    (locked.tmin_s, locked.tmax_s)
                };
                let asked = seconds_to_samples(tmax) - seconds_to_samples(tmin);
                if asked != length as i64 {
                    return Err(invalid(format!(
                        "window.event_locked: [{tmin}, {tmax}) s is {asked} samples at {stream_rate} Hz; model {} needs {length} ({} s)",
                        card.id,
                        card.window.tmax_s - card.window.tmin_s
                    )));
                }
                let cutter = Cutter::EventLocked {
                    codes: locked.marker_codes.clone(),
                    start_offset: seconds_to_samples(tmin),
                    length,
                    pending: VecDeque::new(),
                    max_pending: self.config.max_pending_markers,
                };
                (cutter, tmin)
            }
            Some(pb::window_policy::Policy::Sliding(sliding)) => {
                if sliding.length_s != 0.0 && seconds_to_samples(sliding.length_s) != length as i64 {
                    return Err(invalid(format!(
                        "window.sliding.length_s {} s does not match model {}'s window of {} s",
                        sliding.length_s,
                        card.id,
                        card.window.tmax_s - card.window.tmin_s
                    )));
                }
                let hop = seconds_to_samples(sliding.hop_s);
                if !(sliding.hop_s > 0.0) || hop < 1 {
                    return Err(invalid(format!("window.sliding.hop_s must be at least one sample period, got {} s", sliding.hop_s)));
                }
                (Cutter::Sliding { length, hop: hop as usize, next_end: 0 }, card.window.tmin_s)
            }
            None => return Err(invalid("window: a policy (event_locked or sliding) is required".into())),
        };

        // Last of the checks: loading a gallery (and building its graph) is the expensive part.
        let gallery = match spec.gallery.as_ref().filter(|g| !g.path.is_empty()) {
            Some(request) => Some(self.gallery(request, card, models.galleries_dir())?),
            None => None,
        };
        let budget_ms = spec.budget_ms;
        let preprocessor = WindowPreprocessor::new(
            &card.preprocessing,
            card.channels.len(),
            decimation,
            model_samples,
            window_tmin,
            card.sample_rate_hz,
            card.input.layout == crate::decode::card::Layout::ChannelsTime,
        );
        let id = format!("att-{}", self.next_attachment.fetch_add(1, Ordering::Relaxed));
        let shared = Arc::new(Attachment {
            id: id.clone(),
            session_id: session.id.clone(),
            model: model.clone(),
            budget_ms,
            late_policy: spec.late_policy,
            policy: spec.window.clone(),
            preprocessor,
            predictions: AtomicU64::new(0),
            top_k: spec.top_k,
            sensors,
            gallery: gallery.clone(),
            include_embedding: spec.include_embedding,
        });
        let sos = card.preprocessing.filter.as_ref().map(|f| f.sos.clone()).unwrap_or_default();
        let filter = SosFilter::new(&sos, channel_index.len());

        let mut outlets = Vec::new();
        let mut keep_alive: Option<Box<dyn std::any::Any + Send>> = None;
        if spec.lsl_outlet {
            let lsl = self.lsl.as_ref().ok_or_else(|| {
                SessionError::Unavailable(
                    "lsl_outlet: LabStreamingLayer is not available on this server (liblsl not found; run deploy/setup.sh)".into(),
                )
            })?;
            let outlet_spec = crate::publish::lsl::OutletSpec {
                session_id: session.id.clone(),
                attachment_id: id.clone(),
                model_id: card.id.clone(),
                model_version: card.version.clone(),
                labels: match card.embedding_dim() {
                    // Gallery retrieval: one channel per rank (the scores of the top k).
                    Some(_) => (1..=retrieval_top_k(spec.top_k)).map(|rank| format!("rank{rank}")).collect(),
                    None => card.labels.clone(),
                },
                unit: if card.task == crate::decode::card::Task::Retrieval { "score".into() } else { "probability".into() },
            };
            let (names, guard) = crate::publish::lsl::start(lsl, outlet_spec, &self.hub, self.shutdown.clone())
                .map_err(|e| SessionError::Unavailable(format!("creating LSL outlets: {e}")))?;
            outlets = names;
            keep_alive = Some(Box::new(guard));
        }
        let mut st = session.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut runtime = AttachmentRuntime::new(shared, channel_index, filter, st.capacity, cutter);
        runtime.keep_alive = keep_alive;
        // Prime the filter and ring with what is buffered, so windows can use recent history and
        // the filter has settled; the ring then stays index-aligned with the session.
        let (oldest, total) = (st.raw.oldest(), st.raw.total());
        runtime.ring.advance(oldest);
        for index in oldest..total {
            runtime.push_frame(st.raw.frame(index));
        }
        if let Cutter::Sliding { hop, next_end, .. } = &mut runtime.cutter {
            *next_end = if total == 0 { length as u64 } else { (length as u64).max(total + *hop as u64) };
        }
        st.attachments.push(runtime);
        drop(st);
        tracing::info!(session = %session.id, attachment = %id, model = %card.id, "attached");
        Ok(pb::AttachReply {
            attachment_id: id,
            window_stream_samples: length as u64,
            window_model_samples: model_samples as u64,
            latency_budget_ms: budget_ms,
            lsl_outlets: outlets,
            gallery_items: gallery.map_or(0, |g| g.len() as u64),
            missing_channels,
        })
    }

    /// Runs `f` on the runtime of `attachment_id` under its session's lock.
    pub fn with_attachment<R>(&self, attachment_id: &str, f: impl FnOnce(&mut AttachmentRuntime) -> R) -> Result<R, SessionError> {
        for session in self.list() {
            let mut st = session.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(runtime) = st.attachments.iter_mut().find(|a| a.shared.id == attachment_id) {
                return Ok(f(runtime));
            }
        }
        Err(SessionError::NotFound(format!("attachment {attachment_id:?} does not exist")))
    }

    /// Points an attachment at another model with the same input (same card preprocessing),
    /// atomically with respect to its stream: the next window goes to the new model; windows
    /// already queued finish on the old one. Subscribers see the same attachment id.
    pub fn swap_model(&self, attachment_id: &str, model: Arc<crate::decode::LoadedModel>) -> Result<String, SessionError> {
        self.with_attachment(attachment_id, |runtime| {
            let old = &runtime.shared;
            let previous = old.model.card.id.clone();
            runtime.shared = Arc::new(Attachment {
                id: old.id.clone(),
                session_id: old.session_id.clone(),
                model,
                budget_ms: old.budget_ms,
                late_policy: old.late_policy,
                policy: old.policy.clone(),
                preprocessor: old.preprocessor.clone(),
                predictions: AtomicU64::new(old.predictions.load(Ordering::Relaxed)),
                top_k: old.top_k,
                sensors: old.sensors.clone(),
                gallery: old.gallery.clone(),
                include_embedding: old.include_embedding,
            });
            tracing::info!(attachment = %attachment_id, from = %previous, to = %runtime.shared.model.card.id, "model swapped");
            previous
        })
    }

    pub fn detach(&self, attachment_id: &str) -> Result<(), SessionError> {
        for session in self.list() {
            let mut st = session.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(position) = st.attachments.iter().position(|a| a.shared.id == attachment_id) {
                st.attachments.remove(position);
                tracing::info!(session = %session.id, attachment = %attachment_id, "detached");
                return Ok(());
            }
        }
        Err(SessionError::NotFound(format!("attachment {attachment_id:?} does not exist")))
    }
}

/// Gallery items listed per retrieval prediction when the request says 0.
pub const DEFAULT_RETRIEVAL_TOP_K: usize = 5;

pub fn retrieval_top_k(requested: usize) -> usize {
    if requested == 0 { DEFAULT_RETRIEVAL_TOP_K } else { requested }
}

/// Positions and mask of a spatial-attention model's channels for this stream: the header's
/// layout position where the channel has one, the card's otherwise; mask 0 for absent channels.
fn sensor_inputs(
    card: &crate::decode::card::ModelCard,
    sensors: &crate::decode::card::SensorsSpec,
    header: &pb::StreamHeader,
    channel_index: &[usize],
) -> Result<crate::window::SensorInputs, SessionError> {
    let present = channel_index.iter().filter(|&&i| i != crate::window::ABSENT).count();
    let needed = sensors.min_present.max(1);
    if present < needed {
        return Err(SessionError::InvalidArgument(format!(
            "stream {:?} has {present} of model {}'s {} sensors; it needs at least {needed}",
            header.session_id,
            card.id,
            card.channels.len()
        )));
    }
    let mut positions = Vec::with_capacity(2 * channel_index.len());
    let mut mask = Vec::with_capacity(channel_index.len());
    for (slot, &index) in channel_index.iter().enumerate() {
        let [mut x, mut y] = sensors.positions[slot];
        if let Some(layout) = header.channels.get(index).and_then(|c| c.layout.as_ref()) {
            if !(layout.x.is_finite() && layout.y.is_finite()) {
                return Err(SessionError::InvalidArgument(format!(
                    "channel {:?}: layout position is not finite",
                    header.channels[index].label
                )));
            }
            (x, y) = (layout.x, layout.y);
        }
        positions.extend([x as f32, y as f32]);
        mask.push(if index == crate::window::ABSENT { 0.0 } else { 1.0 });
    }
    Ok(crate::window::SensorInputs { positions, mask })
}

impl SessionManager {
    /// The gallery an attachment asked for, checked against the model's embedding: shared with
    /// the attachments already using the same file and index, loaded otherwise (holding only
    /// that file's load lock: loading a large gallery can take minutes).
    fn gallery(
        &self,
        request: &pb::GallerySpec,
        card: &crate::decode::card::ModelCard,
        dir: &std::path::Path,
    ) -> Result<Arc<crate::decode::gallery::Gallery>, SessionError> {
        use crate::decode::gallery::{self, GalleryError};
        let dim = card.embedding_dim().ok_or_else(|| {
            SessionError::InvalidArgument(format!("gallery: model {} does not output an embedding (task {})", card.id, card.task.as_str()))
        })?;
        let approximate = match pb::GalleryIndex::try_from(request.index) {
            Ok(pb::GalleryIndex::Hnsw) => true,
            Ok(_) => false,
            Err(_) => return Err(SessionError::InvalidArgument(format!("gallery.index {} is not a GalleryIndex", request.index))),
        };
        let load_error = |e: GalleryError| match e {
            GalleryError::NotFound { .. } => SessionError::NotFound(format!("gallery: {e}")),
            _ => SessionError::InvalidArgument(format!("gallery: {e}")),
        };
        let path = gallery::resolve(dir, &request.path).map_err(load_error)?;
        let key: GalleryKey = (path.clone(), approximate, [file_stamp(&path), file_stamp(&gallery::ids_path(&path))]);
        let dimension_error =
            |e: GalleryError| SessionError::InvalidArgument(format!("gallery {:?} for model {}: {e}", request.path, card.id));
        let load_lock =
            self.gallery_loads.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(path.clone()).or_default().clone();
        let _loading = load_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let cached = self.galleries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key).and_then(std::sync::Weak::upgrade);
        if let Some(shared) = cached {
            shared.check_dimension(dim).map_err(dimension_error)?;
            tracing::info!(gallery = %request.path, items = shared.len(), approximate, "gallery shared with another attachment");
            return Ok(shared);
        }
        let started = std::time::Instant::now();
        let mut loaded = gallery::load_resolved(&path).map_err(load_error)?;
        loaded.check_dimension(dim).map_err(dimension_error)?;
        if approximate {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            tracing::info!(gallery = %request.path, items = loaded.len(), threads, "building the HNSW graph");
            loaded.build_hnsw(threads).map_err(|e| SessionError::Unavailable(format!("gallery {:?}: {e}", request.path)))?;
        }
        tracing::info!(gallery = %request.path, items = loaded.len(), dim, approximate, seconds = started.elapsed().as_secs_f64(), "gallery loaded");
        let shared = Arc::new(loaded);
        let mut galleries = self.galleries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        galleries.retain(|_, weak| weak.strong_count() > 0);
        galleries.insert(key, Arc::downgrade(&shared));
        Ok(shared)
    }
}
