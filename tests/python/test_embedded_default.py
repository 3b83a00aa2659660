"""The embedded default (`myelin` with no arguments, what deploy/run.sh runs) shows all three
decoders working: the real Muse EEG replay through the ERP model, synthetic sEEG through Du-IN
and synthetic CTF-275 MEG through the brain module with its gallery. Read from the outside: the
terminal lines a newcomer sees, and a gRPC subscriber to everything."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter

import grpc
from myelin.v1 import myelin_pb2 as pb
from myelin.v1 import myelin_pb2_grpc as rpc

from conftest import ROOT, myelin_bin

MODELS = {"demo": "erp-linear-muse", "demo-seeg-synthetic": "duin-synthetic", "demo-meg-synthetic": "meg-brain-synthetic"}


def test_the_embedded_default_decodes_with_all_three_decoders(tmp_path):
    env = dict(os.environ, MYELIN_SERVER__GRPC_ADDR="127.0.0.1:0", MYELIN_SERVER__HTTP_ADDR="127.0.0.1:0",
               MYELIN_MODELS__GALLERIES_DIR=str(tmp_path / "galleries"), RUST_LOG="warn")
    proc = subprocess.Popen([myelin_bin()], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("myelin ready "):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(60), "the server never said it was ready"
        fields = dict(kv.split("=", 1) for kv in next(l for l in lines if l.startswith("myelin ready ")).split()[2:])
        seen: list[pb.Prediction] = []
        with grpc.insecure_channel(fields["grpc"]) as channel:
            everything = rpc.DecodingStub(channel).Subscribe(pb.SubscribeRequest())

            def collect():
                try:
                    for p in everything:
                        seen.append(p)
                except grpc.RpcError:
                    pass  # cancelled below

            threading.Thread(target=collect, daemon=True).start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not all(sum(1 for p in seen if p.session_id == s) >= 2 for s in MODELS):
                time.sleep(0.2)
            everything.cancel()
            sessions = {s.session_id: s for s in rpc.DecodingStub(channel).ListSessions(pb.ListSessionsRequest()).sessions}
        by_session = Counter(p.session_id for p in seen)
        assert all(by_session[s] >= 2 for s in MODELS), by_session
        for p in seen:
            assert p.model_id == MODELS[p.session_id] and p.status == pb.PREDICTION_STATUS_OK, (p.session_id, p.status, p.error_reason)
        meg = [p for p in seen if p.session_id == "demo-meg-synthetic"]
        assert all(len(p.retrieval.ids) == 3 and p.retrieval.ids[0].startswith("img0") for p in meg)
        seeg = [p for p in seen if p.session_id == "demo-seeg-synthetic"]
        assert all(p.classification.top_labels[0].startswith("word") for p in seeg)
        # Synthetic streams say so, in the session and on every line; the real one says real.
        assert sessions["demo-seeg-synthetic"].header.modality == pb.MODALITY_SEEG
        assert sessions["demo-meg-synthetic"].header.modality == pb.MODALITY_MEG
        announced = [l for l in lines if l.startswith("demo: ")]
        assert len(announced) == 3, announced
        assert sum("SYNTHETIC" in l for l in announced) == 2 and sum("real)" in l for l in announced) == 1, announced
        printed = Counter(l.split()[0] for l in lines if l.split() and l.split()[0] in MODELS)
        assert all(printed[s] >= 1 for s in MODELS), printed
        assert all("(truth: " in l for l in lines if l.split() and l.split()[0] in MODELS)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
