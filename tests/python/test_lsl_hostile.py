"""The LSL door held to the gRPC door's rules, tried the way amplifiers and outside scripts
really behave: pylsl outlets that send NaN on lead-off, infinities, 2000 channels, repeated
labels, absurd or irregular rates and strings, against the real binary, through ConnectLsl from
a grpcio client generated from proto/. Each case is refused with the same status and text an
Ingest call gets for the same header, or repaired with a warning kept on the session; a healthy
gRPC session decodes throughout; and no prediction anywhere is OK with a non-finite value."""
from __future__ import annotations

import math
import re
import threading
import time
import uuid

import grpc
import numpy as np
import pylsl
import pytest
from myelin.v1 import myelin_pb2 as pb
from myelin.v1 import myelin_pb2_grpc as rpc

from common import live
from conftest import QUIET, Healthy, make_outlet, myelin_bin, rss_mib

RATE = 128.0
HOP_S = 0.25
SETTLING = re.compile(r"settling time \((\d+) samples\)")


def finite(p: pb.Prediction) -> bool:
    values = list(p.classification.probabilities) + list(p.classification.top_probabilities) + list(p.embedding)
    values += list(p.retrieval.scores)
    return all(math.isfinite(v) for v in values)


class Everything:
    """Every prediction the server publishes, from a subscriber to all sessions."""

    def __init__(self, channel):
        self.predictions: list[pb.Prediction] = []
        call = rpc.DecodingStub(channel).Subscribe(pb.SubscribeRequest())

        def read():
            try:
                for p in call:
                    self.predictions.append(p)
            except grpc.RpcError:
                pass

        threading.Thread(target=read, daemon=True).start()
        self.call = call


@pytest.fixture(scope="module")
def door():
    server = live.Server(myelin_bin())
    channel = grpc.insecure_channel(server.grpc, options=[("grpc.max_receive_message_length", 64 << 20)])
    everything = Everything(channel)
    healthy = Healthy(channel)
    baseline = rss_mib(server)
    yield server, channel, healthy
    healthy.assert_decoding()
    grown = rss_mib(server) - baseline
    healthy.stopped.set()
    bad = [p for p in everything.predictions if p.status == pb.PREDICTION_STATUS_OK and not finite(p)]
    everything.call.cancel()
    channel.close()
    server.stop()
    assert everything.predictions, "the subscriber to every session saw predictions"
    assert not bad, f"{len(bad)} predictions OK with a non-finite value, e.g. {bad[0]}"
    assert grown < 64, f"resident memory grew by {grown:.0f} MiB"


def signal(n: int, start: int = 0) -> np.ndarray:
    """A 10 Hz wave on a 500 uV electrode offset, 4 channels: the filters' transient after a
    disturbance is large, as on a real amplifier."""
    i = np.arange(start, start + n)[:, None]
    return (500.0 + 20.0 * np.sin(2 * np.pi * 10 * i / RATE + np.arange(4))).astype(np.float32)


def connect(channel, session: str, name: str, **fields):
    return rpc.DecodingStub(channel).ConnectLsl(pb.ConnectLslRequest(session_id=session, data_name=name, timeout_s=10, **fields))


def refusal(call) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def grpc_header_refusal(channel, header: pb.StreamHeader) -> tuple[grpc.StatusCode, str]:
    """What the gRPC door answers for the same header."""
    def call():
        for _ in rpc.IngestStub(channel).Stream(iter([pb.IngestRequest(header=header)]), timeout=10):
            pass

    return refusal(call)


