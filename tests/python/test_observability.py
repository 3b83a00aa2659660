"""The ops side with its real tools: Debian's promtool lints a live /metrics exposition and checks
deploy/prometheus/ (scrape config and alerting rules); every metric the Grafana dashboard and the
rules query is one the running server exports."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pylsl
import pytest

import myelin
from conftest import ROOT

PROMETHEUS = ROOT / "deploy/prometheus"
DASHBOARD = ROOT / "deploy/grafana/myelin-dashboard.json"
MUSE = ["TP9", "AF7", "AF8", "TP10"]


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: deploy/setup.sh installs Debian's prometheus package"
    return path


@pytest.fixture(scope="module")
def exposition(tmp_path_factory):
    """/metrics of a server that has decoded a gRPC stream and an LSL stream."""
    from common import live
    from conftest import myelin_bin

    # NATS configured but absent: its metrics are exported (at 0, disconnected) all the same.
    server = live.Server(myelin_bin(), env={"MYELIN_PUBLISH__NATS__URL": "nats://127.0.0.1:9"})
    tag = uuid.uuid4().hex[:8]
    try:
        info = pylsl.StreamInfo(f"obs-{tag}", "EEG", 4, 256.0, pylsl.cf_float32, f"obs-{tag}")
        channels = info.desc().append_child("channels")
        for label in MUSE:
            channels.append_child("channel").append_child_value("label", label)
        outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=60)
        rng = np.random.default_rng(7)
        with myelin.Client(server.grpc) as client:
            stream = client.open_session("observed", MUSE, rate=256)
            attached = client.attach("observed", "erp-linear-muse", hop_s=0.25, latency_budget_ms=1000)
            client.connect_lsl("observed-lsl", name=f"obs-{tag}", timeout=10)
            client.attach("observed-lsl", "erp-linear-muse", hop_s=0.5, latency_budget_ms=1000)
            predictions = client.subscribe(attachment=attached.attachment_id)
            for second in range(3):
                stream.push(rng.standard_normal((256, 4)))
                stream.marker(1 + second % 2)
                outlet.push_chunk(rng.standard_normal((256, 4)).astype(np.float32).tolist())
                time.sleep(1.0)
            got = 0
            for _ in predictions:
                got += 1
                if got >= 4:
                    break
            predictions.cancel()
            # A message a client gets wrong is counted by reason (myelin_chunks_rejected_total).
            import grpc
            from myelin.v1 import myelin_pb2 as pb
            from myelin.v1 import myelin_pb2_grpc as rpc
            with grpc.insecure_channel(server.grpc) as channel:
                with pytest.raises(grpc.RpcError):
                    list(rpc.IngestStub(channel).Stream(iter([pb.IngestRequest(chunk=pb.SampleChunk())])))
            # The LSL inlet measures its clock offset on its first samples; give it a moment.
            deadline = time.monotonic() + 10
            text = ""
            while time.monotonic() < deadline:
                outlet.push_chunk(rng.standard_normal((64, 4)).astype(np.float32).tolist())
                text = urllib.request.urlopen(f"http://{server.http}/metrics", timeout=10).read().decode()
                if "myelin_lsl_clock_offset_seconds{" in text:
                    break
                time.sleep(0.25)
            stream.close()
        yield text
    finally:
        server.stop()


def test_the_live_exposition_passes_promtool(exposition):
    assert "myelin_server_latency_seconds_bucket" in exposition
    checked = subprocess.run([promtool(), "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_prometheus_config_and_rules_pass_promtool(tmp_path):
    from conftest import myelin_bin

    rules = subprocess.run([promtool(), "check", "rules", str(PROMETHEUS / "myelin-rules.yml")],
                           capture_output=True, text=True, timeout=60)
    assert rules.returncode == 0 and "SUCCESS" in rules.stdout, rules.stdout + rules.stderr
    # The full check (files included): the secured job's CA and token files made here.
    work = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS, work)
    certs = tmp_path / "certs"
    subprocess.run([str(Path(myelin_bin()).with_name("myelin-test-certs")), str(certs)], check=True, stdout=subprocess.DEVNULL)
    (tmp_path / "observe.token").write_text("myelin_" + "0" * 64 + "\n")
    text = (work / "prometheus.yml").read_text()
    text = text.replace("/etc/myelin/tls/ca.pem", str(certs / "ca.pem")).replace("/etc/prometheus/myelin-observe.token", str(tmp_path / "observe.token"))
    (work / "prometheus.yml").write_text(text)
    config = subprocess.run([promtool(), "check", "config", str(work / "prometheus.yml")], capture_output=True, text=True, timeout=60)
    assert config.returncode == 0 and "SUCCESS" in config.stdout + config.stderr, config.stdout + config.stderr


def exported(exposition: str) -> set[str]:
    return {line.split()[2] for line in exposition.splitlines() if line.startswith("# TYPE ")}


def queried(expr: str) -> set[str]:
    names = set(re.findall(r"\bmyelin_[a-z0-9_]+", expr))
    # A histogram's series are its name with _bucket, _sum and _count.
    return {re.sub(r"_(bucket|sum|count)$", "", n) if re.search(r"seconds_(bucket|sum|count)$|batch_size_(bucket|sum|count)$", n) else n
            for n in names}


def test_every_dashboard_and_alert_query_names_an_exported_metric(exposition):
    have = exported(exposition)
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"], "an empty dashboard"
    wanted: dict[str, str] = {}
    for panel in dashboard["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            for name in queried(target["expr"]):
                wanted[name] = f"dashboard panel {panel['title']!r}"
    rules = (PROMETHEUS / "myelin-rules.yml").read_text()
    for expr in re.findall(r"expr: (.+)", rules):
        for name in queried(expr):
            wanted[name] = "alerting rule"
    missing = {name: where for name, where in wanted.items() if name not in have}
    assert not missing, f"queried but not exported: {missing}"
    assert len(wanted) >= 15, sorted(wanted)
