"""The same end-to-end path as the Rust suite, from a Python client generated from proto/
with grpcio-tools, with expected values computed here, independently of the server: the DSP by
scipy (models/common/preprocess.py) and the model by ONNX Runtime for Python."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from myelin.v1 import myelin_pb2 as pb
from myelin.v1 import myelin_pb2_grpc as rpc

from common import cards, live, p300, preprocess

ROOT = Path(__file__).resolve().parents[2]


def offline_predictions(card: dict, onnx_path: Path, samples: np.ndarray, stream_channels, rate: float, event_indices):
    """What the server must publish, computed here: scipy filtering over the whole stream (the
    offline twin), then ONNX Runtime for Python. Returns {window start: (event index, outputs)}."""
    idx = [stream_channels.index(c) for c in card["channels"]]
    filtered = preprocess.filter_stream(samples[:, idx], preprocess.card_sos(card, rate))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    offset = int(round(card["window"]["tmin_s"] * rate))
    length = int(round((card["window"]["tmax_s"] - card["window"]["tmin_s"]) * rate))
    out = {}
    for i in event_indices:
        start = i + offset
        if start < 0 or start + length > len(samples):
            continue
        window = preprocess.window_from_filtered(filtered, start, card, rate)
        out[start] = (i, session.run(None, {"window": window[None]}))
    return out, offset, length


def Ingest(channel, header_message):
    return live.Ingest(pb, rpc, channel, header_message)


def header(session: str, channels, rate: float):
    return live.header(pb, session, channels, rate)


attach = live.attach


def subscribe(decoding, session: str, attachment: str, n: int, out: list, timeout=30.0):
    stream = decoding.Subscribe(pb.SubscribeRequest(session_id=session, attachment_id=attachment), timeout=timeout)

    def read():
        try:
            for p in stream:
                out.append(p)
                if len(out) >= n:
                    stream.cancel()
                    return
        except grpc.RpcError:
            pass

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


def test_golden_stream_from_a_generated_python_client(server):
    golden, x, ts, codes = live.golden_stream()
    card = cards.read(ROOT / "models/fixtures/fixture-linear.card.toml")
    rate, channels = golden["rate_hz"], golden["channels"]
    markers = golden["markers"]

    # Expected values computed here: scipy for the windows, ONNX Runtime (Python) for outputs.
    wanted = [m for m in markers if m["code"] in (1, 2)]
    offline, offset, length = offline_predictions(card, ROOT / "models/fixtures/fixture-linear.onnx", x, channels, rate,
                                                  [m["index"] for m in wanted])
    by_index = {m["index"]: m for m in wanted}
    expected = [(by_index[i], outputs[0][0], outputs[1][0]) for _, (i, outputs) in sorted(offline.items())]

    with grpc.insecure_channel(server.grpc) as channel:
        decoding = rpc.DecodingStub(channel)
        ingest = Ingest(channel, header("py-golden", channels, rate))
        reply = attach(decoding, pb.AttachRequest(
            session_id="py-golden", model_id="fixture-linear", latency_budget_ms=500,
            window=pb.WindowPolicy(event_locked=pb.EventLockedWindow(marker_codes=[1, 2]))))
        got: list = []
        reader = subscribe(decoding, "py-golden", reply.attachment_id, len(expected), got)
        time.sleep(0.2)  # the subscription is registered before any window can complete
        live.stream_recording(ingest, x, ts, codes, chunk=32)
        reader.join(timeout=30)
        replies = ingest.close()

    assert replies[-1].samples_accepted_until == len(x)
    assert len(got) == len(expected)
    for p, (m, probs, features) in zip(got, expected):
        assert p.status == pb.PREDICTION_STATUS_OK
        assert p.trigger.code == m["code"]
        assert p.window.first_sample_index == m["index"] + offset
        assert p.window.last_sample_index == m["index"] + offset + length - 1
        np.testing.assert_allclose(np.asarray(p.embedding), features, atol=1e-4)
        np.testing.assert_allclose(np.asarray(p.classification.probabilities), probs, atol=1e-5)
        assert list(p.classification.labels) == card["labels"]
        t = p.timing
        assert 0 < t.last_sample_received_ns <= t.decode_start_ns <= t.decode_end_ns <= t.published_ns
        assert t.budget_ms == 500
        assert t.budget_met == ((t.published_ns - t.last_sample_received_ns) <= 500 * 1_000_000)


def test_real_recording_through_the_server_matches_the_offline_twin(server):
    """Real Muse EEG, the bundled real-data model: every server prediction equals what the
    training code computes offline for the same epoch, so the card's offline metrics describe
    the served path."""
    path = ROOT / "models/data/p300/subject1_session2_2017-02-09-17.17.46.csv.gz"
    data, codes, ts, channels = p300.read_run(path)
    card = cards.read(ROOT / "models/erp-linear/erp-linear-muse.card.toml")
    rate = 256.0
    offline, _, _ = offline_predictions(card, ROOT / "models/erp-linear/erp-linear-muse.onnx", data, channels, rate,
                                        np.flatnonzero(codes))
    events = list(offline)

    with grpc.insecure_channel(server.grpc) as channel:
        decoding = rpc.DecodingStub(channel)
        ingest = Ingest(channel, header("py-real", channels, rate))
        reply = attach(decoding, pb.AttachRequest(
            session_id="py-real", model_id="erp-linear-muse", latency_budget_ms=1000,
            window=pb.WindowPolicy(event_locked=pb.EventLockedWindow(marker_codes=[1, 2]))))
        got: list = []
        reader = subscribe(decoding, "py-real", reply.attachment_id, len(events), got, timeout=60)
        time.sleep(0.2)
        live.stream_recording(ingest, data, ts, codes, chunk=64)
        reader.join(timeout=60)
        ingest.close()

    assert len(got) == len(events)
    worst = 0.0
    for p in got:
        want = offline[p.window.first_sample_index][1][0][0]
        worst = max(worst, float(np.abs(np.asarray(p.classification.probabilities) - want).max()))
    assert worst < 1e-4, f"server and offline twin differ by {worst}"


def test_reflection_from_python_lists_the_services(server):
    with grpc.insecure_channel(server.grpc) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert {"myelin.v1.Ingest", "myelin.v1.Decoding", "grpc.health.v1.Health"} <= services
        file = db.FindFileContainingSymbol("myelin.v1.Prediction")
        assert file.package == "myelin.v1"
