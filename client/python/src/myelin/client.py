"""The client: one connection to a Myelin server, and the calls an experiment makes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar

import grpc
import grpc.aio

from ._wire import myelin_pb2 as pb
from ._wire import myelin_pb2_grpc as rpc
from .errors import MyelinError
from .stream import SessionStream
from .types import Attachment, Calibration, LslSource, ModelInfo, Prediction, Progress, SessionInfo

# The header a proxy in front of several Myelin replicas hashes on (see Client._routed).
ROUTE_HEADER = "myelin-route"

_MODALITIES = {"eeg": pb.MODALITY_EEG, "meg": pb.MODALITY_MEG, "seeg": pb.MODALITY_SEEG, "ecog": pb.MODALITY_ECOG}
_LATE = {"deliver": pb.LATE_POLICY_DELIVER, "drop": pb.LATE_POLICY_DROP}

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _calls(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Server refusals as MyelinError."""

    def wrapped(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return function(*args, **kwargs)
        except grpc.RpcError as error:
            raise MyelinError.from_rpc(error) from None

    wrapped.__doc__, wrapped.__name__ = function.__doc__, function.__name__
    return wrapped


def _is_loopback(address: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (with a port)."""
    import ipaddress

    host = address.rsplit(":", 1)[0] if not address.startswith("[") else address[1:].split("]", 1)[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


class Subscription:
    """A blocking iterator of :class:`Prediction` s; ``cancel()`` (or leaving a ``with`` block)
    ends it. An error the server ends it with is raised as :class:`MyelinError`."""

    def __init__(self, call: Any):
        # A grpc response iterator (grpcio has no type information).
        self._call = call

    def __iter__(self) -> Iterator[Prediction]:
        try:
            for p in self._call:
                yield Prediction.from_wire(p)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                raise MyelinError.from_rpc(error) from None

    def cancel(self) -> None:
        self._call.cancel()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self.cancel()


class Client:
    """A connection to a Myelin server at `address` (``host:port``).

    `ca`: a CA certificate (PEM path or bytes) to connect over TLS; `token`: a bearer token sent
    with every call (default: $MYELIN_TOKEN, and $MYELIN_CA for `ca`). `certificate`: (cert, key)
    PEM paths of a client certificate for mutual TLS; `server_name`: the name the server's
    certificate carries when it is not the address's host. `max_message_bytes` must not exceed the server's ``server.max_message_bytes``
    (pushes are cut into messages under it)."""

    def __init__(
        self,
        address: str,
        token: str | None = None,
        ca: str | bytes | None = None,
        *,
        certificate: Sequence[str] | None = None,
        server_name: str | None = None,
        max_message_bytes: int = 4 << 20,
    ):
        self.address = address
        # As myelin-cli does: $MYELIN_TOKEN and $MYELIN_CA when not given.
        token = token if token is not None else os.environ.get("MYELIN_TOKEN") or None
        ca = ca if ca is not None else os.environ.get("MYELIN_CA") or None
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self._root: bytes | None = None
        self._tls: tuple[grpc.ChannelCredentials, list[tuple[str, str]]] | None = None
        self._channel: grpc.Channel
        if ca is not None:
            self._root = ca if isinstance(ca, bytes) else _read(ca)
            key: bytes | None = None
            cert: bytes | None = None
            if certificate is not None:
                cert_path, key_path = certificate
                cert, key = _read(cert_path), _read(key_path)
            options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
            credentials = grpc.ssl_channel_credentials(root_certificates=self._root, private_key=key, certificate_chain=cert)
            self._tls = (credentials, options)
            self._channel = grpc.secure_channel(address, credentials, options=options)
        elif certificate is not None:
            raise ValueError("a client certificate needs ca= (the CA that signed the server's certificate)")
        else:
            if token and not _is_loopback(address):
                raise ValueError(
                    f"{address}: refusing to send the token in clear to a host that is not this machine; "
                    "connect with TLS (ca=, or $MYELIN_CA)"
                )
            self._channel = grpc.insecure_channel(address)
        self._max_message_bytes = max_message_bytes
        self._decoding = rpc.DecodingStub(self._channel)  # type: ignore[no-untyped-call]  # generated gRPC stub, unannotated
        self._ingest = rpc.IngestStub(self._channel)  # type: ignore[no-untyped-call]  # generated gRPC stub, unannotated

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- streaming in -----------------------------------------------------------------------

    def open_session(
        self,
        session_id: str,
        channels: Sequence[str],
        rate: float,
        modality: str = "eeg",
        *,
        stream_name: str = "",
        non_finite: str = "reject",
        units: str = "microvolts",
        layouts: Sequence[Sequence[float]] | None = None,
        ready_timeout: float = 10.0,
    ) -> SessionStream:
        """Opens a session and returns its :class:`SessionStream` once the server has it (so a
        following :meth:`attach` finds it), or raises the server's refusal. `modality`: eeg,
        meg, seeg or ecog. `non_finite`: "reject" raises on NaN/inf before sending; "send" leaves
        it to the server's policy. `layouts`: each channel's 2-D layout position (x, y), for
        spatial-attention models."""
        if modality.lower() not in _MODALITIES:
            raise ValueError(f"modality must be one of {sorted(_MODALITIES)}, got {modality!r}")
        if layouts is not None and len(layouts) != len(channels):
            raise ValueError(f"{len(layouts)} layout positions for {len(channels)} channels")
        header = pb.StreamHeader(
            session_id=session_id,
            stream_name=stream_name or session_id,
            modality=_MODALITIES[modality.lower()],
            channels=[pb.Channel(label=str(c), type=modality.upper(), unit=units) for c in channels],
            nominal_rate_hz=float(rate),
            clock=pb.CLOCK_SOURCE_UNIX,
        )
        for channel, position in zip(header.channels, layouts if layouts is not None else (), strict=False):
            channel.layout.x, channel.layout.y = float(position[0]), float(position[1])
        stream = SessionStream(
            self._ingest, header, max_message_bytes=self._max_message_bytes, non_finite=non_finite, metadata=self._routed(session_id)
        )
        try:
            # The header's reply says the session is open and ours; a refusal (an id another
            # stream holds, anywhere in a cluster) ends the call instead.
            stream._wait_opened(ready_timeout)
        except BaseException:
            # Never left open behind the caller's back: a retry would find the session taken.
            stream._cancel()
            raise
        return stream

    @_calls
    def connect_lsl(
        self,
        session_id: str,
        *,
        predicate: str = "",
        name: str = "",
        type: str = "",
        source_id: str = "",
        marker_predicate: str = "",
        timeout: float = 0.0,
        modality: str | None = None,
    ) -> LslSource:
        """Has the server open session `session_id` from an LSL stream on its network: found by
        an LSL `predicate` (XPath, e.g. ``"name='EEG'"``) or by `name` / `type` / `source_id`
        (all given must match), with markers from the stream `marker_predicate` finds, if any.
        Waits up to `timeout` seconds (0: the server's default) for the streams to appear."""
        if modality is not None and modality.lower() not in _MODALITIES:
            raise ValueError(f"modality must be one of {sorted(_MODALITIES)}, got {modality!r}")
        request = pb.ConnectLslRequest(
            session_id=session_id,
            data_predicate=predicate,
            data_name=name,
            data_type=type,
            data_source_id=source_id,
            marker_predicate=marker_predicate,
            timeout_s=float(timeout),
            modality=_MODALITIES[modality.lower()] if modality else pb.MODALITY_UNSPECIFIED,
        )
        reply: pb.ConnectLslReply = self._decoding.ConnectLsl(request, metadata=self._routed(request.session_id))
        h = reply.header
        return LslSource(
            session_id,
            h.stream_name,
            [c.label for c in h.channels],
            h.nominal_rate_hz,
            reply.source_id,
            reply.hostname,
            reply.marker_stream,
        )

    # -- decoding ---------------------------------------------------------------------------

    @_calls
    def attach(
        self,
        session_id: str,
        model_id: str,
        *,
        marker_codes: Sequence[int] | None = None,
        tmin_s: float = 0.0,
        tmax_s: float = 0.0,
        hop_s: float | None = None,
        length_s: float = 0.0,
        model_version: str = "",
        latency_budget_ms: int = 0,
        late_policy: str = "deliver",
        channel_map: dict[str, str] | None = None,
        lsl_outlet: bool = False,
        subject: str = "",
        top_k: int = 0,
        gallery: str | None = None,
        gallery_index: str = "exact",
        include_embedding: bool = False,
    ) -> Attachment:
        """Binds `model_id` to a session. Windows are locked to `marker_codes` ([tmin_s, tmax_s)
        around each marker; both 0: the model card's window) or sliding every `hop_s` seconds
        (`length_s` 0: the card's length). `channel_map`: model channel -> stream channel.
        `gallery`: a file under the server's galleries directory (retrieval models)."""
        if marker_codes is not None and hop_s is None:
            window = pb.WindowPolicy(event_locked=pb.EventLockedWindow(marker_codes=list(marker_codes), tmin_s=tmin_s, tmax_s=tmax_s))
        elif hop_s is not None and marker_codes is None:
            window = pb.WindowPolicy(sliding=pb.SlidingWindow(hop_s=float(hop_s), length_s=length_s))
        else:
            raise ValueError("give marker_codes (event-locked windows) or hop_s (sliding windows), one of them")
        if late_policy not in _LATE:
            raise ValueError(f"late_policy must be one of {sorted(_LATE)}")
        request = pb.AttachRequest(
            session_id=session_id,
            model_id=model_id,
            model_version=model_version,
            window=window,
            latency_budget_ms=latency_budget_ms,
            late_policy=_LATE[late_policy],
            channel_map=[pb.ChannelMapping(model_channel=m, stream_channel=s) for m, s in (channel_map or {}).items()],
            lsl_outlet=lsl_outlet,
            subject=subject,
            top_k=top_k,
            include_embedding=include_embedding,
        )
        if gallery:
            index = {"exact": pb.GALLERY_INDEX_EXACT, "hnsw": pb.GALLERY_INDEX_HNSW}[gallery_index]
            request.gallery.CopyFrom(pb.GallerySpec(path=gallery, index=index))
        reply: pb.AttachReply = self._decoding.Attach(request, metadata=self._routed(request.session_id))
        return Attachment(
            attachment_id=reply.attachment_id,
            window_stream_samples=reply.window_stream_samples,
            window_model_samples=reply.window_model_samples,
            latency_budget=reply.latency_budget_ms * 1e-3,
            lsl_outlets=list(reply.lsl_outlets),
            gallery_items=reply.gallery_items,
            missing_channels=list(reply.missing_channels),
            window_lookahead_samples=reply.window_lookahead_samples,
        )

    @_calls
    def detach(self, attachment_id: str) -> None:
        self._decoding.Detach(pb.DetachRequest(attachment_id=attachment_id), metadata=self._routed(attachment_id))

    @_calls
    def subscribe(self, session: str = "", attachment: str = "", *, after_sequence: int | None = None) -> Subscription:
        """Predictions of a session, of one attachment, or (both empty) of everything, from now
        on, as a blocking iterator. The first prediction waits for the server; a session or
        attachment that does not exist raises :class:`MyelinError` (NOT_FOUND) when iterated.
        `after_sequence` (with `attachment`): resume after the last sequence number read; the
        server replays what it still holds after it, then goes on live."""
        request = pb.SubscribeRequest(session_id=session, attachment_id=attachment, after_sequence=after_sequence)
        call = self._decoding.Subscribe(request, metadata=self._routed(attachment or session))
        return Subscription(call)

    async def subscribe_async(
        self, session: str = "", attachment: str = "", *, after_sequence: int | None = None
    ) -> AsyncIterator[Prediction]:
        """:meth:`subscribe` for asyncio: ``async for p in client.subscribe_async(...)``."""
        if self._tls is not None:
            credentials, options = self._tls
            channel = grpc.aio.secure_channel(self.address, credentials, options=options)
        else:
            channel = grpc.aio.insecure_channel(self.address)
        async with channel:
            stub = rpc.DecodingStub(channel)  # type: ignore[no-untyped-call]  # generated gRPC stub, unannotated
            request = pb.SubscribeRequest(session_id=session, attachment_id=attachment, after_sequence=after_sequence)
            call = stub.Subscribe(request, metadata=self._routed(attachment or session))
            try:
                async for p in call:
                    yield Prediction.from_wire(p)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.CANCELLED:
                    raise MyelinError.from_rpc(error) from None

    @_calls
    def calibrate(
        self,
        attachment_id: str,
        target_codes: Sequence[int],
        non_target_codes: Sequence[int],
        *,
        max_epochs: int = 0,
        max_seconds: float = 0.0,
        model_id: str = "",
        filters_per_class: int = 0,
        folds: int = 0,
        keep_current_model: bool = False,
        decoder: str = "",
        on_progress: Callable[[Progress], None] | None = None,
    ) -> Calibration:
        """Calibrates a native decoder live on an event-locked attachment: collects epochs until
        `max_epochs` or `max_seconds`, calling `on_progress` for each, then fits, saves and
        (unless `keep_current_model`) swaps it in. `decoder`: "xdawn_lda" (the default),
        "xdawn_riemann" (xDAWN covariances + tangent space + logistic regression), or "best"
        (both cross-validated, the better one kept). Returns the result."""
        request = pb.CalibrateRequest(
            attachment_id=attachment_id,
            target_codes=list(target_codes),
            non_target_codes=list(non_target_codes),
            max_epochs=max_epochs,
            max_seconds=max_seconds,
            model_id=model_id,
            filters_per_class=filters_per_class,
            folds=folds,
            keep_current_model=keep_current_model,
            decoder=decoder,
        )
        updates: Iterator[pb.CalibrateProgress] = self._decoding.Calibrate(request, metadata=self._routed(request.attachment_id))
        for update in updates:
            if update.HasField("result"):
                r = update.result
                candidates = {c.decoder: (c.cv_auc, c.cv_balanced_accuracy) for c in r.candidates}
                return Calibration(
                    r.model_id,
                    r.model_version,
                    r.epochs,
                    r.target_epochs,
                    r.cv_auc,
                    r.cv_balanced_accuracy,
                    r.folds,
                    r.fit_seconds,
                    r.artifact,
                    r.swapped,
                    r.decoder,
                    candidates,
                )
            if on_progress is not None:
                on_progress(Progress(update.target_epochs, update.non_target_epochs))
        raise MyelinError(grpc.StatusCode.UNKNOWN, "the calibration ended without a result")

    # -- listings ---------------------------------------------------------------------------

    def _routed(self, key: str) -> tuple[tuple[str, str], ...]:
        """The call's metadata with the routing header a proxy in front of several replicas
        hashes on (``deploy/envoy/``): the session id on a session's calls, the attachment id
        (which ends in ``@<session id>``) on an attachment's. Left out when it could not be a
        header value; a lone server ignores it."""
        if key and key.isascii() and key.isprintable():
            return (*self._metadata, (ROUTE_HEADER, key))
        return self._metadata

    def _list_sessions(self, route: str = "") -> Sequence[pb.SessionInfo]:
        try:
            reply: pb.ListSessionsReply = self._decoding.ListSessions(pb.ListSessionsRequest(), metadata=self._routed(route))
            sessions: Sequence[pb.SessionInfo] = reply.sessions  # a repeated field: untyped without protobuf stubs
            return sessions
        except grpc.RpcError as error:
            raise MyelinError.from_rpc(error) from None

    def sessions(self) -> list[SessionInfo]:
        """Every session the server knows: live ones, and ended ones for a short while."""
        return [SessionInfo.from_wire(s) for s in self._list_sessions()]

    def session(self, session_id: str) -> SessionInfo:
        """One session, or :class:`MyelinError` (NOT_FOUND)."""
        for s in self._list_sessions(session_id):
            if s.session_id == session_id:
                return SessionInfo.from_wire(s)
        raise MyelinError(grpc.StatusCode.NOT_FOUND, f"no session {session_id!r}")

    @_calls
    def models(self) -> list[ModelInfo]:
        """Every model the server loaded, with its card's provenance."""
        return [ModelInfo.from_wire(m) for m in self._decoding.ListModels(pb.ListModelsRequest(), metadata=self._metadata).models]
