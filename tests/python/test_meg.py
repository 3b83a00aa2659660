"""MEG image retrieval served live (models/meg): simulated MEG from a stream seed the model never
saw (3; training used 1, 11 and 21, validation 5, the card's test 2), showing the 200 held-out
images with image-onset markers, streams into the real server with the CTF-275 layout positions
in its header. The server decodes each window with the brain module and searches a gallery of the
200 images' embeddings (float16 .npy + ids); the tests compare what it serves with the offline
evaluation of the same ONNX model (ONNX Runtime for Python, the offline preprocessing twin)."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from scipy import signal
from myelin.v1 import myelin_pb2 as pb
from myelin.v1 import myelin_pb2_grpc as rpc

import myelin
from common import cards, live, preprocess
from conftest import myelin_bin

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "models/meg"))
import simulator as sim  # noqa: E402

CARD = ROOT / "models/meg/meg-brain-synthetic.card.toml"
IMAGES = list(range(1600, 1800))
SEED = 3
ONSET = 1  # marker code of an image onset
pytestmark = pytest.mark.skipif(not CARD.exists(), reason="the bundled MEG model is missing (models/meg/train.py)")


@pytest.fixture(scope="module")
def recording():
    world = sim.World()
    x, events = sim.Subject(subject_seed=0).stream(world, IMAGES, seed=SEED)
    return world, x, events


@pytest.fixture
def meg_server(tmp_path, recording):
    world = recording[0]
    galleries = tmp_path / "galleries"
    galleries.mkdir()
    np.save(galleries / "test200.npy", world.embeddings[IMAGES].astype(np.float16))
    (galleries / "test200.npy.ids").write_text("".join(world.ids[i] + "\n" for i in IMAGES))
    np.save(galleries / "dim512.npy", np.ones((10, 512), np.float32))
    # Deep queue: the recording is sent faster than real time and every window must be decoded.
    server = live.Server(myelin_bin(), env={"MYELIN_MODELS__GALLERIES_DIR": str(galleries), "MYELIN_MODELS__QUEUE_DEPTH": "4096"})
    yield server
    server.stop()


def header(session: str, keep) -> pb.StreamHeader:
    return pb.StreamHeader(
        session_id=session, stream_name="simulated-meg", modality=pb.MODALITY_MEG, nominal_rate_hz=sim.RATE,
        clock=pb.CLOCK_SOURCE_UNIX,
        channels=[pb.Channel(label=sim.CHANNELS[i], type="MEG", unit="femtotesla",
                             layout=pb.LayoutPosition(x=float(sim.POSITIONS[i, 0]), y=float(sim.POSITIONS[i, 1])))
                  for i in keep])


def gallery_matrix(world) -> np.ndarray:
    """The gallery as the server holds it: float16 values, L2-normalised rows."""
    g = world.embeddings[IMAGES].astype(np.float16).astype(np.float32)
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def offline(card, x, starts, present, gallery):
    """Embeddings and cosine scores of the windows starting at `starts`, computed offline with
    the sensors not in `present` zeroed (as the server zero-fills them) and masked out."""
    session = ort.InferenceSession(str(CARD.parent / card["onnx"]), providers=["CPUExecutionProvider"])
    x = x.copy()
    x[:, ~present] = 0
    filtered = preprocess.filter_stream(x, preprocess.card_sos(card, sim.RATE))
    positions = sim.POSITIONS.astype(np.float32)[None]
    mask = present.astype(np.float32)[None]
    out = {}
    for start in starts:
        window = preprocess.window_from_filtered(filtered, start, card, sim.RATE)
        embedding = session.run(["embedding"], {"meg": window[None], "positions": positions, "mask": mask})[0][0]
        out[start] = (embedding, gallery @ (embedding / np.linalg.norm(embedding)))
    return out


def top5_accuracy(ranked_ids, truth_ids) -> float:
    return float(np.mean([t in ids[:5] for ids, t in zip(ranked_ids, truth_ids)]))


def serve(server, session, x, keep, events, expected=None, rate=sim.RATE, **attach):
    """Streams the recording (channels `keep`, with their layout positions) with onset markers
    through the public client, and waits for `expected` predictions (one per event by default);
    returns (attachment, predictions)."""
    expected = len(events) if expected is None else expected
    ts = 1000.0 + np.arange(len(x)) / rate
    onsets = {onset for onset, _ in events}
    with myelin.Client(server.grpc) as client:
        stream = client.open_session(session, [sim.CHANNELS[i] for i in keep], rate=rate, modality="meg", units="femtotesla",
                                     stream_name="simulated-meg", layouts=sim.POSITIONS[keep])
        attachment = client.attach(session, latency_budget_ms=5000, **attach)
        got = []
        subscription = client.subscribe(attachment=attachment.attachment_id)
        threading.Thread(target=lambda: got.extend(subscription), daemon=True).start()
        time.sleep(0.2)
        for begin in range(0, len(x), 60):
            end = min(begin + 60, len(x))
            stream.push(x[begin:end, keep], ts[begin:end])
            stream.markers([(ts[i], ONSET) for i in range(begin, end) if i in onsets])
        stream.wait_acknowledged()
        deadline = time.time() + 120
        while len(got) < expected and time.time() < deadline:
            time.sleep(0.1)
        subscription.cancel()
        stream.close()
    return attachment, got


def event_locked(**extra):
    return dict(model_id="meg-brain-synthetic", gallery="test200.npy", top_k=5, marker_codes=[ONSET], **extra)


def check_against_offline(card, x, events, got, present, world):
    """Served retrieval == offline retrieval window by window; returns (served, offline) top-5."""
    offset = int(round(card["window"]["tmin_s"] * sim.RATE))
    image_of = {onset + offset: image for onset, image in events}
    assert len(got) == len(events)
    assert all(p.status == "ok" for p in got)
    expected = offline(card, x, sorted(image_of), present, gallery_matrix(world))
    ids = np.array([world.ids[i] for i in IMAGES])
    served_ranked, offline_ranked, truth = [], [], []
    for p in got:
        start = p.window.first_index
        _, scores = expected[start]
        order = np.argsort(-scores)[:5]
        # Same ids in the same order, unless two scores tie within float error.
        if p.ids != list(ids[order]):
            np.testing.assert_allclose(sorted(p.scores, reverse=True), scores[order], atol=1e-4)
        np.testing.assert_allclose(p.scores, [scores[list(ids).index(i)] for i in p.ids], atol=1e-4)
        served_ranked.append(p.ids)
        offline_ranked.append(list(ids[order]))
        truth.append(world.ids[image_of[start]])
    return top5_accuracy(served_ranked, truth), top5_accuracy(offline_ranked, truth)


def test_served_retrieval_matches_offline_evaluation(meg_server, recording):
    world, x, events = recording
    card = cards.read(CARD)
    everything = np.arange(len(sim.CHANNELS))
    reply, got = serve(meg_server, "meg-full", x, everything, events, **event_locked())
    assert reply.gallery_items == 200 and not reply.missing_channels
    served, offline_top5 = check_against_offline(card, x, events, got, np.ones(len(sim.CHANNELS), bool), world)
    card_top5 = card["provenance"]["metrics"]["test_top5_accuracy"]
    print(f"MEG retrieval, unseen stream seed {SEED}, 200-image gallery: served top-5 {served:.3f}, offline {offline_top5:.3f} "
          f"(card, test seed 2: {card_top5:.3f}; chance 0.025)")
    # Tolerance: the same windows through the same float32 graph; only summation order differs,
    # so at most two near-ties at rank 5 may flip: 2/200.
    assert abs(served - offline_top5) <= 2 / 200 + 1e-9
    assert served > 4 * 0.025, "well above chance"


def test_a_ctf_rig_streaming_at_its_native_1200_hz_gets_the_same_retrieval(meg_server, recording):
    """The same simulated MEG at 120 Hz and, band-limited interpolation of it, at 1200 Hz (what a
    CTF system records): the card's filter is designed for each rate and the 1200 Hz stream is
    resampled 10:1 to the model's 120 Hz, so the model sees nearly the same windows."""
    world, x, events = recording
    events = events[:40]
    x = x[:events[-1][0] + int(2 * sim.RATE)]
    factor = 10
    x_native = signal.resample_poly(x.astype(np.float64), factor, 1, axis=0).astype(np.float32)
    everything = np.arange(len(sim.CHANNELS))
    _, at_model_rate = serve(meg_server, "meg-120", x, everything, events, **event_locked())
    native_events = [(onset * factor, image) for onset, image in events]
    reply, at_native = serve(meg_server, "meg-1200", x_native, everything, native_events, rate=sim.RATE * factor, **event_locked())
    assert reply.window_stream_samples == (sim.WINDOW - 1) * factor + 1 and reply.window_lookahead_samples > 0
    assert len(at_model_rate) == len(at_native) == len(events)
    assert all(p.status == "ok" for p in at_model_rate + at_native), [p.error_reason for p in at_native if p.status != "ok"]
    by_start = {p.window.first_index: p for p in at_model_rate}
    offset = int(round(sim.TMIN * sim.RATE))
    truth = {onset + offset: world.ids[image] for onset, image in events}
    overlap, same_top1 = [], []
    for p in at_native:
        start = p.window.first_index // factor
        assert p.window.first_index == start * factor
        q = by_start[start]
        overlap.append(len(set(p.ids[:5]) & set(q.ids[:5])))
        same_top1.append(p.ids[0] == q.ids[0])
    top5 = lambda got, scale: np.mean([truth[p.window.first_index // scale] in p.ids[:5] for p in got])  # noqa: E731
    print(f"MEG at 1200 Hz vs 120 Hz, {len(events)} images: top-5 sets share {np.mean(overlap):.2f} of 5 ids, "
          f"top-1 agrees on {np.mean(same_top1):.0%}; top-5 accuracy {top5(at_native, factor):.3f} vs {top5(at_model_rate, 1):.3f}")
    # Tolerance (stated on the card): on average at least 4 of the 5 retrieved ids agree, the
    # best match agrees on 80 % of windows, and top-5 accuracy moves by at most 0.05.
    assert np.mean(overlap) >= 4.0
    assert np.mean(same_top1) >= 0.8
    assert abs(top5(at_native, factor) - top5(at_model_rate, 1)) <= 0.05 + 1e-9


def test_sensors_removed_from_the_header_degrade_gracefully(meg_server, recording):
    world, x, events = recording
    card = cards.read(CARD)
    rng = np.random.default_rng(11)
    full = offline(card, x, [o + int(round(card["window"]["tmin_s"] * sim.RATE)) for o, _ in events],
                   np.ones(len(sim.CHANNELS), bool), gallery_matrix(world))
    truth = [world.ids[image] for _, image in events]
    ids = np.array([world.ids[i] for i in IMAGES])
    full_top5 = top5_accuracy([list(ids[np.argsort(-s)[:5]]) for _, s in full.values()], truth)
    results = {}
    for removed in (55, 120):  # 20 % and 44 % of the 275 sensors (the card needs 137 present)
        keep = np.sort(rng.permutation(len(sim.CHANNELS))[removed:])
        present = np.zeros(len(sim.CHANNELS), bool)
        present[keep] = True
        reply, got = serve(meg_server, f"meg-minus-{removed}", x, keep, events, **event_locked())
        assert sorted(reply.missing_channels) == sorted(sim.CHANNELS[i] for i in np.flatnonzero(~present))
        served, offline_top5 = check_against_offline(card, x, events, got, present, world)
        assert abs(served - offline_top5) <= 2 / 200 + 1e-9
        results[removed] = served
    print(f"MEG retrieval top-5 with sensors removed from the header: none {full_top5:.3f}, "
          f"55 removed {results[55]:.3f}, 120 removed {results[120]:.3f} (chance 0.025)")
    assert results[55] >= 0.5 * full_top5, "losing a fifth of the sensors keeps most of the accuracy"
    assert results[120] > 2 * 0.025, "still above chance with 44 % of the sensors gone"


def test_sliding_windows_decode_continuously_with_embeddings(meg_server, recording):
    world, x, _ = recording
    card = cards.read(CARD)
    seconds = 12
    part = x[:int(seconds * sim.RATE)]
    hop = 6  # 50 ms at 120 Hz
    expected_windows = (len(part) - sim.WINDOW) // hop + 1
    attach = dict(model_id="meg-brain-synthetic", gallery="test200.npy", gallery_index="hnsw", top_k=3, include_embedding=True, hop_s=0.05)
    _, got = serve(meg_server, "meg-sliding", part, np.arange(len(sim.CHANNELS)), [], expected=expected_windows, **attach)
    assert len(got) == expected_windows
    starts = [p.window.first_index for p in got]
    assert starts == list(range(0, hop * expected_windows, hop))
    # The card scales by the session's own first seconds: windows cut before those are in are
    # refused, saying why; every later one is decoded.
    fitted_after = int(round(card["preprocessing"]["scaling"]["fit_seconds"] * sim.RATE))
    refused = [p for p in got if p.status == "error"]
    assert refused and all(p.window.first_index + sim.WINDOW <= fitted_after and "robust scaling" in p.error_reason for p in refused)
    decoded = [p for p in got if p.status == "ok"]
    assert len(decoded) + len(refused) == len(got)
    # (serve() sends 60-sample chunks: a window ending in the chunk that completes the fit may go
    # either way; every one after it is decoded.)
    assert all(p.status == "ok" for p in got if p.window.first_index + sim.WINDOW > fitted_after + 60)
    for p in decoded:
        assert len(p.ids) == 3 and len(p.embedding) == sim.EMBED_DIM
    # Spot-check embeddings against offline (every 10th decoded window).
    checked = decoded[::10]
    expected = offline(card, part, [p.window.first_index for p in checked], np.ones(len(sim.CHANNELS), bool), gallery_matrix(world))
    for p in checked:
        np.testing.assert_allclose(p.embedding, expected[p.window.first_index][0], atol=1e-4)


def wire_event_locked():
    """event_locked() as the wire's AttachRequest fields (this test speaks the raw contract)."""
    return dict(model_id="meg-brain-synthetic", gallery=pb.GallerySpec(path="test200.npy"), top_k=5,
                window=pb.WindowPolicy(event_locked=pb.EventLockedWindow(marker_codes=[ONSET])))


def test_bad_galleries_and_montages_are_refused_with_clear_errors(meg_server, recording):
    """The raw wire contract (stubs generated from proto/): gallery values the typed client cannot
    even express (an index of 7) are refused by the server."""
    _, x, _ = recording
    with grpc.insecure_channel(meg_server.grpc) as channel:
        decoding = rpc.DecodingStub(channel)
        ingest = live.Ingest(pb, rpc, channel, header("meg-bad", np.arange(len(sim.CHANNELS))))
        ingest.chunk(x[:240], 1000.0 + np.arange(240) / sim.RATE)
        ingest.wait_acknowledged()
        small = live.Ingest(pb, rpc, channel, header("meg-too-few", np.arange(100)))
        small.chunk(x[:240, :100], 1000.0 + np.arange(240) / sim.RATE)
        small.wait_acknowledged()
        cases = [
            ("meg-bad", dict(gallery=pb.GallerySpec(path="dim512.npy")), grpc.StatusCode.INVALID_ARGUMENT, "dimension 512"),
            ("meg-bad", dict(gallery=pb.GallerySpec(path="../test200.npy")), grpc.StatusCode.INVALID_ARGUMENT, "relative"),
            ("meg-bad", dict(gallery=pb.GallerySpec(path="/etc/passwd")), grpc.StatusCode.INVALID_ARGUMENT, "relative"),
            ("meg-bad", dict(gallery=pb.GallerySpec(path="absent.npy")), grpc.StatusCode.NOT_FOUND, "does not exist"),
            ("meg-bad", dict(gallery=pb.GallerySpec(path="test200.npy.ids")), grpc.StatusCode.INVALID_ARGUMENT, "not a .npy"),
            ("meg-bad", dict(gallery=pb.GallerySpec(path="test200.npy", index=7)), grpc.StatusCode.INVALID_ARGUMENT, "GalleryIndex"),
            ("meg-too-few", {}, grpc.StatusCode.INVALID_ARGUMENT, "has 100 of model meg-brain-synthetic's 275 sensors"),
        ]
        for session, extra, code, words in cases:
            request = dict(wire_event_locked(), **extra)
            with pytest.raises(grpc.RpcError) as error:
                decoding.Attach(pb.AttachRequest(session_id=session, **request))
            assert error.value.code() == code, (extra, error.value.details())
            assert words in error.value.details(), error.value.details()
        # A gallery for a model that outputs no embedding.
        eeg = live.Ingest(pb, rpc, channel, live.header(pb, "eeg", ["TP9", "AF7", "AF8", "TP10"], 256.0))
        eeg.chunk(np.zeros((10, 4), np.float32), np.arange(10) / 256.0)
        eeg.wait_acknowledged()
        with pytest.raises(grpc.RpcError) as error:
            decoding.Attach(pb.AttachRequest(session_id="eeg", model_id="erp-linear-muse", gallery=pb.GallerySpec(path="test200.npy"),
                                             window=pb.WindowPolicy(event_locked=pb.EventLockedWindow(marker_codes=[1]))))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "does not output an embedding" in error.value.details()
        # The server is unharmed: the good request attaches on the same session.
        assert decoding.Attach(pb.AttachRequest(session_id="meg-bad", **wire_event_locked())).gallery_items == 200
        for call in (ingest, small, eeg):
            call.close()
