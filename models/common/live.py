"""Talking to a running myelin server from Python: stubs generated from proto/ with
grpcio-tools, a server process on free loopback ports, and an Ingest call fed from a queue.
Used by the real-peer tests (tests/python) and by evaluations that must go through the live
server rather than an offline copy of the pipeline."""
from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_stubs(out_dir: Path):
    """Generates myelin.v1 Python stubs into out_dir (once) and returns (pb, rpc) modules."""
    from grpc_tools import protoc

    import tempfile

    # Generated beside out_dir and moved in file by file (os.replace is atomic), because the
    # suite's real-time test runs in a second pytest process that may be importing these.
    (out_dir / "myelin" / "v1").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        rc = protoc.main(["grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"--python_out={scratch}",
                          f"--grpc_python_out={scratch}", str(ROOT / "proto/myelin/v1/myelin.proto")])
        if rc != 0:
            raise RuntimeError("grpc_tools.protoc failed")
        for generated in (Path(scratch) / "myelin" / "v1").iterdir():
            os.replace(generated, out_dir / "myelin" / "v1" / generated.name)
    # `myelin` stays a namespace portion (no __init__.py): an installed myelin-client package
    # (a regular package, which extends its path to portions like this one) keeps its import
    # name, and `myelin.v1` is found here either way.
    (out_dir / "myelin" / "__init__.py").unlink(missing_ok=True)
    (out_dir / "myelin" / "v1" / "__init__.py").touch()
    if str(out_dir) not in sys.path:
        sys.path.insert(0, str(out_dir))
    from myelin.v1 import myelin_pb2, myelin_pb2_grpc
    return myelin_pb2, myelin_pb2_grpc


def channel(address: str, token: str | None = None, ca: str | None = None):
    """A gRPC channel to a myelin server: TLS when `ca` (a PEM file; default $MYELIN_CA) is given,
    and `token` (default $MYELIN_TOKEN) sent as `authorization: Bearer` on every call."""
    import grpc

    token = token if token is not None else os.environ.get("MYELIN_TOKEN") or None
    ca = ca if ca is not None else os.environ.get("MYELIN_CA") or None
    if ca:
        credentials = grpc.ssl_channel_credentials(Path(ca).read_bytes())
        if token:
            credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
        return grpc.secure_channel(address, credentials)
    plain = grpc.insecure_channel(address)
    if not token:
        return plain
    # grpcio sends call credentials only over TLS; on a plaintext loopback port the header is
    # added by an interceptor instead.
    return grpc.intercept_channel(plain, _bearer_interceptor_class()(token))