def stream_through_lsl(channel, data: np.ndarray, tag: str):
    """Connects a pylsl outlet of `data` [n, 4] (128 Hz) as session `tag`, attaches
    fixture-linear (sliding 1 s windows every 0.25 s), pushes the data at 4x real time and
    returns (every prediction of the attachment, the session's listing)."""
    outlet = make_outlet(f"eeg-{tag}", "EEG", 4, RATE, pylsl.cf_float32, f"eeg-{tag}", QUIET)
    decoding = rpc.DecodingStub(channel)
    reply = connect(channel, tag, f"eeg-{tag}")
    assert [c.label for c in reply.header.channels] == QUIET and not reply.warnings
    attached = live.attach(decoding, pb.AttachRequest(session_id=tag, model_id="fixture-linear", latency_budget_ms=2000,
                                                      window=pb.WindowPolicy(sliding=pb.SlidingWindow(hop_s=HOP_S))))
    predictions: list[pb.Prediction] = []
    live.subscribe_into(decoding, pb, predictions, attachment_id=attached.attachment_id)
    time.sleep(0.5)  # the inlet's first clock estimate
    t0 = pylsl.local_clock()
    stamps = t0 + np.arange(len(data)) / RATE
    for begin in range(0, len(data), 16):
        end = min(begin + 16, len(data))
        time.sleep(max(0.0, t0 + (end - 1) / RATE / 4 - pylsl.local_clock()))
        outlet.push_chunk(data[begin:end].tolist(), stamps[begin:end].tolist())
    windows = int((len(data) / RATE - 1.0) / HOP_S) + 1
    deadline = time.monotonic() + 15
    while len(predictions) < windows and time.monotonic() < deadline:
        time.sleep(0.05)
    info = next(s for s in decoding.ListSessions(pb.ListSessionsRequest()).sessions if s.session_id == tag)
    del outlet  # the source ends, its session with it
    return predictions, info


def check_refused_span(predictions, bad: list[tuple[int, int]]) -> int:
    """Windows reading a refused span [a, b), or following it within the filter's settling time,
    are ERROR with the reason; every other window is OK. Returns the settling time (samples)."""
    reasons = [p.error_reason for p in predictions if p.status == pb.PREDICTION_STATUS_ERROR]
    settle = next(int(m.group(1)) for r in reasons if (m := SETTLING.search(r)))
    assert 64 <= settle <= 10 * RATE, settle
    for p in predictions:
        w = p.window
        affected = any(a <= w.last_sample_index and b + settle > w.first_sample_index for a, b in bad)
        if affected:
            assert p.status == pb.PREDICTION_STATUS_ERROR, p
            assert "non-finite values were not taken" in p.error_reason, p
            assert not p.HasField("classification"), p
        else:
            assert p.status == pb.PREDICTION_STATUS_OK and finite(p), p
    return settle


def test_a_single_nan_sample_is_refused_and_decoding_recovers_once_the_filter_settles(door):
    server, channel, healthy = door
    tag = f"nan1-{uuid.uuid4().hex[:6]}"
    data = signal(RATE * 16)
    data[6 * 128, 1] = np.nan  # lead-off on Cz for one sample
    predictions, info = stream_through_lsl(channel, data, tag)
    assert len(predictions) >= 55, len(predictions)
    settle = check_refused_span(predictions, [(768, 769)])
    # Recovered within the settling time: the first window wholly past it is OK.
    recovered = [p for p in predictions if p.window.first_sample_index >= 769 + settle]
    assert recovered and all(p.status == pb.PREDICTION_STATUS_OK for p in recovered)
    warning = next(w for w in info.warnings if w.kind == pb.INGEST_WARNING_KIND_NON_FINITE_REFUSED)
    assert (warning.sample_index, warning.count) == (768, 1), warning
    # The text an Ingest call ends with for the same chunk, on the gRPC door.
    code, details = grpc_nan_refusal(channel)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    same = re.sub(r"chunk at sample \d+: ", "", details)
    assert same in warning.message and warning.message.startswith("chunk at sample "), (details, warning.message)
    healthy.assert_decoding()


