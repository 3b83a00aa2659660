"""Hostile and absurd input, from a client that uses nothing of the project's but stubs generated
from proto/: every case gets its status before anything is allocated, the server's resident
memory stays bounded (read from /proc), and a healthy session keeps receiving predictions."""
from __future__ import annotations

import math
import queue
import threading
import time

import grpc
import numpy as np
import pytest
from myelin.v1 import myelin_pb2 as pb
from myelin.v1 import myelin_pb2_grpc as rpc

from common import live
from conftest import QUIET, Healthy, drain, header, rss_mib

MiB = 1 << 20


def regular(first: int, n: int, channels: int, rate: float, t0: float = 0.0) -> pb.IngestRequest:
    return pb.IngestRequest(chunk=pb.SampleChunk(
        first_sample_index=first, n_samples=n, samples=np.zeros((n, channels), "<f4").tobytes(),
        regular=pb.RegularTimestamps(first_seconds=t0, rate_hz=rate)))


def ingest(channel, requests, timeout=30.0):
    """Sends `requests` on one Ingest call; returns (replies, status code, details)."""
    replies = []
    try:
        for reply in rpc.IngestStub(channel).Stream(iter(requests), timeout=timeout):
            replies.append(reply)
        return replies, grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return replies, e.code(), e.details()


def held_open(channel, session: str) -> queue.Queue:
    """An Ingest call for `session` that stays open (put None to end it); its replies drained."""
    requests: queue.Queue = queue.Queue()
    requests.put(header(session))
    drain(rpc.IngestStub(channel).Stream(iter(requests.get, None)))
    return requests


@pytest.fixture
def hostile(myelin_bin):
    server = live.Server(myelin_bin, env={"MYELIN_LIMITS__SESSIONS": "48", "MYELIN_LIMITS__SUBSCRIBERS": "8",
                                          "MYELIN_LIMITS__ATTACHMENTS_PER_SESSION": "4"})
    channel = grpc.insecure_channel(server.grpc, options=[("grpc.max_send_message_length", 8 * MiB)])
    healthy = Healthy(channel)
    baseline = rss_mib(server)
    yield server, channel, healthy
    # Whatever the case sent, the server's resident memory stays within a stated bound.
    grown = rss_mib(server) - baseline
    healthy.stopped.set()
    channel.close()
    server.stop()
    assert grown < 64, f"resident memory grew by {grown:.0f} MiB"


def test_a_100_byte_request_cannot_commit_gigabytes_even_40_times_in_parallel(hostile):
    server, channel, healthy = hostile
    baseline = rss_mib(server)
    # The reported case: 1 channel at 7 MHz, one chunk at sample 209,999,999.
    _, code, details = ingest(channel, [header("7mhz", ["X"], 7e6), regular(209_999_999, 1, 1, 7e6)])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "limits.rate_hz" in details, details
    # The fastest stream the limits allow, with the same jump: a gap, kept as a span.
    replies, code, _ = ingest(channel, [header("fast", ["X"], 100_000.0), regular(209_999_999, 1, 1, 100_000.0, 2099.99999)])
    assert code == grpc.StatusCode.OK and replies[-1].samples_accepted_until == 210_000_000
    assert replies[-1].warnings[0].kind == pb.INGEST_WARNING_KIND_GAP
    # Forty of them at once.
    results = [None] * 40

    def one(k):
        results[k] = ingest(channel, [header(f"fast{k}", ["X"], 100_000.0), regular(209_999_999, 1, 1, 100_000.0, 2099.99999)])

    threads = [threading.Thread(target=one, args=(k,)) for k in range(40)]
    for t in threads:
        t.start()
    peak = baseline
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mib(server))
        time.sleep(0.05)
    assert all(r[1] == grpc.StatusCode.OK for r in results), [r[1:] for r in results]
    peak = max(peak, rss_mib(server))
    healthy.assert_decoding()
    print(f"\nresident memory: {baseline:.0f} MiB before, peak {peak:.0f} MiB with 40 streams jumping to sample 209,999,999")
    assert peak - baseline < 64, f"resident memory grew by {peak - baseline:.0f} MiB"


