"""Extracts the CTF-275 sensor layout from the MNE wheel into `ctf275_layout.json`.

The layout file (`mne/channels/data/layouts/CTF275.lay`, BSD-3, MNE-Python) gives each of
the 275 axial gradiometers of the CTF system a 2-D position on a flattened helmet. Myelin's MEG
streams carry these positions in `Channel.layout`, and the brain module takes them as an input.
We store the box centre (lower-left corner + half its width/height), in the file's own units.

    .venv-train/bin/python models/meg/layout.py      # needs mne (models/meg/requirements.txt)
"""
from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).with_name("ctf275_layout.json")


def main() -> None:
    import mne

    layout = mne.channels.read_layout("CTF275")
    centres = layout.pos[:, :2] + layout.pos[:, 2:4] / 2
    OUT.write_text(json.dumps({
        "source": f"mne {mne.__version__}: mne/channels/data/layouts/CTF275.lay (BSD-3-Clause, MNE-Python)",
        "names": list(layout.names),
        "positions": [[round(float(x), 6), round(float(y), 6)] for x, y in centres],
    }, indent=1))
    print(f"{len(layout.names)} sensors -> {OUT}")


def load() -> tuple[list[str], "np.ndarray"]:
    """(sensor names, positions [275, 2]) from the bundled JSON (no mne needed)."""
    import numpy as np

    data = json.loads(OUT.read_text())
    return data["names"], np.asarray(data["positions"], dtype=np.float64)


if __name__ == "__main__":
    main()
