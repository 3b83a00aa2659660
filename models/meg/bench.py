"""MEG brain module and in-graph gallery search with ONNX Runtime (the runtime the server uses).

    .venv/bin/python models/meg/bench.py                   # CPU
    deploy/gpu-bench.sh                                    # the same on CUDA, where a GPU exists

1. Decode: the bundled brain module at batch 1 (275 sensors x 180 samples + positions + mask),
   p50/p99 per window.
2. Exact gallery search on the model's device: a two-node ONNX graph (MatMul of the gallery
   [N, 768] with the query, then TopK 5) with the gallery resident on the device (IOBinding), for
   N = 10 k, 100 k, 1 M; time per query and the GB/s it reads. The server's own CPU search
   (faer, and HNSW) is benchmarked by `myelin-bench gallery`.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

HERE = Path(__file__).resolve().parent
DIM = 768


def search_graph(k: int = 5) -> bytes:
    nodes = [
        helper.make_node("MatMul", ["gallery", "query_t"], ["scores2d"]),
        helper.make_node("Reshape", ["scores2d", "flat"], ["scores"]),
        helper.make_node("TopK", ["scores", "k"], ["top_scores", "top_ids"], largest=1, sorted=1),
    ]
    graph = helper.make_graph(
        nodes, "gallery_topk",
        [helper.make_tensor_value_info("gallery", TensorProto.FLOAT, ["n", DIM]),
         helper.make_tensor_value_info("query_t", TensorProto.FLOAT, [DIM, 1])],
        [helper.make_tensor_value_info("top_scores", TensorProto.FLOAT, [k]),
         helper.make_tensor_value_info("top_ids", TensorProto.INT64, [k])],
        initializer=[helper.make_tensor("flat", TensorProto.INT64, [1], [-1]), helper.make_tensor("k", TensorProto.INT64, [1], [k])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def timed(run, seconds: float):
    for _ in range(3):
        run()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 10:
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return np.percentile(times, 50), np.percentile(times, 99), len(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=HERE / "meg-brain-synthetic.onnx")
    parser.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (the server's default is 1)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max-entries", type=int, default=1_000_000)
    args = parser.parse_args()
    providers = ["CUDAExecutionProvider"] if args.provider == "cuda" else ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    device = "cuda" if args.provider == "cuda" else "cpu"

    session = ort.InferenceSession(str(args.model), options, providers=providers)
    assert session.get_providers()[0] == providers[0], f"{providers[0]} did not load: {session.get_providers()}"
    rng = np.random.default_rng(0)
    feeds = {"meg": rng.standard_normal((1, 275, 180)).astype(np.float32),
             "positions": rng.uniform(0, 1, (1, 275, 2)).astype(np.float32),
             "mask": np.ones((1, 275), np.float32)}
    p50, p99, n = timed(lambda: session.run(["embedding"], feeds), args.seconds)
    print(f"brain module ({args.model.name}) on {args.provider}, {args.threads} intra-op thread(s), batch 1: "
          f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms ({n} runs)")

    search = ort.InferenceSession(search_graph(), options, providers=providers)
    print(f"exact top-5 search in an ONNX graph on {args.provider} (gallery resident on the device):")
    print(f"{'entries':>9} {'MB':>7} {'p50 (ms)':>9} {'p99 (ms)':>9} {'GB/s':>7}")
    for n_entries in [n for n in (10_000, 100_000, 1_000_000) if n <= args.max_entries]:
        gallery = rng.standard_normal((n_entries, DIM), dtype=np.float32)
        gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
        binding = search.io_binding()
        binding.bind_ortvalue_input("gallery", ort.OrtValue.ortvalue_from_numpy(gallery, device, 0))
        query = gallery[123:124].T.copy() + 0.01
        binding.bind_cpu_input("query_t", query)
        binding.bind_output("top_scores")
        binding.bind_output("top_ids")

        def run():
            search.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()

        assert run()[1][0] == 123, "the planted item comes first"
        p50, p99, _ = timed(run, args.seconds)
        print(f"{n_entries:>9} {gallery.nbytes / 1e6:>7.0f} {p50 * 1e3:>9.3f} {p99 * 1e3:>9.3f} {gallery.nbytes / p50 / 1e9:>7.1f}")
        del binding, gallery


if __name__ == "__main__":
    main()