def grpc_nan_refusal(channel):
    header = pb.StreamHeader(session_id=f"grpc-nan-{uuid.uuid4().hex[:6]}", modality=pb.MODALITY_EEG, nominal_rate_hz=RATE,
                             channels=[pb.Channel(label=c) for c in QUIET])
    x = signal(16)
    x[0, 1] = np.nan
    chunk = pb.SampleChunk(first_sample_index=0, n_samples=16, samples=x.astype("<f4").tobytes(),
                           regular=pb.RegularTimestamps(first_seconds=1.0, rate_hz=RATE))

    def call():
        for _ in rpc.IngestStub(channel).Stream(iter([pb.IngestRequest(header=header), pb.IngestRequest(chunk=chunk)]), timeout=10):
            pass

    return refusal(call)


def test_a_two_second_nan_burst_from_lead_off_is_refused_and_decoding_resumes(door):
    server, channel, healthy = door
    tag = f"burst-{uuid.uuid4().hex[:6]}"
    data = signal(RATE * 20)
    data[6 * 128:8 * 128, 2] = np.nan
    predictions, info = stream_through_lsl(channel, data, tag)
    settle = check_refused_span(predictions, [(768, 1024)])
    after = sorted((p for p in predictions if p.window.first_sample_index >= 1024), key=lambda p: p.window.first_sample_index)
    first_ok = next(p for p in after if p.status == pb.PREDICTION_STATUS_OK)
    assert first_ok.window.first_sample_index <= 1024 + settle + HOP_S * RATE, (first_ok.window, settle)
    print(f"\nsettling time of fixture-linear at 128 Hz: {settle} samples ({settle / RATE:.2f} s); "
          f"first OK window after the burst starts {(first_ok.window.first_sample_index - 1024) / RATE:.2f} s after it")
    warning = next(w for w in info.warnings if w.kind == pb.INGEST_WARNING_KIND_NON_FINITE_REFUSED)
    assert (warning.sample_index, warning.count) == (768, 256)
    _, metrics = http_get(server, "/metrics")
    assert re.search(r'myelin_chunks_rejected_total\{reason="non_finite",door="lsl"\} [1-9]', metrics), metrics
    # The dashboard shows it on the session.
    shown = next(s for s in dashboard_update(server)["sessions"] if s["id"] == tag)
    assert ("non_finite_refused", 256) in [(w["kind"], w["count"]) for w in shown["warnings"]], shown["warnings"]
    healthy.assert_decoding()


