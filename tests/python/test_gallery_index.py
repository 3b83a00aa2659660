"""Approximate galleries built ahead of time: `myelin gallery build FILE` builds the HNSW graph
with progress and saves it beside the gallery; Attach with the HNSW index loads the saved graph
(and retrieves what exact search retrieves), refuses it once the gallery or its ids changed, and
refuses a large gallery whose graph was never built, naming the command that builds it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

import myelin
from common import live
from conftest import myelin_bin

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "models/meg"))
import simulator as sim  # noqa: E402

DIM = 768


def build(path: Path):
    return subprocess.run([myelin_bin(), "gallery", "build", str(path), "--threads", "2"], capture_output=True, text=True, timeout=600)


@pytest.fixture
def galleries(tmp_path):
    directory = tmp_path / "galleries"
    directory.mkdir()
    rng = np.random.default_rng(5)
    items = rng.standard_normal((5_000, DIM)).astype(np.float16)
    np.save(directory / "items.npy", items)
    (directory / "items.npy.ids").write_text("".join(f"item-{i}\n" for i in range(len(items))))
    return directory


def attach_to_meg(server, session: str, gallery: str, index: str):
    with myelin.Client(server.grpc) as client:
        stream = client.open_session(session, sim.CHANNELS, rate=sim.RATE, modality="meg", units="femtotesla",
                                     stream_name="simulated-meg", layouts=sim.POSITIONS)
        try:
            return client.attach(session, "meg-brain-synthetic", marker_codes=[1], gallery=gallery, gallery_index=index, top_k=5)
        finally:
            stream.close()


def test_a_gallery_built_ahead_of_time_loads_at_attach_and_a_changed_one_is_refused(galleries):
    built = build(galleries / "items.npy")
    assert built.returncode == 0, built.stderr
    # Progress while it builds (a line every 5 % when stderr is not a terminal), then the summary.
    lines = [line for line in built.stderr.splitlines() if line.startswith("built ")]
    assert lines[-1].startswith("built 100 % (5000/5000 items"), built.stderr
    assert lines[0].startswith("built 0 % (0/5000 items"), built.stderr
    assert "saved " in built.stderr and "5000 items, dimension 768" in built.stderr
    stamp = json.loads((galleries / "items.npy.hnsw.json").read_text())
    assert stamp["items"] == 5_000 and stamp["dim"] == DIM and len(stamp["gallery_sha256"]) == 64
    assert (galleries / "items.npy.hnsw").stat().st_size > 0

    log_path = galleries.parent / "server.log"
    log_file = open(log_path, "w")
    server = live.Server(myelin_bin(), env={"MYELIN_MODELS__GALLERIES_DIR": str(galleries), "RUST_LOG": "info"}, stderr=log_file)
    try:
        reply = attach_to_meg(server, "saved", "items.npy", "hnsw")
        assert reply.gallery_items == 5_000
        # The ids file changes: the saved graph no longer vouches for the gallery.
        ids = (galleries / "items.npy.ids").read_text().splitlines()
        ids[0], ids[1] = ids[1], ids[0]
        (galleries / "items.npy.ids").write_text("\n".join(ids) + "\n")
        with pytest.raises(myelin.MyelinError) as refused:
            attach_to_meg(server, "stale", "items.npy", "hnsw")
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "stale" in refused.value.details and "myelin gallery build" in refused.value.details
        # Exact search needs no graph and still works.
        assert attach_to_meg(server, "exact", "items.npy", "exact").gallery_items == 5_000
        # Rebuilt, it loads again.
        assert build(galleries / "items.npy").returncode == 0
        assert attach_to_meg(server, "rebuilt", "items.npy", "hnsw").gallery_items == 5_000
    finally:
        server.stop()
        log_file.close()
    log = log_path.read_text()
    assert log.count("saved HNSW graph loaded") == 2, "the first and the rebuilt graph were loaded, not built"
    assert "building the HNSW graph" not in log


def test_a_large_gallery_without_a_saved_graph_is_refused_with_the_command(tmp_path):
    directory = tmp_path / "galleries"
    directory.mkdir()
    # Just above the size Attach still builds a graph for, at the MEG model's 768 dimensions.
    big = np.lib.format.open_memmap(directory / "large768.npy", mode="w+", dtype=np.float16, shape=(100_001, DIM))
    big[:, 0] = 1.0
    big.flush()
    del big
    server = live.Server(myelin_bin(), env={"MYELIN_MODELS__GALLERIES_DIR": str(directory)})
    try:
        with pytest.raises(myelin.MyelinError) as refused:
            attach_to_meg(server, "large", "large768.npy", "hnsw")
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "100001 items" in refused.value.details and "myelin gallery build" in refused.value.details
    finally:
        server.stop()
