from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Modality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODALITY_UNSPECIFIED: _ClassVar[Modality]
    MODALITY_EEG: _ClassVar[Modality]
    MODALITY_MEG: _ClassVar[Modality]
    MODALITY_SEEG: _ClassVar[Modality]
    MODALITY_ECOG: _ClassVar[Modality]

class ClockSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLOCK_SOURCE_UNSPECIFIED: _ClassVar[ClockSource]
    CLOCK_SOURCE_UNIX: _ClassVar[ClockSource]
    CLOCK_SOURCE_LSL: _ClassVar[ClockSource]
    CLOCK_SOURCE_DEVICE: _ClassVar[ClockSource]

class IngestWarningKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INGEST_WARNING_KIND_UNSPECIFIED: _ClassVar[IngestWarningKind]
    INGEST_WARNING_KIND_GAP: _ClassVar[IngestWarningKind]
    INGEST_WARNING_KIND_OVERLAP: _ClassVar[IngestWarningKind]
    INGEST_WARNING_KIND_OUT_OF_ORDER: _ClassVar[IngestWarningKind]
    INGEST_WARNING_KIND_CLOCK_JUMP: _ClassVar[IngestWarningKind]
    INGEST_WARNING_KIND_NON_FINITE_ZERO_FILLED: _ClassVar[IngestWarningKind]
    INGEST_WARNING_KIND_MARKER_OUTSIDE_BUFFER: _ClassVar[IngestWarningKind]
    INGEST_WARNING_KIND_TIMESTAMPS_REPAIRED: _ClassVar[IngestWarningKind]
    INGEST_WARNING_KIND_NON_FINITE_REFUSED: _ClassVar[IngestWarningKind]
    INGEST_WARNING_KIND_MARKER_REFUSED: _ClassVar[IngestWarningKind]
    INGEST_WARNING_KIND_HEADER_REPAIRED: _ClassVar[IngestWarningKind]

class LatePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LATE_POLICY_UNSPECIFIED: _ClassVar[LatePolicy]
    LATE_POLICY_DELIVER: _ClassVar[LatePolicy]
    LATE_POLICY_DROP: _ClassVar[LatePolicy]

