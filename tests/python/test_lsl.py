"""LabStreamingLayer and XDF with real peers: pylsl outlets feed the server, pylsl inlets read
its prediction outlets, pyxdf reads its recordings. The gRPC side is the public Python client
(myelin-client)."""
from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pylsl
import pyxdf

import myelin
from common import live, p300
from conftest import make_outlet
from feed import push_recording

ROOT = Path(__file__).resolve().parents[2]


def resolve_inlet(name, timeout=10.0):
    found = pylsl.resolve_byprop("name", name, minimum=1, timeout=timeout)
    assert found, f"LSL stream {name} not found"
    inlet = pylsl.StreamInlet(found[0], max_buflen=360, recover=False)
    inlet.open_stream(timeout=timeout)
    return inlet


def test_lsl_source_decoded_and_published_as_lsl_streams(server):
    """A pylsl outlet streams a real recording with its markers; Myelin decodes it; pylsl inlets
    receive both prediction streams, each sample stamped with its window's source time."""
    tag = uuid.uuid4().hex[:8]
    path = ROOT / "models/data/p300/subject1_session2_2017-02-09-17.20.37.csv.gz"
    data, codes, _, channels = p300.read_run(path)
    n = 256 * 30  # 30 s of it, pushed at 4x real time
    data, codes = data[:n], codes[:n]
    eeg = make_outlet(f"eeg-{tag}", "EEG", len(channels), 256.0, pylsl.cf_float32, f"eeg-{tag}", channels)
    markers = make_outlet(f"markers-{tag}", "Markers", 1, 0, pylsl.cf_string, f"markers-{tag}")

    with myelin.Client(server.grpc) as client:
        source = client.connect_lsl("lsl1", name=f"eeg-{tag}", marker_predicate=f"name='markers-{tag}'", timeout=10)
        assert source.rate == 256.0 and source.channels == channels
        assert source.source_id == f"eeg-{tag}" and source.marker_stream == f"markers-{tag}"
        attached = client.attach("lsl1", "erp-linear-muse", marker_codes=[1, 2], latency_budget_ms=500, lsl_outlet=True)
        numeric_name, json_name = attached.lsl_outlets
        numeric_in, json_in = resolve_inlet(numeric_name), resolve_inlet(json_name)
        info = numeric_in.info()
        labels = [info.desc().child("channels").child("channel").child_value("label")]
        assert labels[0] == "non-target"
        assert info.desc().child("myelin").child_value("model") == "erp-linear-muse"

        t0 = pylsl.local_clock() + 0.2
        stamps = t0 + np.arange(n) / 256.0
        wanted = {}

        def push():
            for begin in range(0, n, 32):
                end = min(begin + 32, n)
                due = t0 + (end - 1) / 256.0 / 4.0
                time.sleep(max(0.0, due - pylsl.local_clock()))
                eeg.push_chunk(data[begin:end].tolist(), stamps[begin:end].tolist())
                for i in np.flatnonzero(codes[begin:end]) + begin:
                    markers.push_sample([str(int(codes[i]))], float(stamps[i]))

        for i in np.flatnonzero(codes):
            if i - 32 >= 0 and i - 32 + 224 <= n:
                wanted[i - 32] = int(codes[i])
        pusher = threading.Thread(target=push)
        pusher.start()
        got_numeric, got_json = [], []
        deadline = time.time() + 30
        while time.time() < deadline and (len(got_numeric) < len(wanted) or len(got_json) < len(wanted)):
            sample, ts = numeric_in.pull_sample(timeout=0.2)
            if sample is not None:
                got_numeric.append((sample, ts))
            s, ts = json_in.pull_sample(timeout=0.0)
            if s is not None:
                got_json.append((json.loads(s[0]), ts))
        pusher.join()
        # Detaching removes the attachment's outlets from the network.
        client.detach(attached.attachment_id)
        deadline = time.time() + 5
        while pylsl.resolve_byprop("name", numeric_name, timeout=0.5) and time.time() < deadline:
            time.sleep(0.2)
        assert not pylsl.resolve_byprop("name", numeric_name, timeout=0.5), "outlet still visible after Detach"

    assert len(got_json) == len(wanted), (len(got_json), len(wanted))
    assert len(got_numeric) == len(wanted)
    worst = 0.0
    for (sample, ts_numeric), (p, ts_json) in zip(got_numeric, got_json):
        first = p["window"]["first_sample"]
        assert first in wanted and p["trigger"]["code"] == wanted[first]
        assert p["status"] in ("ok", "late")
        np.testing.assert_allclose(sample, p["probabilities"], rtol=0, atol=1e-6)
        expected = stamps[p["window"]["last_sample"]]
        # Same machine: the clock offset is microseconds; 1 ms bounds it with room to spare.
        worst = max(worst, abs(ts_numeric - expected), abs(ts_json - expected))
    assert worst < 1e-3, f"prediction timestamps differ from the windows' source times by up to {worst * 1e3:.3f} ms"


