"""Real rigs' clocks jitter: a Muse headband steps its timestamps back by up to 14 ms now and then.
A bundled real recording, streamed with chunks stamped late the same way (so that the next chunk
steps back by 5-15 ms, a few times a minute), keeps its session under the default `repair`
policy and decodes like the clean stream; under `reject` the stream ends with INVALID_ARGUMENT.
Raw grpcio calls from stubs generated from proto/, against the real server binary."""
from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pyxdf
from myelin.v1 import myelin_pb2 as pb
from myelin.v1 import myelin_pb2_grpc as rpc

from common import live, p300

ROOT = Path(__file__).resolve().parents[2]
RECORDING = ROOT / "models/data/p300/subject1_session2_2017-02-09-17.17.46.csv.gz"
CHUNK = 32
# How far a repaired stream's predictions may be from the clean stream's: a marker next to a
# step lands on a sample up to 4 away (15 ms at 256 Hz), which moves its epoch that much.
TOLERANCE = 0.05


def jittered(timestamps: np.ndarray, rng) -> tuple[np.ndarray, int]:
    """The recording's timestamps with about 4 chunks a minute stamped 9-19 ms late, so that the
    chunk after each steps back by 5-15 ms. Returns them and how many steps back they have."""
    out = timestamps.copy()
    n_chunks = len(out) // CHUNK
    minutes = (out[-1] - out[0]) / 60.0
    late = rng.choice(np.arange(2, n_chunks - 2), size=max(2, int(4 * minutes)), replace=False)
    for k in late:
        out[k * CHUNK:(k + 1) * CHUNK] += rng.uniform(0.009, 0.019)
    steps = int(np.sum(np.diff(out) < 0))
    return out, steps


def stream(server, session: str, data, timestamps, codes, channels):
    """Streams the run with `timestamps` as fast as the server takes it, each chunk's markers (at
    the true stimulus times) after it; returns the predictions by marker time, how the Ingest call
    ended, and its replies."""
    with grpc.insecure_channel(server.grpc) as channel:
        decoding = rpc.DecodingStub(channel)
        requests: queue.Queue = queue.Queue()
        requests.put(pb.IngestRequest(header=pb.StreamHeader(
            session_id=session, stream_name=session, modality=pb.MODALITY_EEG, nominal_rate_hz=p300.RATE,
            clock=pb.CLOCK_SOURCE_LSL, channels=[pb.Channel(label=c, type="EEG", unit="microvolts") for c in channels])))
        replies: list = []
        ended: dict = {}

        def drain():
            try:
                for reply in rpc.IngestStub(channel).Stream(iter(requests.get, None)):
                    replies.append(reply)
                ended["code"] = grpc.StatusCode.OK
            except grpc.RpcError as e:
                ended["code"], ended["details"] = e.code(), e.details()

        drainer = threading.Thread(target=drain, daemon=True)
        drainer.start()
        attached = live.attach(decoding, pb.AttachRequest(
            session_id=session, model_id="erp-linear-muse", latency_budget_ms=5000,
            window=pb.WindowPolicy(event_locked=pb.EventLockedWindow(marker_codes=[1, 2]))))
        got: list = []
        subscription = live.subscribe_into(decoding, pb, got, attachment_id=attached.attachment_id)
        time.sleep(0.2)
        for begin in range(0, len(data), CHUNK):
            end = min(begin + CHUNK, len(data))
            requests.put(pb.IngestRequest(chunk=pb.SampleChunk(
                first_sample_index=begin, n_samples=end - begin, samples=data[begin:end].astype("<f4").tobytes(),
                per_sample=pb.PerSampleTimestamps(seconds=list(map(float, timestamps[begin:end]))))))
            marks = [pb.Marker(timestamp=float(TRUE_TIMES[i]), code=int(codes[i])) for i in np.flatnonzero(codes[begin:end]) + begin]
            if marks:
                requests.put(pb.IngestRequest(markers=pb.Markers(markers=marks)))
        requests.put(None)
        drainer.join(60)
        expected = int(np.count_nonzero(codes[: len(codes) - 256]))
        deadline = time.monotonic() + 30
        while len(got) < expected and time.monotonic() < deadline and ended.get("code") == grpc.StatusCode.OK:
            time.sleep(0.05)
        time.sleep(0.5)
        subscription.cancel()
    return {round(p.trigger.timestamp, 6): np.asarray(p.classification.probabilities) for p in got}, ended, replies


DATA, CODES, TRUE_TIMES, CHANNELS = p300.read_run(RECORDING)


def test_a_stream_whose_timestamps_step_back_is_repaired_and_decodes_like_the_clean_one(myelin_bin, tmp_path):
    jitter, steps = jittered(TRUE_TIMES, np.random.default_rng(14))
    assert steps >= 6, "the perturbation steps back a few times a minute"
    server = live.Server(myelin_bin, env={"MYELIN_RECORDING__ENABLED": "true", "MYELIN_RECORDING__DIR": str(tmp_path)})
    try:
        clean, clean_end, _ = stream(server, "clean", DATA, TRUE_TIMES, CODES, CHANNELS)
        repaired, repaired_end, replies = stream(server, "jittery", DATA, jitter, CODES, CHANNELS)
    finally:
        server.stop()
    assert clean_end["code"] == grpc.StatusCode.OK and repaired_end["code"] == grpc.StatusCode.OK, (clean_end, repaired_end)
    assert len(clean) > 150 and set(repaired) == set(clean), "every marker of the clean run is decoded in the jittery one"
    worst = max(float(np.abs(repaired[t] - clean[t]).max()) for t in clean)
    same = sum(bool(np.abs(repaired[t] - clean[t]).max() < 1e-5) for t in clean)
    print(f"\n{steps} backward steps of 5-15 ms repaired; {same} of {len(clean)} predictions identical, worst difference {worst:.4f}")
    assert worst <= TOLERANCE, f"a repaired prediction is {worst:.3f} from the clean one"
    assert same >= 0.9 * len(clean)
    warned = [w for r in replies for w in r.warnings if w.kind == pb.INGEST_WARNING_KIND_TIMESTAMPS_REPAIRED]
    assert sum(w.count for w in warned) > 0, "the repairs are reported"
    # The recording holds the repaired (non-decreasing) timestamps and, beside them, the raw ones.
    [path] = list(tmp_path.glob("jittery-*.xdf"))
    streams, _ = pyxdf.load_xdf(str(path), dejitter_timestamps=False)
    data = next(s for s in streams if s["info"]["name"][0] == "jittery")
    assert np.all(np.diff(data["time_stamps"]) >= 0)
    raw = next(s for s in streams if s["info"]["type"][0] == "RawTimestamps")
    assert len(raw["time_series"]) >= steps


def test_under_the_reject_policy_a_step_back_ends_the_stream(myelin_bin):
    jitter, _ = jittered(TRUE_TIMES, np.random.default_rng(14))
    server = live.Server(myelin_bin, env={"MYELIN_SESSIONS__TIMESTAMP_POLICY": "reject"})
    try:
        _, ended, _ = stream(server, "strict", DATA, jitter, CODES, CHANNELS)
    finally:
        server.stop()
    assert ended["code"] == grpc.StatusCode.INVALID_ARGUMENT and "backwards" in ended["details"], ended