class GalleryIndex(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GALLERY_INDEX_UNSPECIFIED: _ClassVar[GalleryIndex]
    GALLERY_INDEX_EXACT: _ClassVar[GalleryIndex]
    GALLERY_INDEX_HNSW: _ClassVar[GalleryIndex]

class PredictionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PREDICTION_STATUS_UNSPECIFIED: _ClassVar[PredictionStatus]
    PREDICTION_STATUS_OK: _ClassVar[PredictionStatus]
    PREDICTION_STATUS_LATE: _ClassVar[PredictionStatus]
    PREDICTION_STATUS_SHED: _ClassVar[PredictionStatus]
    PREDICTION_STATUS_ERROR: _ClassVar[PredictionStatus]
    PREDICTION_STATUS_GAP: _ClassVar[PredictionStatus]
MODALITY_UNSPECIFIED: Modality
MODALITY_EEG: Modality
MODALITY_MEG: Modality
MODALITY_SEEG: Modality
MODALITY_ECOG: Modality
CLOCK_SOURCE_UNSPECIFIED: ClockSource
CLOCK_SOURCE_UNIX: ClockSource
CLOCK_SOURCE_LSL: ClockSource
CLOCK_SOURCE_DEVICE: ClockSource
INGEST_WARNING_KIND_UNSPECIFIED: IngestWarningKind
INGEST_WARNING_KIND_GAP: IngestWarningKind
INGEST_WARNING_KIND_OVERLAP: IngestWarningKind
INGEST_WARNING_KIND_OUT_OF_ORDER: IngestWarningKind
INGEST_WARNING_KIND_CLOCK_JUMP: IngestWarningKind
INGEST_WARNING_KIND_NON_FINITE_ZERO_FILLED: IngestWarningKind
INGEST_WARNING_KIND_MARKER_OUTSIDE_BUFFER: IngestWarningKind
INGEST_WARNING_KIND_TIMESTAMPS_REPAIRED: IngestWarningKind
INGEST_WARNING_KIND_NON_FINITE_REFUSED: IngestWarningKind
INGEST_WARNING_KIND_MARKER_REFUSED: IngestWarningKind
INGEST_WARNING_KIND_HEADER_REPAIRED: IngestWarningKind
LATE_POLICY_UNSPECIFIED: LatePolicy
LATE_POLICY_DELIVER: LatePolicy
LATE_POLICY_DROP: LatePolicy
GALLERY_INDEX_UNSPECIFIED: GalleryIndex
GALLERY_INDEX_EXACT: GalleryIndex
GALLERY_INDEX_HNSW: GalleryIndex
PREDICTION_STATUS_UNSPECIFIED: PredictionStatus
PREDICTION_STATUS_OK: PredictionStatus
PREDICTION_STATUS_LATE: PredictionStatus
PREDICTION_STATUS_SHED: PredictionStatus
PREDICTION_STATUS_ERROR: PredictionStatus
PREDICTION_STATUS_GAP: PredictionStatus

class IngestRequest(_message.Message):
    __slots__ = ("header", "chunk", "markers")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    MARKERS_FIELD_NUMBER: _ClassVar[int]
    header: StreamHeader
    chunk: SampleChunk
    markers: Markers
    def __init__(self, header: _Optional[_Union[StreamHeader, _Mapping]] = ..., chunk: _Optional[_Union[SampleChunk, _Mapping]] = ..., markers: _Optional[_Union[Markers, _Mapping]] = ...) -> None: ...

class SensorPosition(_message.Message):
    __slots__ = ("x", "y", "z")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    z: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., z: _Optional[float] = ...) -> None: ...

class Channel(_message.Message):
    __slots__ = ("label", "type", "unit", "position", "layout")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    label: str
    type: str
    unit: str
    position: SensorPosition
    layout: LayoutPosition
    def __init__(self, label: _Optional[str] = ..., type: _Optional[str] = ..., unit: _Optional[str] = ..., position: _Optional[_Union[SensorPosition, _Mapping]] = ..., layout: _Optional[_Union[LayoutPosition, _Mapping]] = ...) -> None: ...

class LayoutPosition(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class StreamHeader(_message.Message):
    __slots__ = ("session_id", "stream_name", "modality", "channels", "nominal_rate_hz", "clock")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_NAME_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    NOMINAL_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    stream_name: str
    modality: Modality
    channels: _containers.RepeatedCompositeFieldContainer[Channel]
    nominal_rate_hz: float
    clock: ClockSource
    def __init__(self, session_id: _Optional[str] = ..., stream_name: _Optional[str] = ..., modality: _Optional[_Union[Modality, str]] = ..., channels: _Optional[_Iterable[_Union[Channel, _Mapping]]] = ..., nominal_rate_hz: _Optional[float] = ..., clock: _Optional[_Union[ClockSource, str]] = ...) -> None: ...

class PerSampleTimestamps(_message.Message):
    __slots__ = ("seconds",)
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    seconds: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, seconds: _Optional[_Iterable[float]] = ...) -> None: ...

class RegularTimestamps(_message.Message):
    __slots__ = ("first_seconds", "rate_hz")
    FIRST_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    first_seconds: float
    rate_hz: float
    def __init__(self, first_seconds: _Optional[float] = ..., rate_hz: _Optional[float] = ...) -> None: ...

class SampleChunk(_message.Message):
    __slots__ = ("first_sample_index", "per_sample", "regular", "n_samples", "samples")
    FIRST_SAMPLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    PER_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    REGULAR_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    first_sample_index: int
    per_sample: PerSampleTimestamps
    regular: RegularTimestamps
    n_samples: int
    samples: bytes
    def __init__(self, first_sample_index: _Optional[int] = ..., per_sample: _Optional[_Union[PerSampleTimestamps, _Mapping]] = ..., regular: _Optional[_Union[RegularTimestamps, _Mapping]] = ..., n_samples: _Optional[int] = ..., samples: _Optional[bytes] = ...) -> None: ...