@pytest.mark.parametrize("case, requests, code, says", [
    ("100,000 channels", [header("wide", [f"E{i}" for i in range(100_000)])],
     grpc.StatusCode.INVALID_ARGUMENT, "limits.channels"),
    ("rate 5e-324", [header("tiny-rate"), regular(0, 8, 4, 5e-324)], grpc.StatusCode.INVALID_ARGUMENT, "nominal"),
    ("index 2^63 + 10", [header("huge-index"), regular(2**63 + 10, 8, 4, 128.0)], grpc.StatusCode.INVALID_ARGUMENT, "2^53"),
    ("1 MB marker label", [header("long-label"), pb.IngestRequest(markers=pb.Markers(markers=[
        pb.Marker(timestamp=1.0, code=1, label="x" * MiB)]))], grpc.StatusCode.INVALID_ARGUMENT, "limits.label_bytes"),
    ("5 MB marker label", [header("huge-label"), pb.IngestRequest(markers=pb.Markers(markers=[
        pb.Marker(timestamp=1.0, code=1, label="x" * (5 * MiB))]))], grpc.StatusCode.RESOURCE_EXHAUSTED, "max_message_bytes"),
    ("100,000 markers in one message", [header("many-markers"), pb.IngestRequest(markers=pb.Markers(markers=[
        pb.Marker(timestamp=float(i), code=1) for i in range(100_000)]))],
     grpc.StatusCode.INVALID_ARGUMENT, "limits.markers_per_message"),
    ("a 4 MB channel label", [header("long-channel", ["x" * (3 * MiB)])], grpc.StatusCode.INVALID_ARGUMENT, "limits.label_bytes"),
    ("a marker at NaN", [header("nan-marker"), pb.IngestRequest(markers=pb.Markers(markers=[
        pb.Marker(timestamp=math.nan, code=1)]))], grpc.StatusCode.INVALID_ARGUMENT, "non-finite"),
])
def test_absurd_streams_are_refused_with_the_right_status(hostile, case, requests, code, says):
    server, channel, healthy = hostile
    replies, got, details = ingest(channel, requests)
    assert got == code and says in details, f"{case}: {got} {details!r}"
    assert len(details) < 1000, f"{case}: the error echoes the input ({len(details)} bytes)"
    healthy.assert_decoding()


def test_10000_markers_ahead_of_their_samples_get_one_small_warning(hostile):
    server, channel, healthy = hostile
    markers = pb.IngestRequest(markers=pb.Markers(markers=[pb.Marker(timestamp=1e6 + i, code=1) for i in range(10_000)]))
    replies, code, _ = ingest(channel, [header("future"), regular(0, 8, 4, 128.0), markers])
    assert code == grpc.StatusCode.OK
    reply = replies[-1]
    assert reply.markers_accepted == 10_000
    assert len(reply.warnings) == 1 and reply.warnings[0].kind == pb.INGEST_WARNING_KIND_MARKER_OUTSIDE_BUFFER
    assert reply.warnings[0].count == 10_000 - 1024, "markers beyond sessions.max_pending_markers are dropped, counted"
    assert reply.ByteSize() < 1000
    healthy.assert_decoding()


