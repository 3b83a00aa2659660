"""Leave-one-session-out evaluation of the ERP decoders through the running server.

    .venv/bin/python models/erp-eval/evaluate.py            # builds target/release/myelin if needed

For each fold (train on one session of a subject, test on the subject's other session):
  * the native decoders, fitted in the server by live calibration (Decoding.Calibrate, every
    epoch of the training session as it streams in): xDAWN + shrinkage LDA, and xDAWN
    covariances + Riemannian tangent space + logistic regression;
  * the ONNX models trained offline on that session: the ERP benchmark's TemporalSpatialConv,
    EEGInception, EEGConformer and ERPFeatures + linear (models/erp-benchmark/train.py, five
    seeds each; the two large networks on a reduced training budget), and the small
    EEGNet-style networks mini-eegnet and mini-eegnet-wide (models/erp-deep/train.py);
then the test session is streamed into the server with all of them attached to one stream,
and the metrics are computed from the predictions a subscriber received. Nothing served is
scored offline. Beside them, computed here by this script on the same epochs the native
decoders see (the erp-linear-muse card's windows, from models/common/preprocess.py): pyRiemann's
XdawnCovariances + TangentSpace + LogisticRegression, the pipeline the served decoders are
compared against.

Metrics: AUC (ROC), balanced accuracy, and the ERP benchmark's accuracy, macro-F1 and AUPRC
(the mean of both classes' average precision), at the argmax of the probabilities; for the
five-seed models, mean +- sd over seeds.

Writes models/erp-eval/results.md (the tables) and the served_* metrics into the ONNX models'
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
from pyriemann.estimation import XdawnCovariances
from pyriemann.tangentspace import TangentSpace
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, average_precision_score, f1_score
from sklearn.pipeline import make_pipeline

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "models"))
from common import cards, live, p300, preprocess  # noqa: E402

DATA = ROOT / "models/data/p300"
MODEL_ROOTS = [ROOT / "models", ROOT / "evaluation-models"]
FOLDS = [("subject1_session1", "subject1_session2"), ("subject1_session2", "subject1_session1"),
         ("subject2_session1", "subject2_session2"), ("subject2_session2", "subject2_session1")]
MINI = ["mini-eegnet", "mini-eegnet-wide"]
BENCHMARK = ["tsconv", "eeginception", "eegconformer", "erpfeatures"]
SEEDS = [41, 42, 43, 44, 45]
NAMES = {"tsconv": "TemporalSpatialConv (benchmark EEGNet)", "eeginception": "EEGInception (benchmark, reduced budget)",
         "eegconformer": "EEGConformer (benchmark, reduced budget)", "erpfeatures": "ERPFeatures + linear (benchmark)"}
NATIVE = {"xdawn_lda": "xDAWN + LDA (native, calibrated live)",
          "xdawn_riemann": "xDAWN cov. + tangent space + LR (native, calibrated live)"}
PYRIEMANN = "pyRiemann XdawnCov + TS + LR (offline, this script)"


def read_session(prefix: str):
    return p300.read_session(DATA, prefix)


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


def metrics(scores, labels) -> dict:
    """The benchmark's sample-level metrics (argmax of two probabilities = p(target) > 0.5) and AUC."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=int)
    pred = (scores > 0.5).astype(int)
    auprc = (average_precision_score(labels, scores) + average_precision_score(1 - labels, 1 - scores)) / 2
    return dict(auc=auc(scores, labels.astype(bool)), bacc=balanced_accuracy(scores, labels), acc=accuracy_score(labels, pred),
                f1=f1_score(labels, pred, average="macro", zero_division=0), auprc=float(auprc))


