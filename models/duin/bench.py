"""Du-IN decode latency with ONNX Runtime (the runtime and version the server uses).

    .venv/bin/python models/duin/bench.py                       # CPU
    deploy/gpu-bench.sh                                         # CUDA, where a GPU exists

Reports, per batch size, the time of one run (p50/p99) and the time per window, the best batch
size (lowest time per window), and the model's size.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=HERE / "duin-synthetic-s01.onnx")
    parser.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (the server's default is 1)")
    parser.add_argument("--batches", default="1,2,4,8,16,32")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per batch size")
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if args.provider == "cuda" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(args.model), options, providers=providers)
    used = session.get_providers()[0]
    if args.provider == "cuda" and used != "CUDAExecutionProvider":
        raise SystemExit(f"CUDA requested but ONNX Runtime runs on {used}")
    shape = session.get_inputs()[0].shape  # [batch, T, C]
    card_metrics = {}
    card = args.model.with_suffix("").as_posix() + ".card.toml"
    if Path(card).exists():
        import tomllib
        card_metrics = tomllib.loads(Path(card).read_text())["provenance"]["metrics"]
    print(f"Du-IN {args.model.name}: {int(card_metrics.get('parameters', 0)):,} parameters, "
          f"{args.model.stat().st_size / 1e6:.1f} MB ONNX; input {shape[1]} x {shape[2]}; {used}, {args.threads} intra-op thread(s)")
    print(f"{'batch':>5} {'p50 ms/run':>11} {'p99 ms/run':>11} {'ms/window':>10} {'windows/s':>10}")
    rng = np.random.default_rng(0)
    best = None
    results = []
    for batch in [int(b) for b in args.batches.split(",")]:
        x = rng.standard_normal((batch, shape[1], shape[2])).astype(np.float32)
        for _ in range(3):
            session.run(None, {"window": x})
        times = []
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds or len(times) < 10:
            t = time.perf_counter()
            session.run(None, {"window": x})
            times.append((time.perf_counter() - t) * 1e3)
        p50, p99 = np.percentile(times, 50), np.percentile(times, 99)
        per_window = p50 / batch
        results.append({"batch": batch, "p50_ms": p50, "p99_ms": p99, "ms_per_window": per_window})
        print(f"{batch:>5} {p50:>11.2f} {p99:>11.2f} {per_window:>10.2f} {1000 / per_window:>10.0f}")
        if best is None or per_window < best[1]:
            best = (batch, per_window)
    print(f"best batch size: {best[0]} ({best[1]:.2f} ms per window)")
    print(json.dumps({"provider": used, "threads": args.threads, "results": results}))


if __name__ == "__main__":
    main()