def test_calibrate_numbers_out_of_range_are_refused_and_leave_the_attachment_free(hostile):
    server, channel, healthy = hostile
    decoding = rpc.DecodingStub(channel)
    requests = held_open(channel, "cal")
    attached = live.attach(decoding, pb.AttachRequest(
        session_id="cal", model_id="fixture-linear",
        window=pb.WindowPolicy(event_locked=pb.EventLockedWindow(marker_codes=[1, 2]))))
    base = dict(attachment_id=attached.attachment_id, target_codes=[2], non_target_codes=[1])
    for bad in [dict(max_seconds=math.inf), dict(max_seconds=1e19), dict(max_seconds=math.nan, max_epochs=10),
                dict(max_epochs=10, folds=4294967295), dict(max_epochs=10, folds=1),
                dict(max_epochs=4294967295), dict(max_epochs=10, filters_per_class=10_000),
                dict(max_epochs=10, model_id="erp-linear-muse")]:
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(decoding.Calibrate(pb.CalibrateRequest(**base, **bad))))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad, refused.value.details())
    # The attachment is not left "already collecting": a good calibration starts.
    progress = decoding.Calibrate(pb.CalibrateRequest(**base, max_seconds=0.5))
    with pytest.raises(grpc.RpcError) as ended:
        for _ in progress:
            pass
    assert ended.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "epochs" in ended.value.details()
    healthy.assert_decoding()
    requests.put(None)


def test_windows_connect_lsl_and_attach_counts_out_of_range_are_refused(hostile):
    server, channel, healthy = hostile
    decoding = rpc.DecodingStub(channel)
    requests = held_open(channel, "windows")
    live.attach(decoding, pb.AttachRequest(session_id="windows", model_id="fixture-linear",
                                           window=pb.WindowPolicy(event_locked=pb.EventLockedWindow(marker_codes=[1]))))
    for window in [pb.WindowPolicy(event_locked=pb.EventLockedWindow(marker_codes=[1], tmin_s=-1e300, tmax_s=1e300)),
                   pb.WindowPolicy(event_locked=pb.EventLockedWindow(marker_codes=[1], tmin_s=math.nan, tmax_s=1.0)),
                   pb.WindowPolicy(sliding=pb.SlidingWindow(hop_s=math.inf)),
                   pb.WindowPolicy(sliding=pb.SlidingWindow(hop_s=0.1, length_s=-math.inf))]:
        with pytest.raises(grpc.RpcError) as refused:
            decoding.Attach(pb.AttachRequest(session_id="windows", model_id="fixture-linear", window=window))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (window, refused.value.details())
    for timeout in [math.inf, 1e9, -1.0]:
        with pytest.raises(grpc.RpcError) as refused:
            decoding.ConnectLsl(pb.ConnectLslRequest(session_id="x", data_name="y", timeout_s=timeout))
        assert refused.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAVAILABLE), refused.value.details()
    # limits.attachments_per_session = 4 here: one attached, three more fit, the fifth does not.
    for _ in range(3):
        decoding.Attach(pb.AttachRequest(session_id="windows", model_id="fixture-linear",
                                         window=pb.WindowPolicy(event_locked=pb.EventLockedWindow(marker_codes=[1]))))
    with pytest.raises(grpc.RpcError) as full:
        decoding.Attach(pb.AttachRequest(session_id="windows", model_id="fixture-linear",
                                         window=pb.WindowPolicy(event_locked=pb.EventLockedWindow(marker_codes=[1]))))
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limits.attachments_per_session" in full.value.details()
    # limits.subscribers = 8 here, the healthy session holds one.
    subscriptions = [decoding.Subscribe(pb.SubscribeRequest()) for _ in range(7)]
    time.sleep(0.5)
    with pytest.raises(grpc.RpcError) as full:
        next(iter(decoding.Subscribe(pb.SubscribeRequest())))
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limits.subscribers" in full.value.details()
    for s in subscriptions:
        s.cancel()
    healthy.assert_decoding()
    requests.put(None)


HUGE = "x" * 4_000_000  # a 4 MB id, just under server.max_message_bytes


