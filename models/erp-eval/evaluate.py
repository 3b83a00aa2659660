"""Leave-one-session-out evaluation of the ERP decoders through the running server.

    .venv/bin/python models/erp-eval/evaluate.py            # builds target/release/myelin if needed

For each fold (train on one session of a subject, test on the subject's other session):
  * native xDAWN + shrinkage LDA: the training session is streamed into the server and the
    decoder is fitted there by live calibration (Decoding.Calibrate, every epoch of the session);
  * erp-eegnet and erp-eegnet-wide: the ONNX models trained offline on that session
    (models/erp-deep/train.py);
then the test session is streamed into the server with all of them attached to one stream,
and AUC and balanced accuracy are computed from the predictions received by a subscriber.
Nothing is scored offline: every number comes from the live server path.

Writes models/erp-eval/results.md (the table) and the served_* metrics into the deep models'
cards. A per-stimulus-repetition score does not apply: these recordings carry only the class
codes (target / non-target), not which stimulus was shown, so there is nothing to average over.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "models"))
from common import live, p300  # noqa: E402

DATA = ROOT / "models/data/p300"
FOLDS = [("subject1_session1", "subject1_session2"), ("subject1_session2", "subject1_session1"),
         ("subject2_session1", "subject2_session2"), ("subject2_session2", "subject2_session1")]
DEEP = ["eegnet", "eegnet-wide"]


def read_session(prefix: str):
    """All runs of a session on one continuous clock (1 s between runs)."""
    parts, codes, stamps = [], [], []
    next_start = None
    channels = None
    for path in p300.runs(DATA, prefix):
        data, markers, ts, channels = p300.read_run(path)
        if next_start is None:
            next_start = ts[0]
        ts = ts - ts[0] + next_start
        next_start = ts[-1] + 1.0
        parts.append(data)
        stamps.append(ts)
        codes.append(markers)
    return channels, np.concatenate(parts), np.concatenate(stamps), np.concatenate(codes)


def auc(scores, labels) -> float:
    scores, labels = np.asarray(scores), np.asarray(labels, dtype=bool)
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for s in np.unique(scores):  # mid-ranks for ties
        tie = scores == s
        ranks[tie] = ranks[tie].mean()
    n1, n0 = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def balanced_accuracy(scores, labels) -> float:
    scores, labels = np.asarray(scores), np.asarray(labels, dtype=bool)
    return float(((scores[labels] > 0.5).mean() + (scores[~labels] <= 0.5).mean()) / 2)


def wait_quiet(items: list, expected: int, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline and len(items) < expected:
        time.sleep(0.05)


def update_card(path: Path, metrics: dict[str, float]):
    text = path.read_text()
    for key, value in metrics.items():
        line = f"{key} = {value!r}"
        if re.search(rf"^{re.escape(key)} = .*$", text, flags=re.M):
            text = re.sub(rf"^{re.escape(key)} = .*$", line, text, flags=re.M)
        else:
            text = text.replace("[provenance.metrics]\n", f"[provenance.metrics]\n{line}\n", 1)
    path.write_text(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-binary", default=None, help="default: build and use target/release/myelin")
    args = parser.parse_args()
    binary = args.server_binary
    if binary is None:
        print("building target/release/myelin ...", file=sys.stderr, flush=True)
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "myelin"], cwd=ROOT, check=True)
        binary = str(ROOT / "target/release/myelin")
    pb, rpc = live.load_stubs(Path(tempfile.mkdtemp(prefix="myelin-stubs-")))
    calibrations = tempfile.mkdtemp(prefix="myelin-calibrations-")
    server = live.Server(binary, env={"MYELIN_MODELS__CALIBRATIONS_DIR": calibrations, "MYELIN_PUBLISH__SUBSCRIBER_QUEUE": "8192"})
    rows = []
    try:
        with live.channel(server.grpc) as channel:
            decoding = rpc.DecodingStub(channel)
            locked = pb.WindowPolicy(event_locked=pb.EventLockedWindow(marker_codes=[1, 2]))
            for train, test in FOLDS:
                print(f"fold: train {train} -> test {test}", file=sys.stderr, flush=True)
                # 1. Native decoder: fitted in the server on the live training stream.
                channels, x, ts, codes = read_session(train)
                session = f"train-{train}"
                ingest = live.Ingest(pb, rpc, channel, live.header(pb, session, channels, 256.0))
                base = live.attach(decoding, pb.AttachRequest(session_id=session, model_id="erp-linear-muse", window=locked,
                                                              latency_budget_ms=1000))
                progress = decoding.Calibrate(pb.CalibrateRequest(
                    attachment_id=base.attachment_id, target_codes=[2], non_target_codes=[1], max_epochs=100000,
                    model_id=f"xdawn-{train.replace('_', '-')}", keep_current_model=True))
                live.stream_recording(ingest, x, ts, codes)
                ingest.wait_acknowledged()
                ingest.close()  # the stream ends: calibration fits on every epoch it collected
                result = None
                for update in progress:
                    if update.HasField("result"):
                        result = update.result
                print(f"  calibrated {result.model_id} v{result.model_version}: {result.epochs} epochs, "
                      f"CV AUC {result.cv_auc:.3f}, fit {result.fit_seconds:.2f} s", file=sys.stderr, flush=True)

                # 2. Test session: every decoder attached to the same live stream.
                channels, x, ts, codes = read_session(test)
                session = f"test-{test}-from-{train}"
                ingest = live.Ingest(pb, rpc, channel, live.header(pb, session, channels, 256.0))
                decoders = {"xDAWN + LDA (native, calibrated live)": (result.model_id, result.model_version)}
                for arch in DEEP:
                    decoders[f"{arch} (ONNX)"] = (f"erp-{arch}-{train.replace('_', '-')}", "")
                attachments = {}
                for name, (model_id, version) in decoders.items():
                    reply = live.attach(decoding, pb.AttachRequest(session_id=session, model_id=model_id, model_version=version,
                                                                   window=locked, latency_budget_ms=1000))
                    attachments[reply.attachment_id] = name
                got: list = []
                subscription = live.subscribe_into(decoding, pb, got, session_id=session)
                time.sleep(0.2)
                live.stream_recording(ingest, x, ts, codes)
                ingest.wait_acknowledged()
                n_events = int(((codes == 1) | (codes == 2)).sum())
                wait_quiet(got, len(attachments) * (n_events - 1))
                time.sleep(0.5)
                subscription.cancel()
                ingest.close()
                for attachment_id, name in attachments.items():
                    preds = [p for p in got if p.attachment_id == attachment_id and p.status in (pb.PREDICTION_STATUS_OK, pb.PREDICTION_STATUS_LATE)]
                    scores = [p.classification.probabilities[1] for p in preds]
                    labels = [p.trigger.code == 2 for p in preds]
                    rows.append(dict(train=train, test=test, decoder=name, epochs=len(preds), targets=int(sum(labels)),
                                     auc=auc(scores, labels), bacc=balanced_accuracy(scores, labels),
                                     model=decoders[name][0]))
                    print(f"  {name:<40} {len(preds)} epochs  AUC {rows[-1]['auc']:.3f}  BA {rows[-1]['bacc']:.3f}",
                          file=sys.stderr, flush=True)
    finally:
        server.stop()

    lines = ["| train session | held-out session | decoder | epochs (targets) | AUC | balanced accuracy |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['train']} | {r['test']} | {r['decoder']} | {r['epochs']} ({r['targets']}) | {r['auc']:.3f} | {r['bacc']:.3f} |")
    means = {}
    for r in rows:
        means.setdefault(r["decoder"], []).append(r["auc"])
    lines.append("")
    lines.append("Mean AUC over the four held-out sessions: " + "; ".join(f"{k} {np.mean(v):.3f}" for k, v in means.items()) + ".")
    table = "\n".join(lines)
    print(table)
    (HERE / "results.md").write_text(
        "# ERP decoders, leave one session out, measured through the live server\n\n"
        "Produced by `.venv/bin/python models/erp-eval/evaluate.py` (chance AUC = 0.5). Each row: the decoder is "
        "trained (or calibrated live) on the first session and scored from the predictions a subscriber received "
        "while the held-out session streamed into the server.\n\n" + table + "\n")
    for r in rows:
        if "(ONNX)" in r["decoder"]:
            card = ROOT / "models/erp-deep" / f"{r['model']}.card.toml"
            update_card(card, {f"served_auc_{r['test']}": round(r["auc"], 4),
                               f"served_balanced_accuracy_{r['test']}": round(r["bacc"], 4)})


if __name__ == "__main__":
    main()