class Marker(_message.Message):
    __slots__ = ("timestamp", "code", "label")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    timestamp: float
    code: int
    label: str
    def __init__(self, timestamp: _Optional[float] = ..., code: _Optional[int] = ..., label: _Optional[str] = ...) -> None: ...

class Markers(_message.Message):
    __slots__ = ("markers",)
    MARKERS_FIELD_NUMBER: _ClassVar[int]
    markers: _containers.RepeatedCompositeFieldContainer[Marker]
    def __init__(self, markers: _Optional[_Iterable[_Union[Marker, _Mapping]]] = ...) -> None: ...

class IngestWarning(_message.Message):
    __slots__ = ("kind", "message", "sample_index", "count")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    kind: IngestWarningKind
    message: str
    sample_index: int
    count: int
    def __init__(self, kind: _Optional[_Union[IngestWarningKind, str]] = ..., message: _Optional[str] = ..., sample_index: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class IngestReply(_message.Message):
    __slots__ = ("samples_accepted_until", "markers_accepted", "warnings")
    SAMPLES_ACCEPTED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    MARKERS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    samples_accepted_until: int
    markers_accepted: int
    warnings: _containers.RepeatedCompositeFieldContainer[IngestWarning]
    def __init__(self, samples_accepted_until: _Optional[int] = ..., markers_accepted: _Optional[int] = ..., warnings: _Optional[_Iterable[_Union[IngestWarning, _Mapping]]] = ...) -> None: ...

class ConnectLslRequest(_message.Message):
    __slots__ = ("session_id", "data_predicate", "data_name", "data_type", "data_source_id", "marker_predicate", "timeout_s", "modality")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_PREDICATE_FIELD_NUMBER: _ClassVar[int]
    DATA_NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    MARKER_PREDICATE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    data_predicate: str
    data_name: str
    data_type: str
    data_source_id: str
    marker_predicate: str
    timeout_s: float
    modality: Modality
    def __init__(self, session_id: _Optional[str] = ..., data_predicate: _Optional[str] = ..., data_name: _Optional[str] = ..., data_type: _Optional[str] = ..., data_source_id: _Optional[str] = ..., marker_predicate: _Optional[str] = ..., timeout_s: _Optional[float] = ..., modality: _Optional[_Union[Modality, str]] = ...) -> None: ...

class ConnectLslReply(_message.Message):
    __slots__ = ("header", "source_id", "hostname", "marker_stream", "warnings")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    MARKER_STREAM_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    header: StreamHeader
    source_id: str
    hostname: str
    marker_stream: str
    warnings: _containers.RepeatedCompositeFieldContainer[IngestWarning]
    def __init__(self, header: _Optional[_Union[StreamHeader, _Mapping]] = ..., source_id: _Optional[str] = ..., hostname: _Optional[str] = ..., marker_stream: _Optional[str] = ..., warnings: _Optional[_Iterable[_Union[IngestWarning, _Mapping]]] = ...) -> None: ...

class CalibrateRequest(_message.Message):
    __slots__ = ("attachment_id", "target_codes", "non_target_codes", "max_epochs", "max_seconds", "model_id", "filters_per_class", "folds", "keep_current_model", "decoder")
    ATTACHMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_CODES_FIELD_NUMBER: _ClassVar[int]
    NON_TARGET_CODES_FIELD_NUMBER: _ClassVar[int]
    MAX_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    FILTERS_PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    FOLDS_FIELD_NUMBER: _ClassVar[int]
    KEEP_CURRENT_MODEL_FIELD_NUMBER: _ClassVar[int]
    DECODER_FIELD_NUMBER: _ClassVar[int]
    attachment_id: str
    target_codes: _containers.RepeatedScalarFieldContainer[int]
    non_target_codes: _containers.RepeatedScalarFieldContainer[int]
    max_epochs: int
    max_seconds: float
    model_id: str
    filters_per_class: int
    folds: int
    keep_current_model: bool
    decoder: str
    def __init__(self, attachment_id: _Optional[str] = ..., target_codes: _Optional[_Iterable[int]] = ..., non_target_codes: _Optional[_Iterable[int]] = ..., max_epochs: _Optional[int] = ..., max_seconds: _Optional[float] = ..., model_id: _Optional[str] = ..., filters_per_class: _Optional[int] = ..., folds: _Optional[int] = ..., keep_current_model: _Optional[bool] = ..., decoder: _Optional[str] = ...) -> None: ...

class CalibrationResult(_message.Message):
    __slots__ = ("model_id", "model_version", "epochs", "target_epochs", "cv_auc", "cv_balanced_accuracy", "folds", "fit_seconds", "artifact", "swapped", "decoder", "candidates")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    TARGET_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    CV_AUC_FIELD_NUMBER: _ClassVar[int]
    CV_BALANCED_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    FOLDS_FIELD_NUMBER: _ClassVar[int]
    FIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    SWAPPED_FIELD_NUMBER: _ClassVar[int]
    DECODER_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
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
    decoder: str
    candidates: _containers.RepeatedCompositeFieldContainer[DecoderQuality]
    def __init__(self, model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., epochs: _Optional[int] = ..., target_epochs: _Optional[int] = ..., cv_auc: _Optional[float] = ..., cv_balanced_accuracy: _Optional[float] = ..., folds: _Optional[int] = ..., fit_seconds: _Optional[float] = ..., artifact: _Optional[str] = ..., swapped: _Optional[bool] = ..., decoder: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[DecoderQuality, _Mapping]]] = ...) -> None: ...