def test_lsl_source_restart_is_reconnected_with_the_gap_reported(server):
    """Stop and restart the LSL source mid-stream: Myelin reconnects by itself, records the gap,
    publishes the windows that touch it as ERROR, and keeps decoding."""
    tag = uuid.uuid4().hex[:8]
    golden = json.loads((ROOT / "models/fixtures/golden-linear.json").read_text())
    channels, rate = golden["channels"], golden["rate_hz"]
    x = np.asarray(golden["samples"], dtype=np.float32).reshape(-1, len(channels))

    def run(outlet, seconds):
        start = pylsl.local_clock()
        sent = 0
        while sent < int(seconds * rate):
            chunk = x[sent % len(x):sent % len(x) + 16]
            outlet.push_chunk(chunk.tolist())
            sent += len(chunk)
            time.sleep(max(0.0, start + sent / rate - pylsl.local_clock()))

    outlet = make_outlet(f"gappy-{tag}", "EEG", len(channels), rate, pylsl.cf_float32, f"gappy-{tag}", channels)
    with myelin.Client(server.grpc) as client:
        client.connect_lsl("gappy", source_id=f"gappy-{tag}", timeout=10)
        attached = client.attach("gappy", "fixture-linear", hop_s=0.25, latency_budget_ms=1000)
        got = []
        subscription = client.subscribe(attachment=attached.attachment_id)
        threading.Thread(target=lambda: got.extend(subscription), daemon=True).start()
        run(outlet, 3.0)
        del outlet  # the source goes away
        time.sleep(2.0)
        outlet = make_outlet(f"gappy-{tag}", "EEG", len(channels), rate, pylsl.cf_float32, f"gappy-{tag}", channels)
        run(outlet, 6.0)
        time.sleep(1.0)
        subscription.cancel()
        session = client.session("gappy")
    assert session.source == "lsl"
    # About 2 s (plus liblsl's reconnection time) at 128 Hz went missing.
    assert 200 <= session.gap_samples <= 1200, session.gap_samples
    errors = [p for p in got if p.status == "error"]
    assert errors and all("missing samples" in p.error_reason for p in errors)
    last_error = max(p.window.last_index for p in errors)
    after = [p for p in got if p.status == "ok" and p.window.first_index > last_error]
    assert len(after) >= 8, f"decoding goes on after the source came back ({len(after)} windows after the gap)"


def _record_server(tmp: str, extra=None):
    env = {"MYELIN_RECORDING__ENABLED": "true", "MYELIN_RECORDING__DIR": tmp}
    env.update(extra or {})
    return live.Server(os.environ.get("MYELIN_BIN", str(ROOT / "target/debug/myelin")), env=env)


def _streams_by_name(path):
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    return {s["info"]["name"][0]: s for s in streams}


