"""What the client hands back: plain dataclasses (times in seconds, arrays as numpy), made from
the wire messages."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ._wire import myelin_pb2 as pb

_STATUS = {
    pb.PREDICTION_STATUS_OK: "ok",
    pb.PREDICTION_STATUS_LATE: "late",
    pb.PREDICTION_STATUS_SHED: "shed",
    pb.PREDICTION_STATUS_ERROR: "error",
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
    last_sample_received; `budget_met` says whether it stayed within `budget`."""

    last_sample_received: float
    decode_start: float
    decode_end: float
    published: float
    server_latency: float
    budget: float
    budget_met: bool


@dataclass(frozen=True)
class Prediction:
    session_id: str
    attachment_id: str
    model_id: str
    model_version: str
    sequence: int
    #: "ok", "late", "shed" or "error".
    status: str
    error_reason: str
    window: Window
    timing: Timing
    #: The marker that opened the window (event-locked windows), else None.
    trigger: Optional[Marker]
    #: Classification: the labels and one probability per label; the attachment's top_k.
    labels: List[str] = field(default_factory=list)
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    top_labels: List[str] = field(default_factory=list)
    top_probabilities: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    #: Retrieval: gallery ids and cosine scores, best first.
    ids: List[str] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    embedding: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    #: Predictions this subscription has lost so far by reading too slowly.
    dropped_so_far: int = 0

    @property
    def label(self) -> Optional[str]:
        """The most probable label (classification), else None."""
        if len(self.probabilities) == 0:
            return None
        return self.labels[int(np.argmax(self.probabilities))]

    @classmethod
    def from_wire(cls, p: pb.Prediction) -> "Prediction":
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
    lsl_outlets: List[str]
    gallery_items: int
    missing_channels: List[str]


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


@dataclass(frozen=True)
class Acknowledgement:
    """What the server has taken of a stream so far, and the warnings it raised."""

    samples_accepted_until: int
    markers_accepted: int
    warnings: List[str]
