"""NATS fan-out with real peers: Debian's nats-server, a nats-py subscriber, the server's gRPC
Subscribe beside it. Every prediction reaches both alike; a NATS outage costs NATS consumers
only (counted), never the gRPC subscriber's timing; delivery resumes when NATS is back."""
from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest

import myelin
from common import live
from conftest import myelin_bin
from myelin.v1 import myelin_pb2 as pb

MUSE = ["TP9", "AF7", "AF8", "TP10"]
RATE = 256.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nats:
    def __init__(self, port: int, store: str | None = None):
        binary = shutil.which("nats-server")
        assert binary, "nats-server not found: deploy/setup.sh installs Debian's nats-server package"
        args = [binary, "-a", "127.0.0.1", "-p", str(port)]
        if store:
            args += ["-js", "-sd", store]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("nats-server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


class NatsSubscriber:
    """nats-py on its own event loop thread, collecting (subject, Prediction)."""

    def __init__(self, url: str, subject: str, parse=pb.Prediction.FromString):
        import nats

        self.received: list[tuple[str, object]] = []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def run():
            self.nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)

            async def on_message(message):
                self.received.append((message.subject, parse(message.data)))

            await self.nc.subscribe(subject, cb=on_message)
            await self.nc.flush()
            ready.set()

        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=10)
        assert ready.wait(10)

    def close(self):
        asyncio.run_coroutine_threadsafe(self.nc.close(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def metric(http: str, name: str, label: str = "") -> float:
    text = urllib.request.urlopen(f"http://{http}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and label in line and not line.startswith("#"))


def push_for(stream, seconds: float, rng):
    """`seconds` of 4-channel EEG at 256 Hz, in real time, 32 samples a chunk."""
    chunk = 32
    started = time.monotonic()
    for k in range(int(seconds * RATE / chunk)):
        time.sleep(max(0.0, started + (k + 1) * chunk / RATE - time.monotonic()))
        stream.push(rng.standard_normal((chunk, 4)))


def wait_for(predicate, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def test_nats_gets_every_prediction_and_an_outage_costs_only_nats(tmp_path):
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    nats_server = Nats(port)
    server = live.Server(myelin_bin(), env={"MYELIN_PUBLISH__NATS__URL": url, "MYELIN_PUBLISH__NATS__JSON": "true"})
    subscriber = NatsSubscriber(url, "myelin.predictions.>")
    rng = np.random.default_rng(3)
    try:
        wait_for(lambda: metric(server.http, "myelin_nats_connected") == 1.0, "myelin never connected to NATS")
        with myelin.Client(server.grpc) as client:
            stream = client.open_session("nats.rig", MUSE, rate=RATE)
            attached = client.attach("nats.rig", "erp-linear-muse", hop_s=0.25, latency_budget_ms=100)
            grpc_seen: list = []
            subscription = client.subscribe(attachment=attached.attachment_id)
            reader = threading.Thread(target=lambda: [grpc_seen.append(p) for p in subscription], daemon=True)
            reader.start()
            time.sleep(0.3)

            # 1. Both consumers get the same predictions, NATS on the documented subject.
            push_for(stream, 4.0, rng)
            stream.wait_acknowledged()
            wait_for(lambda: len(subscriber.received) >= len(grpc_seen) > 10, "NATS fell behind gRPC")
            # A "." in an id is written %2E, the attachment id's too (it ends in "@nats.rig").
            subject = f"myelin.predictions.nats%2Erig.{attached.attachment_id.replace('.', '%2E')}"
            assert {s for s, _ in subscriber.received} == {subject}
            nats_by_sequence = {p.sequence: p for _, p in subscriber.received}
            for p in grpc_seen:
                twin = nats_by_sequence[p.sequence]  # every gRPC prediction came over NATS too, equal
                assert twin.attachment_id == p.attachment_id and twin.session_id == "nats.rig"
                assert list(twin.classification.probabilities) == pytest.approx(list(p.probabilities), abs=1e-7)
                assert twin.window.last_sample_index == p.window.last_index
            assert metric(server.http, "myelin_nats_published_total") >= len(grpc_seen)

            # 2. NATS goes away: gRPC predictions stay on time, NATS's losses are counted.
            nats_server.stop()
            before_outage = len(grpc_seen)
            push_for(stream, 3.0, rng)
            stream.wait_acknowledged()
            wait_for(lambda: len(grpc_seen) >= before_outage + 10, "gRPC predictions stopped during the NATS outage")
            during = grpc_seen[before_outage:]
            assert all(p.status == "ok" and p.timing.budget_met for p in during), [(p.status, p.timing.server_latency) for p in during]
            wait_for(lambda: metric(server.http, "myelin_nats_dropped_total", 'reason="disconnected"') > 0,
                     "no NATS drops counted during the outage")
            assert metric(server.http, "myelin_nats_connected") == 0.0

            # 3. NATS is back: delivery resumes for both myelin and the subscriber.
            nats_server = Nats(port)
            wait_for(lambda: metric(server.http, "myelin_nats_connected") == 1.0, "myelin did not reconnect to NATS")
            time.sleep(1.0)  # nats-py reconnects on its own schedule
            received_before = len(subscriber.received)
            push_for(stream, 3.0, rng)
            stream.wait_acknowledged()
            wait_for(lambda: len(subscriber.received) >= received_before + 8, "NATS delivery did not resume")
            subscription.cancel()
            stream.close()
    finally:
        subscriber.close()
        server.stop()
        nats_server.stop()


def test_json_copies_and_a_jetstream_stream_keep_predictions_for_late_consumers(tmp_path):
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    nats_server = Nats(port, store=str(tmp_path / "jetstream"))
    server = live.Server(myelin_bin(), env={"MYELIN_PUBLISH__NATS__URL": url, "MYELIN_PUBLISH__NATS__JSON": "true",
                                              "MYELIN_PUBLISH__NATS__JETSTREAM_STREAM": "MYELIN"})
    json_subscriber = NatsSubscriber(url, "myelin.predictions-json.>", parse=json.loads)
    rng = np.random.default_rng(4)
    try:
        wait_for(lambda: metric(server.http, "myelin_nats_connected") == 1.0, "myelin never connected to NATS")
        async def stream_exists() -> bool:
            import nats
            nc = await nats.connect(url)
            try:
                await nc.jetstream().stream_info("MYELIN")
                return True
            except Exception:  # noqa: BLE001 - not there yet
                return False
            finally:
                await nc.close()

        # The server creates the stream in the background once connected.
        wait_for(lambda: asyncio.run(stream_exists()), "the JetStream stream was never created")
        with myelin.Client(server.grpc) as client:
            stream = client.open_session("kept", MUSE, rate=RATE)
            client.attach("kept", "erp-linear-muse", hop_s=0.5, latency_budget_ms=100)
            push_for(stream, 3.0, rng)
            stream.wait_acknowledged()
            time.sleep(0.5)
            stream.close()
        published = metric(server.http, "myelin_nats_published_total")
        assert published >= 4

        async def replay():
            import nats
            nc = await nats.connect(url)
            js = nc.jetstream()
            info = await js.stream_info("MYELIN")
            consumer = await js.pull_subscribe("myelin.predictions.>", durable="late-reader", stream="MYELIN")
            messages = await consumer.fetch(int(info.state.messages), timeout=5)
            await nc.close()
            return info.state.messages, [pb.Prediction.FromString(m.data) for m in messages]

        stored, replayed = asyncio.run(replay())
        assert stored == published and len(replayed) == stored
        assert [p.sequence for p in replayed] == sorted(p.sequence for p in replayed)
        wait_for(lambda: len(json_subscriber.received) >= published, "JSON copies missing")
        assert {body["session"] for _, body in json_subscriber.received} == {"kept"}
    finally:
        json_subscriber.close()
        server.stop()
        nats_server.stop()
