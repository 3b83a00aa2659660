"""Scores the embedded default's prediction lines against the truth each line carries.

    MYELIN_DEMO__SPEED=4 timeout 18 target/release/myelin | .venv/bin/python models/demo/score_demo.py

demo (ERP): the predicted class against target / non-target; demo-seeg-synthetic (Du-IN): the
top-1 word against the spoken one; demo-meg-synthetic: whether the shown image is in the top 3.
"""
from __future__ import annotations

import re
import sys


def main():
    hits: dict[str, list[int]] = {}
    for line in sys.stdin:
        parts = line.split()
        truth = re.search(r"\(truth: ([^)]+)\)", line)
        if not parts or not truth or parts[0] not in ("demo", "demo-seeg-synthetic", "demo-meg-synthetic"):
            continue
        session, truth = parts[0], truth.group(1)
        if session == "demo-meg-synthetic":
            top = re.search(r"top \[([^\]]+)\]", line).group(1).split()
            hit = truth in [t.split(":")[0] for t in top]
        elif session == "demo-seeg-synthetic":
            hit = parts[4] == truth
        else:
            hit = (parts[4] == "target") == (truth == "target")
        hits.setdefault(session, []).append(hit)
    for session, got in sorted(hits.items()):
        print(f"{session}: {sum(got)} of {len(got)} right")


if __name__ == "__main__":
    main()
