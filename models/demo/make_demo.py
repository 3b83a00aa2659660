"""The embedded default's synthetic streams (labelled synthetic wherever they are shown):
simulated sEEG for Du-IN and simulated CTF-275 MEG with a gallery for the brain module, from the
same simulators the bundled models were trained with, with seeds and items the models never saw.

    .venv/bin/python models/demo/make_demo.py

Writes, next to this file:
  seeg-synthetic.npy.gz      [n, 10] float16 sEEG at 1000 Hz (models/duin/synthetic.py, subject
                             seed 0 = the model's subject s01, stream seed 7: trained on 1, tested on 2)
  seeg-synthetic.events.csv  onset sample, marker code (word number, 1-based) per spoken word
  meg-synthetic.npy.gz       [n, 275] float16 MEG at 120 Hz in femtotesla (models/meg/simulator.py,
                             subject 0, stream seed 7, images 1600-1623: never in training, 0-1599)
  meg-synthetic.events.csv   onset sample, image index per image onset (marker code 1)
  meg-gallery.npy            [100, 768] float16 image embeddings of images 1600-1699
  meg-gallery.npy.ids        their ids, one per line
The server embeds these files (server/src/demo/) and replays them in a loop.
"""
from __future__ import annotations

import gzip
import io
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "models/duin"))
sys.path.insert(0, str(ROOT / "models/meg"))
import simulator as meg  # noqa: E402
import synthetic as seeg  # noqa: E402

GALLERY = list(range(1600, 1700))
SHOWN = GALLERY[:24]
SEED = 7


def save_gz(path: Path, array: np.ndarray):
    buffer = io.BytesIO()
    np.save(buffer, array)
    path.write_bytes(gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0))


def main():
    x, events = seeg.Subject(subject_seed=0).stream(n_trials=16, seed=SEED)
    save_gz(HERE / "seeg-synthetic.npy.gz", x.astype(np.float16))
    (HERE / "seeg-synthetic.events.csv").write_text("".join(f"{onset},{word + 1}\n" for onset, word in events))

    world = meg.World()
    y, shown = meg.Subject(subject_seed=0).stream(world, SHOWN, seed=SEED)
    save_gz(HERE / "meg-synthetic.npy.gz", y.astype(np.float16))
    (HERE / "meg-synthetic.events.csv").write_text("".join(f"{onset},{image}\n" for onset, image in shown))
    np.save(HERE / "meg-gallery.npy", world.embeddings[GALLERY].astype(np.float16))
    (HERE / "meg-gallery.npy.ids").write_text("".join(world.ids[i] + "\n" for i in GALLERY))
    print(f"sEEG {x.shape} with {len(events)} words; MEG {y.shape} with {len(shown)} images; gallery {len(GALLERY)}")


if __name__ == "__main__":
    main()
