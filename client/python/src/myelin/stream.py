"""A session's stream into the server: numpy samples and markers in, with the index bookkeeping,
chunking under the message limit, timestamps and backpressure done here."""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from ._wire import myelin_pb2 as pb
from ._wire import myelin_pb2_grpc as rpc
from .errors import InvalidSamples, MyelinError
from .types import Acknowledgement

#: Room left in each message for everything but the samples.
_OVERHEAD_BYTES = 4096


class SessionStream:
    """One Ingest call: `push` samples, send `marker`s, `close` (or use it as a context manager).

    `push` blocks while the server is behind (backpressure: a bounded queue of messages), so a
    loop that pushes as fast as it reads its amplifier never grows memory. An error the server
    ends the stream with is raised as :class:`MyelinError` at the next call."""

    def __init__(
        self,
        stub: rpc.IngestStub,
        header: pb.StreamHeader,
        *,
        max_message_bytes: int,
        non_finite: str,
        metadata: Sequence[tuple[str, str]],
        queue_messages: int = 32,
    ):
        if non_finite not in ("reject", "send"):
            raise ValueError('non_finite must be "reject" (raise before sending) or "send" (let the server apply its policy)')
        self.session_id = header.session_id
        self.channels = len(header.channels)
        self.rate = header.nominal_rate_hz
        self._non_finite = non_finite
        self._max_bytes = max_message_bytes
        self._requests: queue.Queue[pb.IngestRequest | None] = queue.Queue(maxsize=queue_messages)
        self._requests.put(pb.IngestRequest(header=header))
        # A grpc bidirectional call (grpcio has no type information).
        self._call: Any = stub.Stream(self._outgoing(), metadata=metadata)
        self._error: MyelinError | None = None
        self._done = threading.Event()
        # Set by the header's reply: the session is open and this stream's.
        self._opened = threading.Event()
        self._acknowledged = Acknowledgement(0, 0, [])
        self._warnings: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_replies, name=f"myelin-{self.session_id}", daemon=True)
        self._reader.start()
        #: Index of the next sample to push.
        self.next_index = 0
        self._first_time: float | None = None
        self._closed = False

    # -- the call ---------------------------------------------------------------------------

    def _outgoing(self) -> Iterator[pb.IngestRequest]:
        while True:
            request = self._requests.get()
            if request is None:
                return
            yield request

    def _read_replies(self) -> None:
        try:
            for reply in self._call:
                self._opened.set()
                with self._lock:
                    self._warnings.extend(w.message for w in reply.warnings)
                    del self._warnings[:-100]
                    self._acknowledged = Acknowledgement(reply.samples_accepted_until, reply.markers_accepted, list(self._warnings))
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self._error = MyelinError.from_rpc(error)
        finally:
            self._done.set()

    def _send(self, request: pb.IngestRequest) -> None:
        self._check()
        while True:
            try:
                self._requests.put(request, timeout=0.1)
                return
            except queue.Full:
                self._check()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise RuntimeError(f"session stream {self.session_id!r} is closed")
        if self._done.is_set():
            raise MyelinError(grpc.StatusCode.UNAVAILABLE, "the stream ended")

    # -- samples ----------------------------------------------------------------------------

    def now(self) -> float:
        """The stream's clock (Unix time, seconds): what default timestamps and markers use."""
        return time.time()

    def push(self, samples: npt.ArrayLike, timestamps: npt.ArrayLike | None = None) -> int:
        """Sends samples `[n, channels]` (any real dtype; sent as float32). `timestamps`: one per
        sample, in seconds, as the rig stamped them (a step back, as jittery rig clocks make, is
        the server's ``sessions.timestamp_policy`` to repair or refuse); by default a regular
        grid at the stream's rate, the first pushed sample at the time of the first push.
        Returns the index of the first
        sample sent. Raises :class:`InvalidSamples` (nothing sent) for a wrong shape or dtype,
        non-finite values under ``non_finite="reject"``, or bad timestamps."""
        data = np.asarray(samples)
        if data.dtype.kind not in "fiu":
            raise InvalidSamples(f"samples must be real numbers, got dtype {data.dtype}")
        if data.ndim == 1 and self.channels == 1:
            data = data.reshape(-1, 1)
        if data.ndim != 2 or data.shape[1] != self.channels:
            raise InvalidSamples(f"samples must be [n, {self.channels}] (n samples of {self.channels} channels), got shape {data.shape}")
        data = np.ascontiguousarray(data, dtype="<f4")
        if self._non_finite == "reject" and not np.isfinite(data).all():
            bad = int(np.argwhere(~np.isfinite(data))[0][0])
            raise InvalidSamples(
                f"sample {self.next_index + bad} is not finite (NaN or inf); "
                'open the session with non_finite="send" to let the server\'s policy handle it'
            )
        n = data.shape[0]
        stamps = None
        if timestamps is not None:
            stamps = np.asarray(timestamps, dtype=np.float64)
            if stamps.shape != (n,):
                raise InvalidSamples(f"timestamps must be one per sample ({n}), got shape {stamps.shape}")
            if not np.isfinite(stamps).all():
                raise InvalidSamples("timestamps must be finite")
        first = self.next_index
        if n == 0:
            return first
        if self._first_time is None:
            self._first_time = (stamps[0] if stamps is not None else self.now() - (n - 1) / self.rate) - first / self.rate
        per_row = self.channels * 4 + (8 if stamps is not None else 0)
        rows = max(1, (self._max_bytes - _OVERHEAD_BYTES) // per_row)
        for begin in range(0, n, rows):
            end = min(begin + rows, n)
            chunk = pb.SampleChunk(first_sample_index=self.next_index, n_samples=end - begin, samples=data[begin:end].tobytes())
            if stamps is not None:
                chunk.per_sample.seconds.extend(stamps[begin:end].tolist())
            else:
                chunk.regular.first_seconds = self._first_time + self.next_index / self.rate
                chunk.regular.rate_hz = self.rate
            self._send(pb.IngestRequest(chunk=chunk))
            self.next_index += end - begin
        return first

    # -- markers ----------------------------------------------------------------------------

    def marker(self, code: int, label: str = "", timestamp: float | None = None) -> float:
        """Sends one marker (a stimulus onset, a response) at `timestamp` (default: now, on the
        stream's clock). Returns the timestamp sent."""
        when = self.now() if timestamp is None else float(timestamp)
        self.markers([(when, code, label)])
        return when

    def markers(self, items: Iterable[tuple[float, int] | tuple[float, int, str]]) -> None:
        """Sends several markers at once: (timestamp, code) or (timestamp, code, label) each."""
        batch: list[pb.Marker] = []
        for item in items:
            fields: tuple[float, int, str] = (*item, "")[:3]
            timestamp, code, label = fields
            if not math.isfinite(float(timestamp)):
                raise InvalidSamples(f"marker {code}: timestamp {timestamp} is not finite")
            batch.append(pb.Marker(timestamp=float(timestamp), code=int(code), label=str(label)))
        if batch:
            self._send(pb.IngestRequest(markers=pb.Markers(markers=batch)))

    # -- the end ----------------------------------------------------------------------------

    @property
    def acknowledged(self) -> Acknowledgement:
        """What the server has acknowledged so far."""
        with self._lock:
            return self._acknowledged

    def wait_acknowledged(self, timeout: float = 60.0) -> Acknowledgement:
        """Waits until the server has taken every sample pushed so far."""
        deadline = time.monotonic() + timeout
        while self.acknowledged.samples_accepted_until < self.next_index:
            self._check()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the server took {self.acknowledged.samples_accepted_until} of {self.next_index} samples within {timeout} s"
                )
            time.sleep(0.005)
        return self.acknowledged

    def _wait_opened(self, timeout: float) -> None:
        """Waits for the header's reply (the session is open and this stream's), or raises the
        server's refusal, or TimeoutError."""
        deadline = time.monotonic() + timeout
        while not self._opened.wait(0.01):
            self._check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not open session {self.session_id!r} within {timeout} s")
        self._check()

    def _cancel(self) -> None:
        self._closed = True
        self._call.cancel()

    def close(self, timeout: float = 60.0) -> Acknowledgement:
        """Ends the stream (the session ends; its predictions so far stay) and returns what the
        server took. Raises the error the server ended the stream with, if any."""
        if not self._closed:
            self._closed = True
            self._requests.put(None)
        self._reader.join(timeout)
        if self._error is not None:
            raise self._error
        return self.acknowledged

    def __enter__(self) -> SessionStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self._closed = True
            self._call.cancel()
