"""Resuming a subscription (SubscribeRequest.after_sequence) on one server, from a grpcio client
generated from proto/: what a subscriber that reconnects gets, and every bad use refused with
its status."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from common import live, p300
from conftest import pb, rpc

ROOT = Path(__file__).resolve().parents[2]
RUN = p300.runs(ROOT / "models/data/p300", "subject1_session2")[0]
RATE = int(p300.RATE)


def decoding_session(channel, session: str):
    """A Decoding stub, an Ingest call opening `session` (P300 channels) and an ERP attachment
    to it, made with the generated stubs alone."""
    decoding = rpc.DecodingStub(channel)
    ingest = live.Ingest(pb, rpc, channel, live.header(pb, session, p300.CHANNELS, RATE))
    attached = live.attach(decoding, pb.AttachRequest(session_id=session, model_id="erp-linear-muse", latency_budget_ms=2000,
                                                      window=pb.WindowPolicy(event_locked=pb.EventLockedWindow(marker_codes=[1, 2]))))
    return decoding, ingest, attached


@pytest.fixture
def decoded(server):
    """A session that decoded 20 s of a P300 run (about 80 windows), its attachment, the
    predictions a live subscriber got, and a Decoding stub."""
    channel = grpc.insecure_channel(server.grpc)
    data, codes, stamps, _ = p300.read_run(RUN, p300.CHANNELS)
    n = 20 * RATE
    decoding, ingest, attached = decoding_session(channel, "resume")
    seen: list = []
    live.subscribe_into(decoding, pb, seen, attachment_id=attached.attachment_id)
    time.sleep(0.3)
    live.stream_recording(ingest, data[:n], stamps[:n], codes[:n])
    ingest.wait_acknowledged()
    expected = int(np.count_nonzero(codes[: n - RATE]))
    deadline = time.monotonic() + 20
    while len(seen) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(seen) >= expected
    yield decoding, attached.attachment_id, seen
    ingest.close()
    channel.close()


def replay(decoding, **request) -> list:
    """What a Subscribe sends within a second (its replay, and anything live)."""
    got: list = []
    call = decoding.Subscribe(pb.SubscribeRequest(**request), timeout=1.0)
    try:
        for p in call:
            got.append(p)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    return got


def test_a_subscriber_that_resumes_gets_what_it_missed_then_the_live_stream(decoded):
    decoding, attachment, seen = decoded
    sequences = [p.sequence for p in seen]
    assert sequences == list(range(len(seen)))
    # Resuming after the 10th: the rest, in order, equal to what the live subscriber got.
    resumed = replay(decoding, attachment_id=attachment, after_sequence=9)
    assert [p.sequence for p in resumed] == sequences[10:]
    assert [p.SerializeToString() for p in resumed] == [p.SerializeToString() for p in seen[10:]]
    # After the last one: nothing replayed. Numbers far past it (2^64 - 1): nothing either.
    assert replay(decoding, attachment_id=attachment, after_sequence=sequences[-1]) == []
    assert replay(decoding, attachment_id=attachment, after_sequence=2**64 - 1) == []
    # Before the first: all of them (fewer than publish.replay_predictions were published).
    assert [p.sequence for p in replay(decoding, attachment_id=attachment, after_sequence=0)] == sequences[1:]


def test_a_resumed_stream_goes_on_live_without_a_hole_or_a_repeat(server):
    """A subscriber breaks off mid-stream and resumes after the last number it read while
    windows keep being decoded: it gets every prediction exactly once."""
    channel = grpc.insecure_channel(server.grpc)
    data, codes, stamps, _ = p300.read_run(RUN, p300.CHANNELS)
    n = 30 * RATE
    decoding, ingest, attached = decoding_session(channel, "resume-live")
    pushing = threading.Thread(target=lambda: [live.stream_recording(ingest, data[i:i + RATE], stamps[i:i + RATE], codes[i:i + RATE])
                                               or time.sleep(0.05) for i in range(0, n, RATE)])
    got: list = []
    first = decoding.Subscribe(pb.SubscribeRequest(attachment_id=attached.attachment_id))
    pushing.start()
    for p in first:
        got.append(p)
        if len(got) == 25:
            first.cancel()
            break
    time.sleep(0.3)  # predictions go on being published meanwhile
    second = decoding.Subscribe(pb.SubscribeRequest(attachment_id=attached.attachment_id, after_sequence=got[-1].sequence))
    expected = int(np.count_nonzero(codes[: n - RATE]))
    def read():
        try:
            for p in second:
                got.append(p)
        except grpc.RpcError:
            pass  # cancelled at the end

    threading.Thread(target=read, daemon=True).start()
    pushing.join(60)
    ingest.wait_acknowledged()
    deadline = time.monotonic() + 20
    while len(got) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    second.cancel()
    ingest.close()
    channel.close()
    assert [p.sequence for p in got[:expected]] == list(range(expected)), [p.sequence for p in got][:40]


@pytest.mark.parametrize("request_fields, code", [
    ({"session_id": "resume", "after_sequence": 3}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"after_sequence": 3}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"attachment_id": "att-00@resume", "after_sequence": 3}, grpc.StatusCode.NOT_FOUND),
    ({"attachment_id": "x" * 4096, "after_sequence": 0}, grpc.StatusCode.NOT_FOUND),
])
def test_resuming_without_an_attachment_or_with_an_unknown_one_is_refused(decoded, request_fields, code):
    decoding, _, _ = decoded
    with pytest.raises(grpc.RpcError) as refused:
        list(decoding.Subscribe(pb.SubscribeRequest(**request_fields), timeout=5))
    assert refused.value.code() == code, refused.value.details()