def twin_epochs(card: dict, channels, x, codes):
    """The card's model inputs for every complete event-locked epoch, and their labels."""
    idx = [channels.index(c) for c in card["channels"]]
    filtered = preprocess.filter_stream(x[:, idx], preprocess.card_sos(card, p300.RATE))
    offset = int(round(card["window"]["tmin_s"] * p300.RATE))
    reach = preprocess.window_reach(card, p300.RATE)
    onsets = [i for i in np.flatnonzero((codes == 1) | (codes == 2)) if i + offset >= 0 and i + offset + reach <= len(x)]
    windows = np.stack([preprocess.window_from_filtered(filtered, i + offset, card, p300.RATE) for i in onsets])
    return windows.astype(np.float64), codes[onsets] == 2


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
    # The bundled models and the evaluation-only ones (the large benchmark networks, which a
    # default server does not load), side by side in one models directory.
    served = Path(tempfile.mkdtemp(prefix="myelin-evaluated-models-"))
    for folder in MODEL_ROOTS:
        (served / folder.name).symlink_to(folder, target_is_directory=True)
    server = live.Server(binary, env={"MYELIN_MODELS__DIR": str(served), "MYELIN_MODELS__CALIBRATIONS_DIR": calibrations,
                                      "MYELIN_PUBLISH__SUBSCRIBER_QUEUE": "65536", "MYELIN_MODELS__QUEUE_DEPTH": "4096"})
    base_card = cards.read(ROOT / "models/erp-linear/erp-linear-muse.card.toml")
    rows, calibrations = [], []
    try:
        with live.channel(server.grpc) as channel:
            decoding = rpc.DecodingStub(channel)
            locked = pb.WindowPolicy(event_locked=pb.EventLockedWindow(marker_codes=[1, 2]))
            for train, test in FOLDS:
                print(f"fold: train {train} -> test {test}", file=sys.stderr, flush=True)
                # 1. Native decoders: fitted in the server on the live training stream, one
                #    calibration per decoder (each on its own attachment).
                channels, x, ts, codes = read_session(train)
                session = f"train-{train}"
                ingest = live.Ingest(pb, rpc, channel, live.header(pb, session, channels, 256.0))
                calibrating = {}
                for kind in NATIVE:
                    base = live.attach(decoding, pb.AttachRequest(session_id=session, model_id="erp-linear-muse", window=locked,
                                                                  latency_budget_ms=1000))
                    calibrating[kind] = decoding.Calibrate(pb.CalibrateRequest(
                        attachment_id=base.attachment_id, target_codes=[2], non_target_codes=[1], max_epochs=100000,
                        model_id=f"{kind.replace('_', '-')}-{train.replace('_', '-')}", keep_current_model=True, decoder=kind))
                time.sleep(0.5)
                live.stream_recording(ingest, x, ts, codes)
                ingest.wait_acknowledged()
                ingest.close()  # the stream ends: each calibration fits on every epoch it collected
                fitted = {}
                for kind, progress in calibrating.items():
                    for update in progress:
                        if update.HasField("result"):
                            fitted[kind] = update.result
                    r = fitted[kind]
                    print(f"  calibrated {r.model_id} v{r.model_version} ({r.decoder}): {r.epochs} epochs, "
                          f"CV AUC {r.cv_auc:.3f}, fit {r.fit_seconds:.2f} s", file=sys.stderr, flush=True)
                    calibrations.append(dict(train=train, decoder=NATIVE[kind], epochs=r.epochs, folds=r.folds,
                                             cv_auc=r.cv_auc, cv_bacc=r.cv_balanced_accuracy))
                # pyRiemann, offline on the same epochs the native decoders were fitted on.
                train_x, train_y = twin_epochs(base_card, channels, x, codes)
                # Solved to convergence, as the server solves it (and as test_riemann.py compares).
                pipeline = make_pipeline(XdawnCovariances(nfilter=2), TangentSpace(metric="riemann"),
                                         LogisticRegression(tol=1e-12, max_iter=100000))
                pipeline.fit(train_x, train_y)

                # 2. Test session: every served decoder attached to the same live stream.
                channels, x, ts, codes = read_session(test)
                test_x, test_y = twin_epochs(base_card, channels, x, codes)
                rows.append(dict(train=train, test=test, decoder=PYRIEMANN, seed=None, epochs=len(test_y), targets=int(test_y.sum()),
                                 model=None, **metrics(pipeline.predict_proba(test_x)[:, 1], test_y)))
                session = f"test-{test}-from-{train}"
                ingest = live.Ingest(pb, rpc, channel, live.header(pb, session, channels, 256.0))
                decoders = {}
                for kind, r in fitted.items():
                    decoders[(NATIVE[kind], None)] = (r.model_id, r.model_version)
                for arch in BENCHMARK:
                    for seed in SEEDS:
                        decoders[(NAMES[arch], seed)] = (f"erp-{arch}-{train.replace('_', '-')}-s{seed}", "")
                for arch in MINI:
                    decoders[(f"{arch} (ONNX)", None)] = (f"erp-{arch}-{train.replace('_', '-')}", "")
                attachments = {}
                for name, (model_id, version) in decoders.items():
                    reply = live.attach(decoding, pb.AttachRequest(session_id=session, model_id=model_id, model_version=version,
                                                                   window=locked, latency_budget_ms=10000))
                    attachments[reply.attachment_id] = name
                got: list = []
                subscription = live.subscribe_into(decoding, pb, got, session_id=session)
                time.sleep(0.2)
                live.stream_recording(ingest, x, ts, codes)
                ingest.wait_acknowledged()
                n_events = int(((codes == 1) | (codes == 2)).sum())
                wait_quiet(got, len(attachments) * (n_events - 2), timeout=300)
                time.sleep(0.5)
                subscription.cancel()
                ingest.close()
                for attachment_id, (name, seed) in attachments.items():
                    preds = [p for p in got if p.attachment_id == attachment_id and p.status in (pb.PREDICTION_STATUS_OK, pb.PREDICTION_STATUS_LATE)]
                    scores = [p.classification.probabilities[1] for p in preds]
                    labels = [p.trigger.code == 2 for p in preds]
                    rows.append(dict(train=train, test=test, decoder=name, seed=seed, epochs=len(preds), targets=int(sum(labels)),
                                     model=decoders[(name, seed)][0], **metrics(scores, labels)))
                for r in rows:
                    if r["train"] == train and r["seed"] in (None, SEEDS[0]):
                        print(f"  {r['decoder']:<58} {r['epochs']} epochs  AUC {r['auc']:.3f}  BA {r['bacc']:.3f}", file=sys.stderr, flush=True)
    finally:
        server.stop()
    write_results(rows, calibrations)