def test_a_recorded_session_reads_back_value_for_value_in_pyxdf():
    golden, x, ts, codes = live.golden_stream()
    channels, rate = golden["channels"], golden["rate_hz"]
    with tempfile.TemporaryDirectory() as tmp:
        server = _record_server(tmp)
        try:
            with myelin.Client(server.grpc) as client:
                stream = client.open_session("rec", channels, rate=rate, stream_name="rig rec")
                attached = client.attach("rec", "fixture-linear", marker_codes=[1, 2], latency_budget_ms=1000)
                got = []
                subscription = client.subscribe(attachment=attached.attachment_id)
                threading.Thread(target=lambda: got.extend(subscription), daemon=True).start()
                time.sleep(0.2)
                push_recording(stream, x, ts, codes, chunk=32)
                stream.wait_acknowledged()
                deadline = time.time() + 10
                while len(got) < len(golden["expected"]) and time.time() < deadline:
                    time.sleep(0.05)
                time.sleep(0.3)
                session = client.session("rec")
                stream.close()
                subscription.cancel()
                time.sleep(0.5)  # the recorder writes its footers when the session ends
        finally:
            server.stop()
        path = Path(session.recording_path)
        assert path.exists() and path.parent == Path(tmp)
        streams = _streams_by_name(path)
        data = streams["rig rec"]
        np.testing.assert_array_equal(np.asarray(data["time_series"], dtype=np.float32), x)
        np.testing.assert_array_equal(data["time_stamps"], ts)
        assert [c["label"][0] for c in data["info"]["desc"][0]["channels"][0]["channel"]] == channels
        marks = streams["rec/markers"]
        assert [int(v[0]) for v in marks["time_series"]] == [m["code"] for m in golden["markers"]]
        np.testing.assert_array_equal(marks["time_stamps"], [m["timestamp"] for m in golden["markers"]])
        preds = streams[f"predictions/{attached.attachment_id}"]
        recorded = [json.loads(v[0]) for v in preds["time_series"]]
        assert len(recorded) == len(got) == len(golden["expected"])
        for r, p in zip(recorded, got):
            assert r["sequence"] == p.sequence
            assert r["probabilities"] == p.probabilities.tolist()
            assert r["window"]["last_sample"] == p.window.last_index
        np.testing.assert_array_equal(preds["time_stamps"], [p.window.last_time for p in got])


def test_a_recording_survives_sigkill_losing_at_most_the_last_second():
    golden = json.loads((ROOT / "models/fixtures/golden-linear.json").read_text())
    channels, rate = golden["channels"], golden["rate_hz"]
    x = np.asarray(golden["samples"], dtype=np.float32).reshape(-1, len(channels))
    with tempfile.TemporaryDirectory() as tmp:
        server = _record_server(tmp)
        with myelin.Client(server.grpc) as client:
            stream = client.open_session("crash", channels, rate=rate)
            start = time.time()
            sent = 0
            while time.time() - start < 4.0:  # real time: 4 s of samples
                stream.push(x[sent:sent + 16], 1000.0 + np.arange(sent, sent + 16) / rate)
                sent += 16
                time.sleep(max(0.0, start + sent / rate - time.time()))
            stream.wait_acknowledged()
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait()
        files = list(Path(tmp).glob("crash-*.xdf"))
        assert len(files) == 1
        streams = _streams_by_name(files[0])
        data = streams["crash"]
        kept = len(data["time_series"])
        assert kept >= sent - rate, f"kept {kept} of {sent} samples: more than 1 s lost"
        np.testing.assert_array_equal(np.asarray(data["time_series"], dtype=np.float32), x[:kept])


def _myelin():
    return os.environ.get("MYELIN_BIN", str(ROOT / "target/debug/myelin"))


