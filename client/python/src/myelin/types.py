"""What the client hands back: plain dataclasses (times in seconds, arrays as numpy), made from
the wire messages."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._wire import myelin_pb2 as pb

_STATUS = {
    pb.PREDICTION_STATUS_OK: "ok",
    pb.PREDICTION_STATUS_LATE: "late",
    pb.PREDICTION_STATUS_SHED: "shed",
    pb.PREDICTION_STATUS_ERROR: "error",
    pb.PREDICTION_STATUS_GAP: "gap",
}


@dataclass(frozen=True)
class Marker:
    code: int
    timestamp: float
    label: str = ""


@dataclass(frozen=True)
class Window:
    """The stream samples a prediction was decoded from: indices inclusive, source timestamps."""

    first_index: int
    last_index: int
    first_time: float
    last_time: float


@dataclass(frozen=True)
class Timing:
    """Server clock, seconds since the server started. `server_latency` = published -
    last_sample_received; `budget_met` says whether it stayed within `budget`. `deadline` =
    last_sample_received + budget: each model decodes the earliest deadline first; `enqueued`
    is when the window was handed to its model, `batch_size` how many windows ran with it."""

    last_sample_received: float
    decode_start: float
    decode_end: float
    published: float
    server_latency: float
    budget: float
    budget_met: bool
    enqueued: float = 0.0
    deadline: float = 0.0
    batch_size: int = 0


@dataclass(frozen=True)
class Prediction:
    session_id: str
    attachment_id: str
    model_id: str
    model_version: str
    sequence: int
    #: "ok", "late", "shed", "error", or "gap" (the attachment moved to another replica: numbers
    #: below this one not received are lost; see error_reason).
    status: str
    error_reason: str
    window: Window
    timing: Timing
    #: The marker that opened the window (event-locked windows), else None.
    trigger: Marker | None
    #: Classification: the labels and one probability per label; the attachment's top_k.
    labels: list[str] = field(default_factory=list)
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    top_labels: list[str] = field(default_factory=list)
    top_probabilities: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    #: Retrieval: gallery ids and cosine scores, best first.
    ids: list[str] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    embedding: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    #: Predictions this subscription has lost so far by reading too slowly.
    dropped_so_far: int = 0

    @property
    def label(self) -> str | None:
        """The most probable label (classification), else None."""
        if len(self.probabilities) == 0:
            return None
        return self.labels[int(np.argmax(self.probabilities))]

    @classmethod
    def from_wire(cls, p: pb.Prediction) -> Prediction:
        t = p.timing
        ns = 1e-9
        result = p.WhichOneof("result")
        c, r = p.classification, p.retrieval
        return cls(
            session_id=p.session_id,
            attachment_id=p.attachment_id,
            model_id=p.model_id,
            model_version=p.model_version,
            sequence=p.sequence,
            status=_STATUS.get(p.status, "unspecified"),
            error_reason=p.error_reason,
            window=Window(p.window.first_sample_index, p.window.last_sample_index, p.window.first_timestamp, p.window.last_timestamp),
            timing=Timing(
                last_sample_received=t.last_sample_received_ns * ns,
                decode_start=t.decode_start_ns * ns,
                decode_end=t.decode_end_ns * ns,
                published=t.published_ns * ns,
                server_latency=t.server_latency_us * 1e-6,
                budget=t.budget_ms * 1e-3,
                budget_met=t.budget_met,
                enqueued=t.enqueued_ns * ns,
                deadline=t.deadline_ns * ns,
                batch_size=t.batch_size,
            ),
            trigger=Marker(p.trigger.code, p.trigger.timestamp, p.trigger.label) if p.HasField("trigger") else None,
            labels=list(c.labels) if result == "classification" else [],
            probabilities=np.asarray(c.probabilities, np.float32) if result == "classification" else np.zeros(0, np.float32),
            top_labels=list(c.top_labels) if result == "classification" else [],
            top_probabilities=np.asarray(c.top_probabilities, np.float32) if result == "classification" else np.zeros(0, np.float32),
            ids=list(r.ids) if result == "retrieval" else [],
            scores=np.asarray(r.scores, np.float32) if result == "retrieval" else np.zeros(0, np.float32),
            embedding=np.asarray(p.embedding, np.float32),
            dropped_so_far=p.subscriber_dropped_total,
        )


@dataclass(frozen=True)
class Attachment:
    """A model bound to a session (Attach's reply)."""

    attachment_id: str
    #: The window in samples of the stream and of the model.
    window_stream_samples: int
    window_model_samples: int
    latency_budget: float
    lsl_outlets: list[str]
    gallery_items: int
    missing_channels: list[str]
    #: Stream samples after a window's end the server waits for before decoding it (the
    #: anti-alias filter of a card that resamples by a rational ratio; 0 otherwise).
    window_lookahead_samples: int = 0


@dataclass(frozen=True)
class Progress:
    """Epochs a calibration has collected so far."""

    target_epochs: int
    non_target_epochs: int


@dataclass(frozen=True)
class Calibration:
    """A finished calibration: the fitted decoder, its cross-validated quality, whether it now
    serves the attachment."""

    model_id: str
    model_version: str
    epochs: int
    target_epochs: int
    cv_auc: float
    cv_balanced_accuracy: float
    folds: int
    fit_seconds: float
    artifact: str
    swapped: bool
    #: The decoder fitted: "xdawn_lda" or "xdawn_riemann".
    decoder: str = "xdawn_lda"
    #: Every decoder cross-validated: {decoder: (cv_auc, cv_balanced_accuracy)}.
    candidates: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Acknowledgement:
    """What the server has taken of a stream so far, and the warnings it raised."""

    samples_accepted_until: int
    markers_accepted: int
    warnings: list[str]


_MODALITY_NAMES: dict[int, str] = {pb.MODALITY_EEG: "eeg", pb.MODALITY_MEG: "meg", pb.MODALITY_SEEG: "seeg", pb.MODALITY_ECOG: "ecog"}


def modality_name(value: int) -> str:
    return _MODALITY_NAMES.get(value, "unspecified")


@dataclass(frozen=True)
class AttachmentInfo:
    attachment_id: str
    model_id: str
    model_version: str
    latency_budget: float
    #: Predictions published so far.
    predictions: int


@dataclass(frozen=True)
class SessionInfo:
    """A session the server knows (ListSessions): ended sessions stay listed a short while."""

    session_id: str
    live: bool
    #: "grpc" or "lsl".
    source: str
    stream_name: str
    modality: str
    channels: list[str]
    rate: float
    samples_received: int
    markers_received: int
    #: Samples the stream skipped (recorded as gaps).
    gap_samples: int
    attachments: list[AttachmentInfo]
    #: The XDF file this session is recorded to, else "".
    recording_path: str
    #: Why the recording stopped early (a full disk), else "".
    recording_error: str
    #: Every ingest warning since the session opened, one per kind: its first message and how
    #: many there were (for an LSL source, what nobody could be told: refused NaN samples...).
    warnings: list[str]
    #: Why the session's source stopped on an error (an LSL inlet), else "".
    source_error: str
    #: The replica that holds it (a cluster's ``cluster.replica``), else "".
    replica: str = ""

    @classmethod
    def from_wire(cls, s: pb.SessionInfo) -> SessionInfo:
        return cls(
            session_id=s.session_id,
            live=s.live,
            source=s.source,
            stream_name=s.header.stream_name,
            modality=modality_name(s.header.modality),
            channels=[c.label for c in s.header.channels],
            rate=s.header.nominal_rate_hz,
            samples_received=s.samples_received,
            markers_received=s.markers_received,
            gap_samples=s.gap_samples,
            attachments=[
                AttachmentInfo(a.attachment_id, a.model_id, a.model_version, a.latency_budget_ms * 1e-3, a.predictions)
                for a in s.attachments
            ],
            recording_path=s.recording_path,
            recording_error=s.recording_error,
            warnings=[f"{w.message} (x{w.count})" for w in s.warnings],
            source_error=s.source_error,
            replica=s.replica,
        )


@dataclass(frozen=True)
class ModelInfo:
    """A model the server loaded (ListModels), with what its card says trained it."""

    id: str
    version: str
    task: str
    modality: str
    channels: list[str]
    rate: float
    #: The window around its marker, seconds: (tmin, tmax).
    window: tuple[float, float]
    labels: list[str]
    ready: bool
    error: str
    execution_provider: str
    #: What trained it, from its card: "real", "proxy", "synthetic" or "fixture", and what it was.
    data_kind: str
    training_data: str
    subject: str

    @classmethod
    def from_wire(cls, m: pb.ModelInfo) -> ModelInfo:
        return cls(
            id=m.id,
            version=m.version,
            task=m.task,
            modality=modality_name(m.modality),
            channels=list(m.channels),
            rate=m.sample_rate_hz,
            window=(m.window_tmin_s, m.window_tmax_s),
            labels=list(m.labels),
            ready=m.ready,
            error=m.error,
            execution_provider=m.execution_provider,
            data_kind=m.data_kind,
            training_data=m.training_data,
            subject=m.subject,
        )


@dataclass(frozen=True)
class LslSource:
    """An LSL stream the server connected as a session (ConnectLsl's reply)."""

    session_id: str
    stream_name: str
    channels: list[str]
    rate: float
    source_id: str
    hostname: str
    #: The marker stream's name, when one was connected, else "".
    marker_stream: str