def _bearer_interceptor_class():
    import collections

    import grpc

    class Details(collections.namedtuple("Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
                  grpc.ClientCallDetails):
        pass

    class Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                 grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
        def __init__(self, token: str):
            self.header = ("authorization", f"Bearer {token}")

        def _details(self, details):
            metadata = list(details.metadata or []) + [self.header]
            return Details(details.method, details.timeout, metadata, details.credentials, details.wait_for_ready,
                           details.compression)

        def intercept_unary_unary(self, continuation, details, request):
            return continuation(self._details(details), request)

        def intercept_unary_stream(self, continuation, details, request):
            return continuation(self._details(details), request)

        def intercept_stream_unary(self, continuation, details, requests):
            return continuation(self._details(details), requests)

        def intercept_stream_stream(self, continuation, details, requests):
            return continuation(self._details(details), requests)

    return Bearer


class Server:
    """`myelin serve` on ports picked by the OS; stop() sends SIGTERM."""

    def __init__(self, binary: str, env: dict[str, str] | None = None, preexec_fn=None, args=(), stderr=None):
        """`args`: more arguments to `myelin serve` (e.g. ["--config", path]); `stderr`: a file
        the server's log goes to (default: inherited)."""
        full_env = dict(os.environ, MYELIN_SERVER__GRPC_ADDR="127.0.0.1:0", MYELIN_SERVER__HTTP_ADDR="127.0.0.1:0",
                        RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        full_env.update(env or {})
        self.proc = subprocess.Popen([binary, "serve", *args], cwd=ROOT, env=full_env, stdout=subprocess.PIPE, text=True,
                                     preexec_fn=preexec_fn, stderr=stderr)
        line = ""
        for line in self.proc.stdout:
            if line.startswith("myelin ready "):
                break
        else:
            raise RuntimeError(f"myelin exited before it was ready (code {self.proc.wait()})")
        fields = dict(kv.split("=", 1) for kv in line.split()[2:])
        self.grpc, self.http = fields["grpc"], fields["http"]
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


class Ingest:
    """A bidirectional Ingest call fed from a queue; replies are drained on a thread."""

    def __init__(self, pb, rpc, channel, header):
        import grpc

        self._grpc = grpc
        self.pb = pb
        self.requests: queue.Queue = queue.Queue()
        self.requests.put(pb.IngestRequest(header=header))
        self.replies = []
        self.error = None
        self.call = rpc.IngestStub(channel).Stream(iter(self.requests.get, None))
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()
        self.next_index = 0

    def _drain(self):
        try:
            for reply in self.call:
                self.replies.append(reply)
        except self._grpc.RpcError as e:
            self.error = e

    def chunk(self, samples, timestamps):
        n = samples.shape[0]
        self.requests.put(self.pb.IngestRequest(chunk=self.pb.SampleChunk(
            first_sample_index=self.next_index,
            per_sample=self.pb.PerSampleTimestamps(seconds=list(map(float, timestamps))),
            n_samples=n,
            samples=samples.astype("<f4").tobytes(),
        )))
        self.next_index += n

    def markers(self, items):
        self.requests.put(self.pb.IngestRequest(markers=self.pb.Markers(
            markers=[self.pb.Marker(timestamp=float(t), code=int(c)) for t, c in items])))

    def wait_acknowledged(self, timeout=60.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.error is not None:
                raise self.error
            if self.replies and self.replies[-1].samples_accepted_until >= self.next_index:
                return
            time.sleep(0.01)
        raise TimeoutError("samples not acknowledged")

    def close(self):
        self.requests.put(None)
        self.thread.join(timeout=30)
        if self.error is not None:
            raise self.error
        return self.replies


def header(pb, session: str, channels, rate: float):
    return pb.StreamHeader(session_id=session, stream_name="python", modality=pb.MODALITY_EEG,
                           channels=[pb.Channel(label=c, type="EEG", unit="microvolts") for c in channels],
                           nominal_rate_hz=rate, clock=pb.CLOCK_SOURCE_UNIX)


def attach(decoding, request):
    """Attach, retrying while the server has not yet registered the session's header."""
    import grpc

    for _ in range(200):
        try:
            return decoding.Attach(request)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND or not e.details().startswith("session"):
                raise
            time.sleep(0.02)
    raise TimeoutError("session never appeared")


def stream_recording(ingest: Ingest, samples, timestamps, codes, chunk: int = 64):
    """Sends a recording as fast as the server takes it, each chunk's markers right after it."""
    import numpy as np

    for begin in range(0, len(samples), chunk):
        end = min(begin + chunk, len(samples))
        ingest.chunk(samples[begin:end], timestamps[begin:end])
        marks = [(timestamps[i], codes[i]) for i in np.flatnonzero(codes[begin:end]) + begin]
        if marks:
            ingest.markers(marks)


def subscribe_into(decoding, pb, out: list, session_id: str = "", attachment_id: str = ""):
    """Starts a Subscribe stream whose predictions are appended to `out` on a thread; returns
    the call (cancel() ends it)."""
    import grpc

    stream = decoding.Subscribe(pb.SubscribeRequest(session_id=session_id, attachment_id=attachment_id))

    def read():
        try:
            for p in stream:
                out.append(p)
        except grpc.RpcError:
            pass  # cancelled

    threading.Thread(target=read, daemon=True).start()
    return stream


def golden_stream():
    """The fixture stream of models/fixtures/golden-linear.json: (golden dict, samples [n, C],
    timestamps [n], marker codes [n])."""
    import json

    import numpy as np

    golden = json.loads((ROOT / "models/fixtures/golden-linear.json").read_text())
    x = np.asarray(golden["samples"], dtype=np.float32).reshape(-1, len(golden["channels"]))
    ts = golden["timestamps_first"] + np.arange(len(x)) / golden["rate_hz"]
    codes = np.zeros(len(x), dtype=int)
    for m in golden["markers"]:
        codes[m["index"]] = m["code"]
    return golden, x, ts, codes
