"""The experiment's progress files: the metrics table (CSV), its plot (PNG) and the state (JSON).

One CSV row per epoch with the columns of the original: ``epoch``, ``learning rate``, the
training and validation metrics (``training loss``, ``validation accuracy`` ...), the averaged
selection metric when averaging, the difficult patch ratio when boosting, and the GPU (inside
``update``/``validate``) and wall times of both epochs. Every file is written under a temporary
name and renamed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` to ``path`` under a temporary name, then rename."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(temporary, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
        f.write(data)
    os.replace(temporary, target)


def write_json(path: str | os.PathLike[str], document: Mapping[str, Any]) -> None:
    """Write a JSON document atomically (sorted keys, indented)."""
    write_atomic(path, json.dumps(document, indent=2, sort_keys=True) + "\n")


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a progress CSV (empty when the file does not exist)."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Write the progress CSV: the union of the rows' columns, in first-seen order."""
    columns: list[str] = []
    for row in rows:
        for name in row:
            if name not in columns:
                columns.append(name)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({name: _format(row.get(name, "")) for name in columns})
    write_atomic(path, buffer.getvalue())


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return value


def plot_rows(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], metric: str) -> None:
    """Plot losses, accuracies, the selection metric and the difficult ratio per epoch (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [int(row["epoch"]) for row in rows]
    figure, axis = plt.subplots(figsize=(12, 6), dpi=100)
    shown = [
        name
        for name in rows[0]
        if name.startswith(("training ", "validation ", "averaged ", "difficult"))
        and not name.endswith("time")
    ] if rows else []  # fmt: skip
    for name in shown:
        values = [_number(row.get(name)) for row in rows]
        style = "-" if name != metric else "-o"
        axis.plot(epochs, values, style, label=name, linewidth=2.5 if name == metric else 1.2)
    axis.set_xlabel("epoch")
    axis.set_ylim(0.0, max(1.0, *(v for n in shown for v in map(_number, (r.get(n) for r in rows))
                                   if v == v)) if shown else 1.0)  # fmt: skip
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize="small")
    axis.set_title(f"selection metric: {metric}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    write_atomic(path, buffer.getvalue())


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
