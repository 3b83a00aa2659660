"""SIGTERM with everything going on: a rig streaming with recording on, a subscriber reading, a
calibration collecting and a ConnectLsl waiting. The server exits within its grace period, every
call ends with UNAVAILABLE, and pyxdf reads the recording with its footers. Raw grpcio calls from
stubs generated from proto/, against the real server binary."""
from __future__ import annotations

import queue
import signal
import threading
import time

import grpc
import numpy as np
import pyxdf
from myelin.v1 import myelin_pb2 as pb
from myelin.v1 import myelin_pb2_grpc as rpc

from common import live

CHANNELS = ["C3", "Cz", "C4", "Pz"]
RATE = 128.0
GRACE_S = 8.0


def ends_with(call_result: dict, key: str, call):
    """Runs `call` (which blocks until its stream ends) and stores how it ended under `key`."""
    def run():
        try:
            for _ in call():
                pass
            call_result[key] = grpc.StatusCode.OK
        except grpc.RpcError as e:
            call_result[key] = (e.code(), e.details())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_sigterm_ends_every_call_with_unavailable_and_leaves_a_whole_recording(myelin_bin, tmp_path):
    recordings = tmp_path / "recordings"
    server = live.Server(myelin_bin, env={
        "MYELIN_RECORDING__ENABLED": "true",
        "MYELIN_RECORDING__DIR": str(recordings),
        "MYELIN_MODELS__CALIBRATIONS_DIR": str(tmp_path / "calibrations"),
        "MYELIN_SERVER__SHUTDOWN_GRACE_S": str(GRACE_S),
    })
    ended: dict = {}
    channel = grpc.insecure_channel(server.grpc)
    decoding = rpc.DecodingStub(channel)
    requests: queue.Queue = queue.Queue()
    requests.put(pb.IngestRequest(header=pb.StreamHeader(
        session_id="rig", modality=pb.MODALITY_EEG, nominal_rate_hz=RATE, clock=pb.CLOCK_SOURCE_UNIX,
        channels=[pb.Channel(label=c, type="EEG", unit="microvolts") for c in CHANNELS])))
    ingest = rpc.IngestStub(channel).Stream(iter(requests.get, None))
    threads = [ends_with(ended, "ingest", lambda: ingest)]

    def rig():
        rng = np.random.default_rng(0)
        started, sent = time.monotonic(), 0
        while sent < 60 * RATE:
            time.sleep(max(0.0, started + (sent + 8) / RATE - time.monotonic()))
            x = rng.standard_normal((8, 4)).astype("<f4")
            requests.put(pb.IngestRequest(chunk=pb.SampleChunk(
                first_sample_index=sent, n_samples=8, samples=x.tobytes(),
                regular=pb.RegularTimestamps(first_seconds=sent / RATE, rate_hz=RATE))))
            if sent % 64 == 0:
                requests.put(pb.IngestRequest(markers=pb.Markers(markers=[
                    pb.Marker(timestamp=sent / RATE, code=1 + (sent // 64) % 2)])))
            sent += 8

    threading.Thread(target=rig, daemon=True).start()
    event_locked = live.attach(decoding, pb.AttachRequest(
        session_id="rig", model_id="fixture-linear", latency_budget_ms=1000,
        window=pb.WindowPolicy(event_locked=pb.EventLockedWindow(marker_codes=[1, 2]))))
    decoding.Attach(pb.AttachRequest(
        session_id="rig", model_id="fixture-linear", latency_budget_ms=1000,
        window=pb.WindowPolicy(sliding=pb.SlidingWindow(hop_s=0.25))))
    predictions: list = []
    subscription = decoding.Subscribe(pb.SubscribeRequest(session_id="rig"))

    def read():
        try:
            for p in subscription:
                predictions.append(p)
            ended["subscribe"] = grpc.StatusCode.OK
        except grpc.RpcError as e:
            ended["subscribe"] = (e.code(), e.details())

    threads.append(threading.Thread(target=read, daemon=True))
    threads[-1].start()
    threads.append(ends_with(ended, "calibrate", lambda: decoding.Calibrate(pb.CalibrateRequest(
        attachment_id=event_locked.attachment_id, target_codes=[2], non_target_codes=[1], max_epochs=100_000))))
    threads.append(ends_with(ended, "connect_lsl", lambda: [decoding.ConnectLsl(pb.ConnectLslRequest(
        session_id="never", data_name="no-such-stream", timeout_s=60.0))]))
    time.sleep(3.0)
    assert len(predictions) > 3, "the rig's predictions flow before the signal"
    assert not ended, f"calls ended before the signal: {ended}"

    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(timeout=GRACE_S + 5)
    took = time.monotonic() - signalled
    for t in threads:
        t.join(5)
    channel.close()

    print(f"\nexited {took:.2f} s after SIGTERM (grace {GRACE_S} s), code {code}; {len(predictions)} predictions read")
    assert code == 0, f"exit code {code}"
    assert took < GRACE_S, f"took {took:.1f} s to exit (grace {GRACE_S} s)"
    for call in ("ingest", "subscribe", "calibrate", "connect_lsl"):
        assert ended.get(call) == (grpc.StatusCode.UNAVAILABLE, "shutting down"), f"{call} ended with {ended.get(call)}"
    files = list(recordings.glob("rig-*.xdf"))
    assert len(files) == 1, files
    streams, _ = pyxdf.load_xdf(str(files[0]))
    data = next(s for s in streams if s["info"]["name"][0] == "rig")
    assert len(data["time_stamps"]) > 2 * RATE, "the samples streamed before the signal are recorded"
    assert int(data["footer"]["info"]["sample_count"][0]) == len(data["time_stamps"]), "the data stream has its footer"
    recorded = [s for s in streams if s["info"]["type"][0] == "Predictions"]
    assert sum(len(s["time_series"]) for s in recorded) >= len(predictions), "every prediction a subscriber saw is recorded"


def test_a_header_without_stream_name_and_with_odd_labels_records_a_file_pyxdf_reads(myelin_bin, tmp_path):
    """stream_name is optional in a header; XDF needs a name (pyxdf fails on an empty one). Labels
    and units may hold characters XML does not allow or must escape."""
    recordings = tmp_path / "recordings"
    server = live.Server(myelin_bin, env={"MYELIN_RECORDING__ENABLED": "true", "MYELIN_RECORDING__DIR": str(recordings)})
    labels = ["C3", "Cz\x01", "C4 <&>", "Pz\"'"]
    try:
        with grpc.insecure_channel(server.grpc) as channel:
            x = np.arange(256 * 4, dtype="<f4").reshape(256, 4)
            requests = [
                pb.IngestRequest(header=pb.StreamHeader(
                    session_id="unnamed", modality=pb.MODALITY_EEG, nominal_rate_hz=RATE, clock=pb.CLOCK_SOURCE_UNIX,
                    channels=[pb.Channel(label=c, type="EEG\x02", unit="µV <&>") for c in labels])),
                pb.IngestRequest(chunk=pb.SampleChunk(first_sample_index=0, n_samples=256, samples=x.tobytes(),
                                                      regular=pb.RegularTimestamps(first_seconds=10.0, rate_hz=RATE))),
            ]
            replies = list(rpc.IngestStub(channel).Stream(iter(requests)))
            assert replies[-1].samples_accepted_until == 256
    finally:
        server.stop()
    files = list(recordings.glob("unnamed-*.xdf"))
    assert len(files) == 1, files
    streams, _ = pyxdf.load_xdf(str(files[0]))
    data = next(s for s in streams if s["info"]["type"][0] == "EEG")
    assert data["info"]["name"][0] == "unnamed"
    got = [c["label"][0] for c in data["info"]["desc"][0]["channels"][0]["channel"]]
    assert got == ["C3", "Cz\ufffd", "C4 <&>", "Pz\"'"]
    np.testing.assert_array_equal(data["time_series"], x)


CLIENT = """
import sys, time
sys.path.insert(0, sys.argv[2])
import grpc
import numpy as np
from myelin.v1 import myelin_pb2 as pb, myelin_pb2_grpc as rpc

def requests():
    yield pb.IngestRequest(header=pb.StreamHeader(session_id="rig", modality=pb.MODALITY_EEG, nominal_rate_hz=128.0,
        channels=[pb.Channel(label=c) for c in ["C3", "Cz", "C4", "Pz"]]))
    for k in range(10_000):
        yield pb.IngestRequest(chunk=pb.SampleChunk(first_sample_index=8 * k, n_samples=8,
            samples=np.zeros((8, 4), "<f4").tobytes(), regular=pb.RegularTimestamps(first_seconds=k / 16.0, rate_hz=128.0)))
        time.sleep(1 / 16)

for reply in rpc.IngestStub(grpc.insecure_channel(sys.argv[1])).Stream(requests()):
    print(reply.samples_accepted_until, flush=True)
"""


def test_a_client_that_stops_responding_frees_its_session_within_the_idle_timeout(myelin_bin):
    import subprocess
    import sys
    from pathlib import Path

    server = live.Server(myelin_bin, env={"MYELIN_SESSIONS__INGEST_IDLE_TIMEOUT_S": "2"})
    gen = Path(__file__).resolve().parent / "_gen"
    client = subprocess.Popen([sys.executable, "-c", CLIENT, server.grpc, str(gen)], stdout=subprocess.PIPE, text=True)
    try:
        with grpc.insecure_channel(server.grpc) as channel:
            decoding = rpc.DecodingStub(channel)
            assert int(client.stdout.readline()) == 0, "the header's reply: the session is open"
            assert int(client.stdout.readline()) > 0, "the rig streams"

            def rig_live():
                return [s.live for s in decoding.ListSessions(pb.ListSessionsRequest()).sessions if s.session_id == "rig"]

            assert rig_live() == [True]
            client.send_signal(signal.SIGSTOP)  # frozen: its connection stays open, nothing comes
            stopped = time.monotonic()
            while rig_live() != [False]:
                assert time.monotonic() - stopped < 8, "the silent stream's session did not end"
                time.sleep(0.1)
            freed_after = time.monotonic() - stopped
            # The id is free: a new stream takes it.
            replies = list(rpc.IngestStub(channel).Stream(iter([
                pb.IngestRequest(header=pb.StreamHeader(session_id="rig", modality=pb.MODALITY_EEG, nominal_rate_hz=128.0,
                                                        channels=[pb.Channel(label="C3")])),
                pb.IngestRequest(chunk=pb.SampleChunk(first_sample_index=0, n_samples=4, samples=np.zeros(4, "<f4").tobytes(),
                                                      regular=pb.RegularTimestamps(first_seconds=0.0, rate_hz=128.0))),
            ])))
            assert replies[-1].samples_accepted_until == 4
    finally:
        client.kill()
        client.wait()
        server.stop()
    print(f"\nsession freed {freed_after:.1f} s after its client froze (idle timeout 2 s)")
    assert freed_after >= 1.5


def test_a_full_disk_stops_the_recording_cleanly_and_says_so(myelin_bin, tmp_path):
    """The server may write 200 kB per file (RLIMIT_FSIZE; SIGXFSZ ignored, so writes fail as on a
    full disk): the recording stops with the file cut back to its last whole chunk, the session
    and the metrics say so, and the stream and its decoding carry on."""
    import resource
    import urllib.request

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    recordings = tmp_path / "recordings"
    server = live.Server(myelin_bin, env={"MYELIN_RECORDING__ENABLED": "true", "MYELIN_RECORDING__DIR": str(recordings),
                                          "MYELIN_RECORDING__FLUSH_INTERVAL_MS": "50"}, preexec_fn=small_disk)
    channels = [f"E{i}" for i in range(64)]
    try:
        with grpc.insecure_channel(server.grpc) as channel:
            decoding = rpc.DecodingStub(channel)
            requests: queue.Queue = queue.Queue()
            requests.put(pb.IngestRequest(header=pb.StreamHeader(
                session_id="full", modality=pb.MODALITY_EEG, nominal_rate_hz=1000.0, clock=pb.CLOCK_SOURCE_UNIX,
                channels=[pb.Channel(label=c) for c in channels])))
            replies: list = []
            call = rpc.IngestStub(channel).Stream(iter(requests.get, None))
            drainer = threading.Thread(target=lambda: replies.extend(call), daemon=True)
            drainer.start()
            rng = np.random.default_rng(3)
            for k in range(40):  # 4 s of 64 channels at 1 kHz: about 1 MB to record
                x = rng.standard_normal((100, 64)).astype("<f4")
                requests.put(pb.IngestRequest(chunk=pb.SampleChunk(
                    first_sample_index=100 * k, n_samples=100, samples=x.tobytes(),
                    regular=pb.RegularTimestamps(first_seconds=k / 10.0, rate_hz=1000.0))))
                time.sleep(0.02)
            time.sleep(0.5)
            info = next(s for s in decoding.ListSessions(pb.ListSessionsRequest()).sessions if s.session_id == "full")
            requests.put(None)
            drainer.join(10)
            metrics = urllib.request.urlopen(f"http://{server.http}/metrics", timeout=10).read().decode()
    finally:
        server.stop()
    assert replies[-1].samples_accepted_until == 4000, "the stream carried on"
    assert "failed" in info.recording_error and "whole chunk" in info.recording_error, info.recording_error
    assert "myelin_recording_errors_total 1" in metrics
    [path] = list(recordings.glob("full-*.xdf"))
    assert path.stat().st_size <= 200_000
    streams, _ = pyxdf.load_xdf(str(path))
    data = next(s for s in streams if s["info"]["name"][0] == "full")
    assert 0 < len(data["time_stamps"]) < 4000, "what was written before the disk filled reads back"


def test_a_chunk_longer_than_the_ring_is_recorded_whole(myelin_bin, tmp_path):
    """10 Hz with a 30 s ring holds 300 samples; one chunk of 1000 (with a step back to repair)
    is still recorded with every timestamp, non-decreasing."""
    recordings = tmp_path / "recordings"
    server = live.Server(myelin_bin, env={"MYELIN_RECORDING__ENABLED": "true", "MYELIN_RECORDING__DIR": str(recordings)})
    stamps = np.arange(1000) / 10.0
    stamps[500:] -= 0.15
    try:
        with grpc.insecure_channel(server.grpc) as channel:
            replies = list(rpc.IngestStub(channel).Stream(iter([
                pb.IngestRequest(header=pb.StreamHeader(session_id="long", modality=pb.MODALITY_EEG, nominal_rate_hz=10.0,
                                                        channels=[pb.Channel(label="X")])),
                pb.IngestRequest(chunk=pb.SampleChunk(first_sample_index=0, n_samples=1000, samples=np.arange(1000, dtype="<f4").tobytes(),
                                                      per_sample=pb.PerSampleTimestamps(seconds=list(stamps)))),
            ])))
    finally:
        server.stop()
    assert replies[-1].samples_accepted_until == 1000
    assert [w.kind for w in replies[-1].warnings] == [pb.INGEST_WARNING_KIND_TIMESTAMPS_REPAIRED]
    [path] = list(recordings.glob("long-*.xdf"))
    streams, _ = pyxdf.load_xdf(str(path), dejitter_timestamps=False)
    data = next(s for s in streams if s["info"]["name"][0] == "long")
    assert len(data["time_stamps"]) == 1000 and np.all(np.isfinite(data["time_stamps"]))
    assert np.all(np.diff(data["time_stamps"]) >= 0)