def test_replay_publishes_an_xdf_recording_on_lsl_value_for_value():
    """Record a session, then `myelin replay FILE.xdf` publishes it on LSL; a pylsl inlet gets
    every sample and marker back, with the recorded spacing (divided by the speed)."""
    import subprocess

    golden, x, ts, codes = live.golden_stream()
    channels, rate = golden["channels"], golden["rate_hz"]
    with tempfile.TemporaryDirectory() as tmp:
        server = _record_server(tmp)
        try:
            with myelin.Client(server.grpc) as client:
                stream = client.open_session("torep", channels, rate=rate)
                push_recording(stream, x, ts, codes, chunk=64)
                stream.close()
                time.sleep(0.6)
        finally:
            server.stop()
        (path,) = Path(tmp).glob("torep-*.xdf")
        tag = uuid.uuid4().hex[:8]
        replayer = subprocess.Popen([_myelin(), "replay", str(path), "--name", f"rep-{tag}", "--speed", "8"], cwd=ROOT)
        try:
            data_in = resolve_inlet(f"rep-{tag}")
            marker_in = resolve_inlet(f"rep-{tag}-markers")
            samples, stamps, marks = [], [], []
            deadline = time.time() + 20
            n_markers = len(golden["markers"])
            while (len(samples) < len(x) or len(marks) < n_markers) and time.time() < deadline:
                chunk, t = data_in.pull_chunk(timeout=0.05)
                samples.extend(chunk)
                stamps.extend(t)
                m, _ = marker_in.pull_chunk(timeout=0.0)
                marks.extend(int(v[0]) for v in m)
            assert replayer.wait(timeout=20) == 0
        finally:
            replayer.kill()
    np.testing.assert_array_equal(np.asarray(samples, dtype=np.float32), x)
    np.testing.assert_allclose(np.diff(stamps), 1.0 / rate / 8, atol=1e-6)
    assert marks == [m["code"] for m in golden["markers"]]


def test_replay_sends_a_csv_recording_into_a_server(server):
    import subprocess

    path = ROOT / "models/data/p300/subject1_session2_2017-02-09-17.26.47.csv.gz"
    data, codes, _, _ = p300.read_run(path)
    done = subprocess.run([_myelin(), "replay", str(path), "--server", f"http://{server.grpc}", "--session", "replayed", "--speed", "60"],
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0
    with myelin.Client(server.grpc) as client:
        s = client.session("replayed")
    assert s.samples_received == len(data)
    assert s.markers_received == int((codes != 0).sum())


def test_lsl_sources_from_the_config_file_connect_when_their_stream_appears():
    """A source in the config file whose stream does not exist yet: the server starts, keeps
    trying, and connects as soon as the outlet appears."""
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "myelin.toml"
        config.write_text(f'[lsl]\nresolve_timeout_seconds = 1.0\n\n[[lsl.sources]]\nsession_id = "configured"\ndata = "name=\'cfg-{tag}\'"\n')
        env = dict(os.environ, MYELIN_SERVER__GRPC_ADDR="127.0.0.1:0", MYELIN_SERVER__HTTP_ADDR="127.0.0.1:0", RUST_LOG="warn")
        import subprocess
        proc = subprocess.Popen([_myelin(), "serve", "--config", str(config)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        try:
            line = next(l for l in proc.stdout if l.startswith("myelin ready "))
            grpc_addr = dict(kv.split("=", 1) for kv in line.split()[2:])["grpc"]
            time.sleep(1.5)  # at least one failed attempt first
            outlet = make_outlet(f"cfg-{tag}", "EEG", 4, 128.0, pylsl.cf_float32, f"cfg-{tag}", ["C3", "Cz", "C4", "Pz"])
            deadline = time.time() + 20
            session = None
            with myelin.Client(grpc_addr) as client:
                while time.time() < deadline:
                    outlet.push_chunk([[1.0, 2.0, 3.0, 4.0]] * 16)
                    time.sleep(0.1)
                    session = next((s for s in client.sessions() if s.session_id == "configured"), None)
                    if session is not None and session.samples_received > 0:
                        break
            assert session is not None and session.live and session.source == "lsl", session
            assert session.samples_received > 0
            assert session.channels == ["C3", "Cz", "C4", "Pz"] and session.rate == 128.0
        finally:
            proc.terminate()
            proc.wait(timeout=10)
