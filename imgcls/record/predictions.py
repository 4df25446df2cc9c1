"""predictions_*.csv and RUN/val*/predictions.csv: one row per image with the probability of every class."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from .files import atomic_write_text


def write_predictions_csv(path: Path, rel_paths: list[str], y_true, probs, class_names: list[str]) -> None:
    """path, true, predicted, confidence and p_<class> for every class."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "true", "predicted", "confidence", *[f"p_{c}" for c in class_names]])
    for rel, true, p in zip(rel_paths, y_true, probs):
        pred = int(np.argmax(p))
        writer.writerow([rel, class_names[int(true)], class_names[pred], f"{p[pred]:.6f}", *[f"{x:.6f}" for x in p]])
    atomic_write_text(path, buffer.getvalue())


def read_predictions_csv(path: Path, class_names: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """(true labels, probabilities, image paths) of a predictions CSV; None when it is missing or empty."""
    path = Path(path)
    if not path.exists():
        return None
    index = {c: i for i, c in enumerate(class_names)}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    y_true = np.array([index[r["true"]] for r in rows], dtype=np.int64)
    probs = np.array([[float(r[f"p_{c}"]) for c in class_names] for r in rows], dtype=np.float64)
    return y_true, probs.reshape(len(rows), len(class_names)), [r["path"] for r in rows]