def dashboard_update(server) -> dict:
    """The dashboard's first update, from its event stream."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://{server.http}/events", timeout=10) as events:
        for line in events:
            if line.startswith(b"data:"):
                return json.loads(line[5:])
    raise AssertionError("no update")


def test_infinities_are_refused_like_nan(door):
    server, channel, healthy = door
    tag = f"inf-{uuid.uuid4().hex[:6]}"
    data = signal(RATE * 20)
    data[4 * 128, 0] = np.inf
    data[12 * 128, 3] = -np.inf
    predictions, info = stream_through_lsl(channel, data, tag)
    check_refused_span(predictions, [(512, 513), (1536, 1537)])
    warning = next(w for w in info.warnings if w.kind == pb.INGEST_WARNING_KIND_NON_FINITE_REFUSED)
    assert (warning.sample_index, warning.count) == (512, 2), warning
    healthy.assert_decoding()


def http_get(server, path: str) -> tuple[int, str]:
    import urllib.request

    with urllib.request.urlopen(f"http://{server.http}{path}", timeout=10) as response:
        return response.status, response.read().decode()


HEADER_CASES = {
    # case: (channels, labels or None, rate, channel format)
    "2000 channels": (2000, [f"E{i}" for i in range(2000)], RATE, pylsl.cf_float32),
    "an irregular rate (0)": (4, QUIET, pylsl.IRREGULAR_RATE, pylsl.cf_float32),
    "a rate of 1e9 Hz": (4, QUIET, 1e9, pylsl.cf_float32),
    "a label over limits.label_bytes": (4, ["C3", "x" * 300, "C4", "Pz"], RATE, pylsl.cf_float32),
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_a_stream_over_the_header_rules_is_refused_with_the_grpc_doors_status_and_text(door, case):
    server, channel, healthy = door
    n, labels, rate, fmt = HEADER_CASES[case]
    tag = f"hdr-{uuid.uuid4().hex[:6]}"
    info = pylsl.StreamInfo(f"eeg-{tag}", "EEG", n, rate, fmt, f"eeg-{tag}")
    chns = info.desc().append_child("channels")
    for label in labels:
        chns.append_child("channel").append_child_value("label", label)
    outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=1)
    before = rss_mib(server)
    code, details = refusal(lambda: connect(channel, tag, f"eeg-{tag}"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    # The same header through the gRPC door: the same status and the same text.
    header = pb.StreamHeader(session_id=tag, stream_name=f"eeg-{tag}", modality=pb.MODALITY_EEG, nominal_rate_hz=rate,
                             channels=[pb.Channel(label=label, type="EEG") for label in labels])
    grpc_code, grpc_details = grpc_header_refusal(channel, header)
    assert grpc_code == code
    assert details == grpc_details, (details, grpc_details)
    assert len(details) < 300, details
    sessions = rpc.DecodingStub(channel).ListSessions(pb.ListSessionsRequest()).sessions
    assert tag not in {s.session_id for s in sessions}, "refused before a session opened"
    assert rss_mib(server) - before < 16, "refused before the inlet was opened (its buffer allocated)"
    del outlet
    healthy.assert_decoding()


def test_repeated_labels_are_refused_on_the_grpc_door_and_repaired_with_a_warning_on_the_lsl_door(door):
    """A client can fix its header; a device's LSL description often cannot be changed (three
    channels called "AUX"): the LSL door names them apart and says so, never silently."""
    server, channel, healthy = door
    tag = f"dup-{uuid.uuid4().hex[:6]}"
    labels = ["C3", "C3", "C4", "Pz"]
    outlet = make_outlet(f"eeg-{tag}", "EEG", 4, RATE, pylsl.cf_float32, f"eeg-{tag}", labels)
    reply = connect(channel, tag, f"eeg-{tag}")
    assert [c.label for c in reply.header.channels] == ["C3", "C3-2", "C4", "Pz"]
    [warning] = reply.warnings
    assert warning.kind == pb.INGEST_WARNING_KIND_HEADER_REPAIRED and warning.count == 1, warning
    info = next(s for s in rpc.DecodingStub(channel).ListSessions(pb.ListSessionsRequest()).sessions if s.session_id == tag)
    assert [w.kind for w in info.warnings] == [pb.INGEST_WARNING_KIND_HEADER_REPAIRED]
    header = pb.StreamHeader(session_id=f"g{tag}", modality=pb.MODALITY_EEG, nominal_rate_hz=RATE,
                             channels=[pb.Channel(label=label) for label in labels])
    code, details = grpc_header_refusal(channel, header)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details == 'header.channels: label "C3" is empty or repeated', details
    del outlet
    healthy.assert_decoding()


def test_a_stream_whose_rate_is_nan_cannot_be_described_and_is_refused(door):
    """liblsl cannot carry a NaN nominal rate: the outlet's description arrives unparseable
    (named "(invalid: stoi)", 0 channels). Refused as such, not as a stream of 0 channels."""
    server, channel, healthy = door
    tag = f"nanrate-{uuid.uuid4().hex[:6]}"
    outlet = make_outlet(f"eeg-{tag}", "EEG", 4, float("nan"), pylsl.cf_float32, f"eeg-{tag}", QUIET)
    code, details = refusal(lambda: connect(channel, tag, f"eeg-{tag}"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert "description cannot be read" in details and "NaN nominal rate" in details, details
    # The gRPC door refuses the NaN rate itself, by the rate rule.
    header = pb.StreamHeader(session_id=tag, modality=pb.MODALITY_EEG, nominal_rate_hz=float("nan"),
                             channels=[pb.Channel(label=c) for c in QUIET])
    grpc_code, grpc_details = grpc_header_refusal(channel, header)
    assert grpc_code == code and grpc_details.startswith("header.nominal_rate_hz must be > 0") and grpc_details.endswith("got NaN")
    del outlet
    healthy.assert_decoding()


def test_absurd_timestamps_from_an_outlet_are_not_a_gap_of_10_to_the_300_samples(door):
    """An outlet that stamps one sample 1e300 s and another NaN: the inlet thread survives, repairs
    both (not a gap of 10^300 samples it would have to skip, nor a timestamp every later one is
    held at), and the stream goes on."""
    server, channel, healthy = door
    tag = f"clock-{uuid.uuid4().hex[:6]}"
    outlet = make_outlet(f"eeg-{tag}", "EEG", 4, RATE, pylsl.cf_float32, f"eeg-{tag}", QUIET)
    connect(channel, tag, f"eeg-{tag}")
    time.sleep(0.5)
    t0 = pylsl.local_clock()
    data = signal(RATE * 3)
    stamps = list(t0 + np.arange(len(data)) / RATE)
    stamps[128], stamps[256] = 1e300, float("nan")
    for begin in range(0, len(data), 32):
        outlet.push_chunk(data[begin:begin + 32].tolist(), stamps[begin:begin + 32])
        time.sleep(0.05)
    decoding = rpc.DecodingStub(channel)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        info = next(s for s in decoding.ListSessions(pb.ListSessionsRequest()).sessions if s.session_id == tag)
        if info.samples_received >= len(data):
            break
        time.sleep(0.1)
    assert info.samples_received == len(data) and info.gap_samples == 0, info
    repaired = [w for w in info.warnings if w.kind == pb.INGEST_WARNING_KIND_TIMESTAMPS_REPAIRED]
    assert [w.count for w in repaired] == [2], info.warnings
    assert not info.source_error, info.source_error
    del outlet
    healthy.assert_decoding()


def test_a_string_stream_is_refused(door):
    server, channel, healthy = door
    tag = f"str-{uuid.uuid4().hex[:6]}"
    outlet = make_outlet(f"eeg-{tag}", "EEG", 4, RATE, pylsl.cf_string, f"eeg-{tag}", QUIET)
    code, details = refusal(lambda: connect(channel, tag, f"eeg-{tag}"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "carries strings; data streams must be numeric" in details, details
    del outlet
    healthy.assert_decoding()


def test_unlabelled_channels_are_named_with_a_warning_and_absurd_markers_are_dropped(door):
    server, channel, healthy = door
    tag = f"marks-{uuid.uuid4().hex[:6]}"
    outlet = make_outlet(f"eeg-{tag}", "EEG", 4, RATE, pylsl.cf_float32, f"eeg-{tag}")
    markers = make_outlet(f"mk-{tag}", "Markers", 1, 0, pylsl.cf_string, f"mk-{tag}")
    reply = connect(channel, tag, f"eeg-{tag}", marker_predicate=f"name='mk-{tag}'")
    assert [c.label for c in reply.header.channels] == ["Ch1", "Ch2", "Ch3", "Ch4"]
    assert [w.kind for w in reply.warnings] == [pb.INGEST_WARNING_KIND_HEADER_REPAIRED], reply.warnings
    time.sleep(0.5)
    t0 = pylsl.local_clock()
    outlet.push_chunk(signal(256).tolist(), (t0 + np.arange(256) / RATE).tolist())
    markers.push_sample(["x" * (4 << 20)], t0 + 0.5)  # a 4 MB label
    markers.push_sample(["2"], t0 + 1.0)
    decoding = rpc.DecodingStub(channel)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        info = next(s for s in decoding.ListSessions(pb.ListSessionsRequest()).sessions if s.session_id == tag)
        if info.markers_received and any(w.kind == pb.INGEST_WARNING_KIND_MARKER_REFUSED for w in info.warnings):
            break
        time.sleep(0.1)
    assert info.markers_received == 1, info
    refused = next(w for w in info.warnings if w.kind == pb.INGEST_WARNING_KIND_MARKER_REFUSED)
    assert "is over 256 bytes (limits.label_bytes)" in refused.message and len(refused.message) < 300, refused.message
    del outlet, markers
    healthy.assert_decoding()