class DecoderQuality(_message.Message):
    __slots__ = ("decoder", "cv_auc", "cv_balanced_accuracy")
    DECODER_FIELD_NUMBER: _ClassVar[int]
    CV_AUC_FIELD_NUMBER: _ClassVar[int]
    CV_BALANCED_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    decoder: str
    cv_auc: float
    cv_balanced_accuracy: float
    def __init__(self, decoder: _Optional[str] = ..., cv_auc: _Optional[float] = ..., cv_balanced_accuracy: _Optional[float] = ...) -> None: ...

class CalibrateProgress(_message.Message):
    __slots__ = ("target_epochs", "non_target_epochs", "result")
    TARGET_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    NON_TARGET_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    target_epochs: int
    non_target_epochs: int
    result: CalibrationResult
    def __init__(self, target_epochs: _Optional[int] = ..., non_target_epochs: _Optional[int] = ..., result: _Optional[_Union[CalibrationResult, _Mapping]] = ...) -> None: ...

class EventLockedWindow(_message.Message):
    __slots__ = ("marker_codes", "tmin_s", "tmax_s")
    MARKER_CODES_FIELD_NUMBER: _ClassVar[int]
    TMIN_S_FIELD_NUMBER: _ClassVar[int]
    TMAX_S_FIELD_NUMBER: _ClassVar[int]
    marker_codes: _containers.RepeatedScalarFieldContainer[int]
    tmin_s: float
    tmax_s: float
    def __init__(self, marker_codes: _Optional[_Iterable[int]] = ..., tmin_s: _Optional[float] = ..., tmax_s: _Optional[float] = ...) -> None: ...

class SlidingWindow(_message.Message):
    __slots__ = ("length_s", "hop_s")
    LENGTH_S_FIELD_NUMBER: _ClassVar[int]
    HOP_S_FIELD_NUMBER: _ClassVar[int]
    length_s: float
    hop_s: float
    def __init__(self, length_s: _Optional[float] = ..., hop_s: _Optional[float] = ...) -> None: ...

