"""Reading and writing model cards (TOML) from the model scripts."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(float(v)) if isinstance(v, float) else str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):  # inside a list: an inline table (e.g. preprocessing.filters)
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items() if x is not None) + " }"
    raise TypeError(f"cannot write {type(v)} to TOML")


def dumps(card: dict) -> str:
    """A small TOML writer for the card's shape: scalars first, then [tables] (nested)."""
    lines: list[str] = []

    def emit(table: dict, prefix: str):
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in table.items() if isinstance(v, dict)}
        if prefix and (scalars or not tables):
            lines.append(f"\n[{prefix}]")
        for k, v in scalars.items():
            if v is None:
                continue
            lines.append(f"{k} = {_value(v)}")
        for k, v in tables.items():
            emit(v, f"{prefix}.{k}" if prefix else k)

    emit(card, "")
    return "\n".join(lines).lstrip("\n") + "\n"


def write(path: Path, card: dict, header: str = "") -> None:
    text = dumps(card)
    tomllib.loads(text)  # refuse to write something we cannot read back
    path.write_text((header + "\n" if header else "") + text)


def read(path: Path) -> dict:
    return tomllib.loads(Path(path).read_text())
