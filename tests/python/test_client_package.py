"""The public Python client (client/python, `pip install myelin-client`, import name `myelin`),
against the real server, imported here for its API (test_client_install.py installs it the
standard ways into fresh virtual environments)."""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

import myelin
from common import live, p300
from feed import push_recording

ROOT = Path(__file__).resolve().parents[2]
RUNS = p300.runs(ROOT / "models/data/p300", "subject1_session2")
CHANNELS = p300.CHANNELS
RATE = p300.RATE


def recording(n_runs: int):
    """Bundled runs back to back on one clock: (samples [n, 4], timestamps [n], codes [n])."""
    parts, stamps, codes, next_start = [], [], [], 0.0
    for path in RUNS[:n_runs]:
        data, c, ts, _ = p300.read_run(path, CHANNELS)
        ts = ts - ts[0] + next_start
        next_start = ts[-1] + 1.0
        parts.append(data)
        stamps.append(ts)
        codes.append(c)
    return np.concatenate(parts), np.concatenate(stamps), np.concatenate(codes)


def collect(subscription, n: int, timeout: float = 60.0):
    got: list = []

    def read():
        for p in subscription:
            got.append(p)
            if len(got) >= n:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return got, reader


def push_ten_minutes(server_address: str, speed: float):
    """Streams five bundled runs (about ten minutes of real EEG) with their markers at `speed` x
    real time into an ERP attachment, and checks every sample, marker and prediction arrived."""
    data, stamps, codes = recording(5)
    duration = stamps[-1] - stamps[0]
    assert duration > 540, "about ten minutes of real EEG"
    with myelin.Client(server_address) as client:
        session = client.open_session("long", CHANNELS, rate=RATE)
        erp = client.attach("long", "erp-linear-muse", marker_codes=[1, 2], latency_budget_ms=2000)
        # A marker in the last second has no complete epoch when the stream ends.
        expected = int(np.count_nonzero(codes[: len(codes) - int(RATE)]))
        got, reader = collect(client.subscribe(attachment=erp.attachment_id), expected)
        time.sleep(0.2)
        started = time.monotonic()
        push_recording(session, data, stamps, codes, speed=speed)
        took = time.monotonic() - started
        ack = session.wait_acknowledged()
        reader.join(60)
        session.close()
    assert ack.samples_accepted_until == len(data) and ack.markers_accepted == np.count_nonzero(codes)
    assert len(got) >= expected, f"{len(got)} predictions for {expected} markers"
    assert all(p.status == "ok" for p in got), {p.status for p in got}
    assert duration / speed * 0.98 < took < duration / speed + 15, f"x{speed} took {took:.1f} s for {duration:.0f} s"


def test_a_ten_minute_recording_at_x50(server):
    push_ten_minutes(server.grpc, speed=50)


@pytest.mark.realtime
def test_a_ten_minute_recording_in_real_time(server):
    # Ten minutes of wall time: deploy/test.sh runs this one (`-m realtime`) in the background
    # alongside the rest of the suite, so it costs no extra time there.
    push_ten_minutes(server.grpc, speed=1)


def test_default_timestamps_markers_and_chunking_under_the_message_limit(server):
    with myelin.Client(server.grpc, max_message_bytes=64 * 1024) as client:
        session = client.open_session("grid", CHANNELS, rate=RATE)
        first = session.push(np.ones((5000, 4), np.float64))  # 80 kB of float32: several messages
        session.marker(2, label="target")
        assert first == 0 and session.next_index == 5000
        ack = session.close()
        assert ack.samples_accepted_until == 5000 and ack.markers_accepted == 1
        # A rig clock that steps back 10 ms: the server's default policy repairs it and says so.
        jittery = client.open_session("jittery", CHANNELS, rate=RATE)
        jittery.push(np.zeros((32, 4)), 100.0 + np.arange(32) / RATE)
        jittery.push(np.zeros((32, 4)), 100.0 + np.arange(32, 64) / RATE - 0.010)
        repaired = jittery.close()
        assert repaired.samples_accepted_until == 64
        assert any("timestamps went backwards at sample 32" in w for w in repaired.warnings), repaired.warnings
        info = client.session("grid")
        assert info.samples_received == 5000 and info.markers_received == 1
        assert info.channels == CHANNELS and info.rate == RATE and info.source == "grpc" and info.modality == "eeg"


def test_subscribe_sync_and_async_yield_the_same_predictions(server):
    data, stamps, codes = recording(1)
    with myelin.Client(server.grpc) as client:
        session = client.open_session("both", CHANNELS, rate=RATE)
        erp = client.attach("both", "erp-linear-muse", marker_codes=[1, 2], latency_budget_ms=2000)
        n = 20
        sync, reader = collect(client.subscribe(attachment=erp.attachment_id), n)

        async def read_async():
            out = []
            async for p in client.subscribe_async(attachment=erp.attachment_id):
                out.append(p)
                if len(out) >= n:
                    return out

        result: dict = {}
        loop_thread = threading.Thread(target=lambda: result.setdefault("async", asyncio.run(read_async())), daemon=True)
        loop_thread.start()
        time.sleep(0.5)
        push_recording(session, data, stamps, codes)
        reader.join(30)
        loop_thread.join(30)
        session.close()
    asynchronous = result["async"]
    assert len(sync) == len(asynchronous) == n
    for a, b in zip(sync, asynchronous):
        assert (a.sequence, a.trigger, a.label) == (b.sequence, b.trigger, b.label)
        np.testing.assert_array_equal(a.probabilities, b.probabilities)
        assert a.status == "ok" and a.labels == ["non-target", "target"] and 0 < a.timing.server_latency < 2
        # Scheduling fields: the deadline is receipt + budget, and the window ran in a batch.
        assert abs(a.timing.deadline - (a.timing.last_sample_received + a.timing.budget)) < 1e-6
        assert a.timing.batch_size >= 1 and a.timing.last_sample_received <= a.timing.enqueued <= a.timing.decode_start


