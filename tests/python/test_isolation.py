"""Sessions are isolated: one session's flood of markers, windows and huge chunks neither costs
another session's subscriber a prediction nor pushes its latency over budget. Raw grpcio calls
from stubs generated from proto/ (no project helper between the test and the wire), against the
real server binary."""
from __future__ import annotations

import queue
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from myelin.v1 import myelin_pb2 as pb
from myelin.v1 import myelin_pb2_grpc as rpc

QUIET = ["C3", "Cz", "C4", "Pz"]  # fixture-linear: 128 Hz streams, 1 s windows
MUSE = ["TP9", "AF7", "AF8", "TP10"]  # erp-linear-muse: 256 Hz streams, 224-sample windows


def header(session: str, channels, rate: float) -> pb.StreamHeader:
    return pb.StreamHeader(session_id=session, stream_name=session, modality=pb.MODALITY_EEG,
                           channels=[pb.Channel(label=c, type="EEG", unit="microvolts") for c in channels],
                           nominal_rate_hz=rate, clock=pb.CLOCK_SOURCE_UNIX)


def chunk(first: int, samples: np.ndarray, t0: float, rate: float) -> pb.IngestRequest:
    return pb.IngestRequest(chunk=pb.SampleChunk(
        first_sample_index=first, n_samples=samples.shape[0], samples=samples.astype("<f4").tobytes(),
        regular=pb.RegularTimestamps(first_seconds=t0 + first / rate, rate_hz=rate)))


class Stream:
    """One Ingest call fed from a queue; replies are drained (and errors kept) on a thread."""

    def __init__(self, channel, first: pb.StreamHeader, depth: int = 8):
        self.requests: queue.Queue = queue.Queue(maxsize=depth)
        self.requests.put(pb.IngestRequest(header=first))
        self.replies: list = []
        self.error = None
        self.call = rpc.IngestStub(channel).Stream(iter(self.requests.get, None))
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self):
        try:
            for reply in self.call:
                self.replies.append(reply)
        except grpc.RpcError as e:
            self.error = e

    def send(self, request):
        self.requests.put(request)

    def close(self, timeout=120.0):
        self.requests.put(None)
        self.thread.join(timeout)
        assert self.error is None, self.error
        return self.replies


def wait_for_session(decoding, session: str):
    for _ in range(500):
        if any(s.session_id == session for s in decoding.ListSessions(pb.ListSessionsRequest()).sessions):
            return
        time.sleep(0.01)
    raise TimeoutError(f"session {session} never appeared")