class WindowPolicy(_message.Message):
    __slots__ = ("event_locked", "sliding")
    EVENT_LOCKED_FIELD_NUMBER: _ClassVar[int]
    SLIDING_FIELD_NUMBER: _ClassVar[int]
    event_locked: EventLockedWindow
    sliding: SlidingWindow
    def __init__(self, event_locked: _Optional[_Union[EventLockedWindow, _Mapping]] = ..., sliding: _Optional[_Union[SlidingWindow, _Mapping]] = ...) -> None: ...

class ChannelMapping(_message.Message):
    __slots__ = ("model_channel", "stream_channel")
    MODEL_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    STREAM_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    model_channel: str
    stream_channel: str
    def __init__(self, model_channel: _Optional[str] = ..., stream_channel: _Optional[str] = ...) -> None: ...

class AttachRequest(_message.Message):
    __slots__ = ("session_id", "model_id", "model_version", "window", "latency_budget_ms", "late_policy", "channel_map", "lsl_outlet", "subject", "top_k", "gallery", "include_embedding")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    LATE_POLICY_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_MAP_FIELD_NUMBER: _ClassVar[int]
    LSL_OUTLET_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    GALLERY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    model_id: str
    model_version: str
    window: WindowPolicy
    latency_budget_ms: int
    late_policy: LatePolicy
    channel_map: _containers.RepeatedCompositeFieldContainer[ChannelMapping]
    lsl_outlet: bool
    subject: str
    top_k: int
    gallery: GallerySpec
    include_embedding: bool
    def __init__(self, session_id: _Optional[str] = ..., model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., window: _Optional[_Union[WindowPolicy, _Mapping]] = ..., latency_budget_ms: _Optional[int] = ..., late_policy: _Optional[_Union[LatePolicy, str]] = ..., channel_map: _Optional[_Iterable[_Union[ChannelMapping, _Mapping]]] = ..., lsl_outlet: _Optional[bool] = ..., subject: _Optional[str] = ..., top_k: _Optional[int] = ..., gallery: _Optional[_Union[GallerySpec, _Mapping]] = ..., include_embedding: _Optional[bool] = ...) -> None: ...

class GallerySpec(_message.Message):
    __slots__ = ("path", "index")
    PATH_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    path: str
    index: GalleryIndex
    def __init__(self, path: _Optional[str] = ..., index: _Optional[_Union[GalleryIndex, str]] = ...) -> None: ...

class AttachReply(_message.Message):
    __slots__ = ("attachment_id", "window_stream_samples", "window_model_samples", "latency_budget_ms", "lsl_outlets", "gallery_items", "missing_channels", "window_lookahead_samples")
    ATTACHMENT_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_STREAM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MODEL_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    LSL_OUTLETS_FIELD_NUMBER: _ClassVar[int]
    GALLERY_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MISSING_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_LOOKAHEAD_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    attachment_id: str
    window_stream_samples: int
    window_model_samples: int
    latency_budget_ms: int
    lsl_outlets: _containers.RepeatedScalarFieldContainer[str]
    gallery_items: int
    missing_channels: _containers.RepeatedScalarFieldContainer[str]
    window_lookahead_samples: int
    def __init__(self, attachment_id: _Optional[str] = ..., window_stream_samples: _Optional[int] = ..., window_model_samples: _Optional[int] = ..., latency_budget_ms: _Optional[int] = ..., lsl_outlets: _Optional[_Iterable[str]] = ..., gallery_items: _Optional[int] = ..., missing_channels: _Optional[_Iterable[str]] = ..., window_lookahead_samples: _Optional[int] = ...) -> None: ...

class DetachRequest(_message.Message):
    __slots__ = ("attachment_id",)
    ATTACHMENT_ID_FIELD_NUMBER: _ClassVar[int]
    attachment_id: str
    def __init__(self, attachment_id: _Optional[str] = ...) -> None: ...

class DetachReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("session_id", "attachment_id", "after_sequence")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    attachment_id: str
    after_sequence: int
    def __init__(self, session_id: _Optional[str] = ..., attachment_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("labels", "probabilities", "top_labels", "top_probabilities")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    TOP_LABELS_FIELD_NUMBER: _ClassVar[int]
    TOP_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    top_labels: _containers.RepeatedScalarFieldContainer[str]
    top_probabilities: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, labels: _Optional[_Iterable[str]] = ..., probabilities: _Optional[_Iterable[float]] = ..., top_labels: _Optional[_Iterable[str]] = ..., top_probabilities: _Optional[_Iterable[float]] = ...) -> None: ...

class Retrieval(_message.Message):
    __slots__ = ("ids", "scores", "search_ns")
    IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    SEARCH_NS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    scores: _containers.RepeatedScalarFieldContainer[float]
    search_ns: int
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., scores: _Optional[_Iterable[float]] = ..., search_ns: _Optional[int] = ...) -> None: ...

class WindowSpan(_message.Message):
    __slots__ = ("first_sample_index", "last_sample_index", "first_timestamp", "last_timestamp")
    FIRST_SAMPLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_SAMPLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    FIRST_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    LAST_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    first_sample_index: int
    last_sample_index: int
    first_timestamp: float
    last_timestamp: float
    def __init__(self, first_sample_index: _Optional[int] = ..., last_sample_index: _Optional[int] = ..., first_timestamp: _Optional[float] = ..., last_timestamp: _Optional[float] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("last_sample_received_ns", "decode_start_ns", "decode_end_ns", "published_ns", "budget_ms", "budget_met", "server_latency_us", "enqueued_ns", "deadline_ns", "batch_size")
    LAST_SAMPLE_RECEIVED_NS_FIELD_NUMBER: _ClassVar[int]
    DECODE_START_NS_FIELD_NUMBER: _ClassVar[int]
    DECODE_END_NS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_NS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MET_FIELD_NUMBER: _ClassVar[int]
    SERVER_LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    ENQUEUED_NS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_NS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    last_sample_received_ns: int
    decode_start_ns: int
    decode_end_ns: int
    published_ns: int
    budget_ms: int
    budget_met: bool
    server_latency_us: int
    enqueued_ns: int
    deadline_ns: int
    batch_size: int
    def __init__(self, last_sample_received_ns: _Optional[int] = ..., decode_start_ns: _Optional[int] = ..., decode_end_ns: _Optional[int] = ..., published_ns: _Optional[int] = ..., budget_ms: _Optional[int] = ..., budget_met: _Optional[bool] = ..., server_latency_us: _Optional[int] = ..., enqueued_ns: _Optional[int] = ..., deadline_ns: _Optional[int] = ..., batch_size: _Optional[int] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("session_id", "attachment_id", "model_id", "model_version", "sequence", "window", "trigger", "classification", "retrieval", "embedding", "status", "error_reason", "timing", "subscriber_dropped_total")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_REASON_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_DROPPED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    attachment_id: str
    model_id: str
    model_version: str
    sequence: int
    window: WindowSpan
    trigger: Marker
    classification: Classification
    retrieval: Retrieval
    embedding: _containers.RepeatedScalarFieldContainer[float]
    status: PredictionStatus
    error_reason: str
    timing: Timing
    subscriber_dropped_total: int
    def __init__(self, session_id: _Optional[str] = ..., attachment_id: _Optional[str] = ..., model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., sequence: _Optional[int] = ..., window: _Optional[_Union[WindowSpan, _Mapping]] = ..., trigger: _Optional[_Union[Marker, _Mapping]] = ..., classification: _Optional[_Union[Classification, _Mapping]] = ..., retrieval: _Optional[_Union[Retrieval, _Mapping]] = ..., embedding: _Optional[_Iterable[float]] = ..., status: _Optional[_Union[PredictionStatus, str]] = ..., error_reason: _Optional[str] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., subscriber_dropped_total: _Optional[int] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AttachmentInfo(_message.Message):
    __slots__ = ("attachment_id", "model_id", "model_version", "window", "latency_budget_ms", "predictions", "owner")
    ATTACHMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    attachment_id: str
    model_id: str
    model_version: str
    window: WindowPolicy
    latency_budget_ms: int
    predictions: int
    owner: str
    def __init__(self, attachment_id: _Optional[str] = ..., model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., window: _Optional[_Union[WindowPolicy, _Mapping]] = ..., latency_budget_ms: _Optional[int] = ..., predictions: _Optional[int] = ..., owner: _Optional[str] = ...) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ("session_id", "header", "live", "samples_received", "markers_received", "gap_samples", "attachments", "recording_path", "source", "recording_error", "owner", "warnings", "source_error", "replica")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    MARKERS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    GAP_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    RECORDING_PATH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RECORDING_ERROR_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ERROR_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    header: StreamHeader
    live: bool
    samples_received: int
    markers_received: int
    gap_samples: int
    attachments: _containers.RepeatedCompositeFieldContainer[AttachmentInfo]
    recording_path: str
    source: str
    recording_error: str
    owner: str
    warnings: _containers.RepeatedCompositeFieldContainer[IngestWarning]
    source_error: str
    replica: str
    def __init__(self, session_id: _Optional[str] = ..., header: _Optional[_Union[StreamHeader, _Mapping]] = ..., live: _Optional[bool] = ..., samples_received: _Optional[int] = ..., markers_received: _Optional[int] = ..., gap_samples: _Optional[int] = ..., attachments: _Optional[_Iterable[_Union[AttachmentInfo, _Mapping]]] = ..., recording_path: _Optional[str] = ..., source: _Optional[str] = ..., recording_error: _Optional[str] = ..., owner: _Optional[str] = ..., warnings: _Optional[_Iterable[_Union[IngestWarning, _Mapping]]] = ..., source_error: _Optional[str] = ..., replica: _Optional[str] = ...) -> None: ...

class ListSessionsReply(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionInfo]
    def __init__(self, sessions: _Optional[_Iterable[_Union[SessionInfo, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("id", "version", "task", "modality", "channels", "sample_rate_hz", "window_tmin_s", "window_tmax_s", "labels", "input", "output", "ready", "error", "execution_provider", "data_kind", "training_data", "subject")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    WINDOW_TMIN_S_FIELD_NUMBER: _ClassVar[int]
    WINDOW_TMAX_S_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    DATA_KIND_FIELD_NUMBER: _ClassVar[int]
    TRAINING_DATA_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: str
    task: str
    modality: Modality
    channels: _containers.RepeatedScalarFieldContainer[str]
    sample_rate_hz: float
    window_tmin_s: float
    window_tmax_s: float
    labels: _containers.RepeatedScalarFieldContainer[str]
    input: TensorSpec
    output: TensorSpec
    ready: bool
    error: str
    execution_provider: str
    data_kind: str
    training_data: str
    subject: str
    def __init__(self, id: _Optional[str] = ..., version: _Optional[str] = ..., task: _Optional[str] = ..., modality: _Optional[_Union[Modality, str]] = ..., channels: _Optional[_Iterable[str]] = ..., sample_rate_hz: _Optional[float] = ..., window_tmin_s: _Optional[float] = ..., window_tmax_s: _Optional[float] = ..., labels: _Optional[_Iterable[str]] = ..., input: _Optional[_Union[TensorSpec, _Mapping]] = ..., output: _Optional[_Union[TensorSpec, _Mapping]] = ..., ready: _Optional[bool] = ..., error: _Optional[str] = ..., execution_provider: _Optional[str] = ..., data_kind: _Optional[str] = ..., training_data: _Optional[str] = ..., subject: _Optional[str] = ...) -> None: ...

class ListModelsReply(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...