def write_results(rows: list[dict], calibrations: list[dict]):
    lines = ["## Every decoder, every fold", "",
             "Five-seed models: mean +- sd (population, ddof 0) over seeds 41-45. Accuracy and macro-F1 at the argmax of "
             "the probabilities; AUC and AUPRC need no threshold.", "",
             "| train session | held-out session | decoder | epochs (targets) | AUC | balanced accuracy | accuracy | macro-F1 | AUPRC |",
             "|---|---|---|---|---|---|---|---|---|"]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["train"], r["test"], r["decoder"]), []).append(r)

    def cell(values, seeded):
        return f"{np.mean(values):.3f} +- {np.std(values):.3f}" if seeded else f"{values[0]:.3f}"

    for (train, test, decoder), group in groups.items():
        seeded = group[0]["seed"] is not None
        lines.append(f"| {train} | {test} | {decoder} | {group[0]['epochs']} ({group[0]['targets']}) | "
                     + " | ".join(cell([g[k] for g in group], seeded) for k in ("auc", "bacc", "acc", "f1", "auprc")) + " |")
    means: dict = {}
    for (train, test, decoder), group in groups.items():
        means.setdefault(decoder, []).append(np.mean([g["auc"] for g in group]))
    lines += ["", "Mean AUC over the four held-out sessions: " + "; ".join(f"{k} {np.mean(v):.3f}" for k, v in means.items()) + "."]
    best_served = {}
    for (train, test, decoder), group in groups.items():
        if decoder != PYRIEMANN:
            best_served.setdefault((train, test), []).append((np.mean([g["auc"] for g in group]), decoder))
    lines += ["", "| held-out session | best served decoder | its AUC | pyRiemann (offline) AUC | served above pyRiemann |", "|---|---|---|---|---|"]
    for (train, test), candidates in best_served.items():
        top, name = max(candidates)
        reference = groups[(train, test, PYRIEMANN)][0]["auc"]
        lines.append(f"| {test} (trained on {train}) | {name} | {top:.3f} | {reference:.3f} | {'yes' if top > reference else 'no'} |")
    lines += ["", "The best served decoder is the highest held-out AUC among all the served decoders: a choice made "
              "after seeing the held-out session, so optimistic; on subject 2 every decoder is near or below chance.",
              "", "## Live calibration on each training session", "",
              "Cross-validated inside the server (stratified, contiguous blocks in time), on the epochs the calibration "
              "collected from the training session's stream.", "",
              "| training session | native decoder | epochs | folds | CV AUC | CV balanced accuracy |", "|---|---|---|---|---|---|"]
    lines += [f"| {c['train']} | {c['decoder']} | {c['epochs']} | {c['folds']} | {c['cv_auc']:.3f} | {c['cv_bacc']:.3f} |"
              for c in calibrations]
    table = "\n".join(lines)
    print(table)
    (HERE / "results.md").write_text(
        "# ERP decoders, leave one session out, measured through the live server\n\n"
        "Produced by `.venv/bin/python models/erp-eval/evaluate.py` (chance AUC = 0.5). Each row: the decoder is "
        "trained (or calibrated live) on the first session and scored from the predictions a subscriber received "
        "while the held-out session streamed into the server; the pyRiemann rows are computed by the same script "
        "offline, on the same epochs the native decoders see (the erp-linear-muse card's windows: causal 1-12 Hz "
        "band-pass, 32 Hz, [-0.125, 0.75) s). Epoch counts are those served: a session streams as one recording, its "
        "runs back to back, so they can differ by one from the training scripts, which cut each run on its own.\n\n"
        + table + "\n")
    for r in rows:
        if r["model"] and "(native" not in r["decoder"]:
            card = next(path for root in MODEL_ROOTS for path in root.glob(f"**/{r['model']}.card.toml"))
            update_card(card, {f"served_auc_{r['test']}": round(r["auc"], 4),
                               f"served_balanced_accuracy_{r['test']}": round(r["bacc"], 4),
                               f"served_macro_f1_{r['test']}": round(r["f1"], 4),
                               f"served_auprc_{r['test']}": round(r["auprc"], 4)})


if __name__ == "__main__":
    main()