def read_into(stream, out: list, arrivals: list | None = None):
    def read():
        try:
            for p in stream:
                if arrivals is not None:
                    arrivals.append(time.monotonic())
                out.append(p)
        except grpc.RpcError:
            pass  # cancelled at the end of the test

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def metric(http: str, name: str) -> float:
    text = urllib.request.urlopen(f"http://{http}/metrics", timeout=10).read().decode()
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{")]
    return sum(values)


def test_a_marker_and_window_flood_in_one_session_costs_another_sessions_subscriber_nothing(server):
    rate_a, rate_b = 128.0, 256.0
    with grpc.insecure_channel(server.grpc) as channel:
        decoding = rpc.DecodingStub(channel)
        a = Stream(channel, header("quiet", QUIET, rate_a))
        b = Stream(channel, header("flood", MUSE, rate_b))
        wait_for_session(decoding, "quiet")
        wait_for_session(decoding, "flood")
        hop_a = 16
        att_a = decoding.Attach(pb.AttachRequest(
            session_id="quiet", model_id="fixture-linear", latency_budget_ms=5000,
            window=pb.WindowPolicy(sliding=pb.SlidingWindow(hop_s=hop_a / rate_a))))
        decoding.Attach(pb.AttachRequest(
            session_id="flood", model_id="erp-linear-muse", latency_budget_ms=5000,
            window=pb.WindowPolicy(event_locked=pb.EventLockedWindow(marker_codes=[1, 2]))))
        decoding.Attach(pb.AttachRequest(
            session_id="flood", model_id="erp-linear-muse", latency_budget_ms=5000,
            window=pb.WindowPolicy(sliding=pb.SlidingWindow(hop_s=1.0 / rate_b))))
        got: list = []
        subscription = decoding.Subscribe(pb.SubscribeRequest(session_id="quiet"))
        reader = read_into(subscription, got)
        # A dashboard subscribed to everything, which reads nothing until the end: it must lose
        # only its own predictions, and say how many.
        dashboard = decoding.Subscribe(pb.SubscribeRequest())
        time.sleep(0.3)  # the subscriptions are in place before A's first window completes

        # B: 20 s of samples at once (so every marker below falls on buffered samples), then
        # 200 messages of 1024 markers each, all on samples already in: 204,800 windows to cut.
        rng = np.random.default_rng(1)
        b_samples = int(20 * rate_b)
        b.send(chunk(0, rng.standard_normal((b_samples, 4)).astype(np.float32), 0.0, rate_b))
        flood_done = threading.Event()

        def flood():
            for k in range(200):
                times = rng.uniform(1.0, 18.0, 1024)
                b.send(pb.IngestRequest(markers=pb.Markers(markers=[
                    pb.Marker(timestamp=float(t), code=1 + (i % 2)) for i, t in enumerate(times)])))
            flood_done.set()

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()

        # A: 12 s in real time, chunks of 8 samples, while B floods.
        total_a, step = int(12 * rate_a), 8
        x = rng.standard_normal((total_a, 4)).astype(np.float32)
        started = time.monotonic()
        for begin in range(0, total_a, step):
            due = started + (begin + step) / rate_a
            time.sleep(max(0.0, due - time.monotonic()))
            a.send(chunk(begin, x[begin:begin + step], 100.0, rate_a))
        assert flood_done.wait(300), "B's markers were not all taken"
        a_replies = a.close()
        b_replies = b.close(timeout=300)
        expected = (total_a - att_a.window_stream_samples) // hop_a + 1
        deadline = time.monotonic() + 30
        while len(got) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        subscription.cancel()
        reader.join(5)
        b_predictions = sum(a.predictions for s in decoding.ListSessions(pb.ListSessionsRequest()).sessions
                            if s.session_id == "flood" for a in s.attachments)
        seen: list = []
        dashboard_reader = read_into(dashboard, seen)
        quiet_since, count = time.monotonic(), 0
        while time.monotonic() - quiet_since < 2.0:
            time.sleep(0.1)
            if len(seen) != count:
                quiet_since, count = time.monotonic(), len(seen)
        dashboard.cancel()
        dashboard_reader.join(5)
        dropped_metric = metric(server.http, "myelin_subscriber_dropped_total")

    assert a_replies[-1].samples_accepted_until == total_a
    assert b_replies[-1].markers_accepted == 200 * 1024
    assert b_predictions > 100_000, f"B's flood was smaller than meant: {b_predictions} windows"
    assert len(got) == expected, f"A's subscriber got {len(got)} of A's {expected} predictions"
    assert all(p.session_id == "quiet" for p in got)
    assert [p.sequence for p in got] == list(range(expected)), "A's sequence numbers have gaps"
    assert all(p.subscriber_dropped_total == 0 for p in got)
    statuses = {pb.PredictionStatus.Name(p.status) for p in got}
    assert statuses == {"PREDICTION_STATUS_OK"}, statuses
    # The dashboard: both sessions' predictions, its oldest lost and counted as its own.
    dashboard_lost = seen[-1].subscriber_dropped_total
    assert {p.session_id for p in seen} <= {"quiet", "flood"}
    assert dashboard_lost > 0, "the dashboard was meant to fall behind"
    assert len(seen) + dashboard_lost == expected + b_predictions, "received + reported lost = all published"
    assert dropped_metric == dashboard_lost, f"myelin_subscriber_dropped_total {dropped_metric}: not all the dashboard's own"


@pytest.mark.parametrize("heavy_sessions", [1, 2])
def test_huge_chunks_into_sessions_with_50_attachments_leave_a_real_time_session_within_budget(server, heavy_sessions):
    """One heavy session is what the issue measures; two (as many as this machine has cores, and
    as many as the server has async I/O threads here) is where heavy work on those threads would
    stall every other stream."""
    rate = 128.0
    heavy_frames = 262_144
    with grpc.insecure_channel(server.grpc) as channel:
        decoding = rpc.DecodingStub(channel)
        names = [f"heavy{k}" for k in range(heavy_sessions)]
        heavies = [Stream(channel, header(name, ["X"], rate), depth=2) for name in names]
        light = Stream(channel, header("light", QUIET, rate))
        for name in names + ["light"]:
            wait_for_session(decoding, name)
        # 50 attachments per heavy session, each filtering 4 model channels (all fed from the one
        # stream channel) over every sample.
        for name in names:
            for _ in range(50):
                decoding.Attach(pb.AttachRequest(
                    session_id=name, model_id="fixture-linear", latency_budget_ms=1000,
                    channel_map=[pb.ChannelMapping(model_channel=c, stream_channel="X") for c in QUIET],
                    window=pb.WindowPolicy(event_locked=pb.EventLockedWindow(marker_codes=[99]))))
        hop = 8
        decoding.Attach(pb.AttachRequest(
            session_id="light", model_id="fixture-linear", latency_budget_ms=20,
            window=pb.WindowPolicy(sliding=pb.SlidingWindow(hop_s=hop / rate))))
        got: list = []
        arrivals: list = []
        subscription = decoding.Subscribe(pb.SubscribeRequest(session_id="light"))
        reader = read_into(subscription, got, arrivals)
        time.sleep(0.3)

        rng = np.random.default_rng(2)
        stop = threading.Event()
        block = rng.standard_normal((heavy_frames, 1)).astype(np.float32)

        def pound(stream):
            first = 0
            while not stop.is_set():
                stream.send(chunk(first, block, 0.0, rate))
                first += heavy_frames

        pounders = [threading.Thread(target=pound, args=(h,), daemon=True) for h in heavies]
        for t in pounders:
            t.start()
        total, step = int(12 * rate), 8
        x = rng.standard_normal((total, 4)).astype(np.float32)
        sent = []
        started = time.monotonic()
        for begin in range(0, total, step):
            due = started + (begin + step) / rate
            time.sleep(max(0.0, due - time.monotonic()))
            sent.append(time.monotonic())
            light.send(chunk(begin, x[begin:begin + step], 0.0, rate))
        stop.set()
        light.close()
        for t in pounders:
            t.join(60)
        heavy_accepted = [h.close(timeout=300)[-1].samples_accepted_until for h in heavies]
        time.sleep(0.5)
        subscription.cancel()
        reader.join(5)

    assert all(n >= 2 * heavy_frames for n in heavy_accepted), f"the heavy sessions took only {heavy_accepted} samples"
    latencies_ms = np.array([p.timing.server_latency_us / 1000.0 for p in got])
    expected = (total - 128) // hop + 1
    assert len(got) == expected
    p99 = float(np.percentile(latencies_ms, 99))
    # The client's own view too: the server's clock starts when a handler reads the chunk, so an
    # I/O thread stalled before that read would not show in server latency, only here.
    e2e_ms = np.array([(t - sent[p.window.last_sample_index // step]) * 1000.0 for p, t in zip(got, arrivals)])
    e2e_p99 = float(np.percentile(e2e_ms, 99))
    print(f"\nlight session beside {heavy_sessions} heavy: {len(got)} predictions, server latency p50 "
          f"{np.median(latencies_ms):.2f} ms, p99 {p99:.2f} ms, max {latencies_ms.max():.2f} ms (budget 20 ms); "
          f"client send -> receipt p50 {np.median(e2e_ms):.2f} ms, p99 {e2e_p99:.2f} ms, max {e2e_ms.max():.2f} ms; "
          f"the heavy sessions took {[n // heavy_frames for n in heavy_accepted]} chunks of {heavy_frames} frames "
          f"into 50 attachments each")
    assert p99 <= 20.0, f"light session p99 {p99:.2f} ms over its 20 ms budget"
    # Not a speed claim (the benchmarks make those): a stream starved behind the heavy ones, e.g.
    # by HTTP/2 flow control on a shared connection, waits seconds.
    assert e2e_p99 <= 500.0, f"light session starved: client send -> receipt p99 {e2e_p99:.0f} ms"