def test_calibrate_reports_progress_and_swaps_the_fitted_decoder_in(myelin_bin, tmp_path):
    data, stamps, codes = recording(2)
    # Its own calibrations directory: a fitted model left in the repository's would be loaded
    # by every later server.
    server = live.Server(myelin_bin, env={"MYELIN_MODELS__CALIBRATIONS_DIR": str(tmp_path / "calibrations")})
    with myelin.Client(server.grpc) as client:
        session = client.open_session("cal", CHANNELS, rate=RATE)
        erp = client.attach("cal", "erp-linear-muse", marker_codes=[1, 2])
        progress: list = []
        result: dict = {}

        def calibrate():
            result["calibration"] = client.calibrate(erp.attachment_id, [2], [1], max_epochs=200, model_id="py-calibrated",
                                                     on_progress=progress.append)

        calibrating = threading.Thread(target=calibrate, daemon=True)
        calibrating.start()
        time.sleep(0.5)
        push_recording(session, data, stamps, codes)
        calibrating.join(60)
        session.close()
    server.stop()
    calibration = result["calibration"]
    assert calibration.epochs == 200 and calibration.swapped and 0.5 < calibration.cv_auc <= 1.0
    assert len(progress) >= 199 and progress[-1].target_epochs + progress[-1].non_target_epochs >= 199
    assert Path(calibration.artifact).exists()


def test_every_refusal_is_an_exception_with_its_status(server):
    with myelin.Client(server.grpc, token="not-checked-yet") as client:
        with pytest.raises(myelin.MyelinError) as e:
            client.attach("nobody", "erp-linear-muse", marker_codes=[1])
        assert e.value.code == grpc.StatusCode.NOT_FOUND and "nobody" in e.value.details
        session = client.open_session("errors", CHANNELS, rate=RATE)
        with pytest.raises(myelin.MyelinError) as e:
            client.attach("errors", "no-such-model", marker_codes=[1])
        assert e.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(myelin.MyelinError) as e:
            client.open_session("errors", CHANNELS, rate=RATE)
        assert e.value.code == grpc.StatusCode.ALREADY_EXISTS
        with pytest.raises(myelin.MyelinError) as e:
            client.open_session("bad-rate", CHANNELS, rate=1e9)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "rate" in e.value.details
        sliding = client.attach("errors", "erp-linear-muse", hop_s=0.5)
        with pytest.raises(myelin.MyelinError) as e:
            client.calibrate(sliding.attachment_id, [2], [1], max_epochs=10)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "event-locked" in e.value.details
        with pytest.raises(myelin.MyelinError) as e:
            list(client.subscribe(attachment="att-999999"))
        assert e.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(myelin.MyelinError) as e:
            client.detach("att-999999")
        assert e.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(ValueError):
            client.attach("errors", "erp-linear-muse")  # neither marker codes nor a hop
        with pytest.raises(myelin.MyelinError) as e:
            client.connect_lsl("from-lsl", name=f"no-such-stream-{time.time_ns()}", timeout=0.5)
        assert e.value.code == grpc.StatusCode.NOT_FOUND and "no LSL" in e.value.details
        with pytest.raises(myelin.MyelinError) as e:
            client.connect_lsl("from-lsl")
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "name the data stream" in e.value.details
        with pytest.raises(myelin.MyelinError) as e:
            client.session("nobody")
        assert e.value.code == grpc.StatusCode.NOT_FOUND

        # Bad input from this side: refused before anything is sent.
        for bad in [np.array([["a", "b", "c", "d"]]), np.zeros((10, 3)), np.zeros((2, 10, 4)), np.array([[np.nan, 0, 0, 0]]),
                    np.array([[np.inf, 0, 0, 0]], np.float32), np.zeros((10, 4), complex)]:
            with pytest.raises(myelin.InvalidSamples):
                session.push(bad)
        with pytest.raises(myelin.InvalidSamples):
            session.push(np.zeros((10, 4)), timestamps=np.zeros(9))
        with pytest.raises(myelin.InvalidSamples):
            session.push(np.zeros((2, 4)), timestamps=[0.0, float("nan")])
        with pytest.raises(myelin.InvalidSamples):
            session.marker(1, timestamp=float("inf"))
        time.sleep(0.2)
        info = client.session("errors")
        assert info.samples_received == 0 and info.markers_received == 0, "nothing was sent"
        # The server's refusal of a stream surfaces at the next call.
        session.push(np.zeros((4, 4)), timestamps=[5.0, 5.1, 5.2, 5.3])
        session.push(np.zeros((4, 4)), timestamps=[5.4, 5.5, 5.6, 5.7])
        strict = client.open_session("nan", CHANNELS, rate=RATE, non_finite="send")
        strict.push(np.array([[np.nan, 0, 0, 0]]))
        with pytest.raises(myelin.MyelinError) as e:
            strict.close()
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "non-finite" in e.value.details
        assert session.close().samples_accepted_until == 8