@pytest.mark.parametrize("call", [
    "Detach", "Subscribe by attachment", "Calibrate", "Attach a session", "Attach a model", "Attach a version", "ConnectLsl",
])
def test_a_4_mb_id_is_never_echoed_back_whole(hostile, call):
    """Every refusal that names a client-given id cuts it to 64 characters."""
    server, channel, healthy = hostile
    decoding = rpc.DecodingStub(channel)
    calls = {
        "Detach": lambda: decoding.Detach(pb.DetachRequest(attachment_id=HUGE)),
        "Subscribe by attachment": lambda: next(iter(decoding.Subscribe(pb.SubscribeRequest(attachment_id=HUGE)))),
        "Calibrate": lambda: next(iter(decoding.Calibrate(pb.CalibrateRequest(
            attachment_id=HUGE, target_codes=[2], non_target_codes=[1], max_epochs=10)))),
        "Attach a session": lambda: decoding.Attach(pb.AttachRequest(session_id=HUGE, model_id="fixture-linear")),
        "Attach a model": lambda: decoding.Attach(pb.AttachRequest(session_id="healthy", model_id=HUGE)),
        "Attach a version": lambda: decoding.Attach(pb.AttachRequest(session_id="healthy", model_id="fixture-linear", model_version=HUGE)),
        "ConnectLsl": lambda: decoding.ConnectLsl(pb.ConnectLslRequest(session_id="lsl-huge", data_predicate=HUGE, timeout_s=0.2)),
    }
    with pytest.raises(grpc.RpcError) as refused:
        calls[call]()
    details = refused.value.details()
    assert refused.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAVAILABLE), details
    assert len(details) < 300 and "(4000000 bytes)" in details, details[:300]
    healthy.assert_decoding()


def open_all(channel, headers):
    """Opens one Ingest call per header at once, holds them all open, then ends them; returns how
    each ended (OK, or the status code and details)."""
    calls = []
    for h in headers:
        q: queue.Queue = queue.Queue()
        q.put(h)
        calls.append((q, rpc.IngestStub(channel).Stream(iter(q.get, None))))
    time.sleep(1.0)
    outcomes = []
    for q, call in calls:
        q.put(None)
        try:
            list(call)
            outcomes.append(grpc.StatusCode.OK)
        except grpc.RpcError as e:
            outcomes.append((e.code(), e.details()))
    return outcomes


def test_sessions_past_the_limit_and_the_buffer_budget_are_refused(myelin_bin):
    server = live.Server(myelin_bin, env={"MYELIN_LIMITS__SESSIONS": "10",
                                          "MYELIN_LIMITS__SERVER_BUFFER_BYTES": str(64 * MiB),
                                          "MYELIN_LIMITS__SESSION_BUFFER_BYTES": str(40 * MiB)})
    try:
        with grpc.insecure_channel(server.grpc) as channel:
            healthy = Healthy(channel)
            # 64 channels at 10 kHz for 30 s: 82 MB of rings, over one session's 40 MiB.
            _, code, details = ingest(channel, [header("big", [f"E{i}" for i in range(64)], 10_000.0)])
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "limits.session_buffer_bytes" in details, details
            # 16 channels at 10 kHz: 24 MB each; three do not fit the server's 64 MiB at once.
            outcomes = open_all(channel, [header(f"mid{k}", [f"E{i}" for i in range(16)], 10_000.0) for k in range(3)])
            refused = [o for o in outcomes if o != grpc.StatusCode.OK]
            assert len(refused) == 1, outcomes
            assert refused[0][0] == grpc.StatusCode.RESOURCE_EXHAUSTED and "limits.server_buffer_bytes" in refused[0][1], outcomes
            healthy.assert_decoding()
            # limits.sessions = 10: with the healthy one, nine more live at once, not ten.
            outcomes = open_all(channel, [header(f"s{k}") for k in range(10)])
            refused = [o for o in outcomes if o != grpc.StatusCode.OK]
            assert len(refused) == 1, outcomes
            assert refused[0][0] == grpc.StatusCode.RESOURCE_EXHAUSTED and "limits.sessions" in refused[0][1], outcomes
            healthy.assert_decoding()
            healthy.stopped.set()
    finally:
        server.stop()
