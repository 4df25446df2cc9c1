"""The two kinds of predictions file, each with its own name and columns.

- ``predictions_<split>.csv`` of an evaluation (RUN/ after train, RUN/val*/ after ``imgcls val``): the labelled
  images of a split, with the true class and the probability of every class.
- ``predictions.csv`` and ``predictions.json`` of ``imgcls predict`` (runs/predict*/): any images, with the top-k
  classes, the ``--reject`` verdict and the error of a file that could not be read. A multi-label model's have
  the labels present instead of the top-k (in the CSV, one ``labels`` column joined by ``;``) and the probability
  of every label (``p_<label>`` columns).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from .files import atomic_write_text


def write_predictions_csv(path: Path, rel_paths: list[str], y_true, probs, class_names: list[str],
                          thresholds=None) -> None:
    """path, true, predicted, confidence and p_<class> for every class. A multi-label model's (``thresholds``, one
    per label): path, true (its labels joined by ";"), labels (the labels present at the thresholds, joined by ";")
    and p_<label> for every label."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if thresholds is not None:
        from ..metrics import labels_present

        joined = (lambda row: ";".join(c for c, on in zip(class_names, row) if on))
        writer.writerow(["path", "true", "labels", *[f"p_{c}" for c in class_names]])
        for rel, true, p, present in zip(rel_paths, np.asarray(y_true) > 0.5, probs, labels_present(probs, thresholds)):
            writer.writerow([rel, joined(true), joined(present), *[f"{x:.6f}" for x in p]])
        atomic_write_text(path, buffer.getvalue())
        return
    writer.writerow(["path", "true", "predicted", "confidence", *[f"p_{c}" for c in class_names]])
    for rel, true, p in zip(rel_paths, y_true, probs):
        pred = int(np.argmax(p))
        writer.writerow([rel, class_names[int(true)], class_names[pred], f"{p[pred]:.6f}", *[f"{x:.6f}" for x in p]])
    atomic_write_text(path, buffer.getvalue())


def read_predictions_csv(path: Path, class_names: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """(true labels, probabilities, image paths) of a predictions CSV (multi-label: (N, labels) 0/1 true labels);
    None when it is missing or empty."""
    path = Path(path)
    if not path.exists():
        return None
    index = {c: i for i, c in enumerate(class_names)}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    if "labels" in rows[0] and "predicted" not in rows[0]:  # multi-label: (N, labels) 0/1 true labels
        y_true = np.zeros((len(rows), len(class_names)), dtype=np.int64)
        for i, r in enumerate(rows):
            y_true[i, [index[c] for c in r["true"].split(";") if c]] = 1
    else:
        y_true = np.array([index[r["true"]] for r in rows], dtype=np.int64)
    probs = np.array([[float(r[f"p_{c}"]) for c in class_names] for r in rows], dtype=np.float64)
    return y_true, probs.reshape(len(rows), len(class_names)), [r["path"] for r in rows]


LABEL_SEPARATOR = ";"  # joins a multi-label answer's labels in predictions.csv's labels column


def predict_columns(topk: int, reject: bool = False, labels: list[str] | None = None) -> list[str]:
    """The columns of ``imgcls predict``'s predictions.csv; with ``labels`` (a multi-label model's), the labels
    present and a probability column for each label instead of the top-k."""
    rejection = ["unknown", "score"] if reject else []
    if labels is not None:
        return ["path", "labels", *[f"p_{c}" for c in labels], *rejection, "error"]
    extra = [name for i in range(2, topk + 1) for name in (f"top{i}", f"top{i}_confidence")]
    return ["path", "predicted", "confidence", *extra, *rejection, "error"]


def predict_row(entry: dict, topk: int, reject: bool = False, labels: list[str] | None = None) -> list[str]:
    """One predictions.csv row of one predictions.json entry (deploy/predict.Prediction.to_dict)."""
    ok = entry["error"] is None
    rejection = ([str(entry["unknown"]).lower(), f"{entry['score']:.6f}"] if ok else ["", ""]) if reject else []
    if labels is not None:
        probability = entry["probabilities"]
        if not ok:
            return [entry["path"], "", *[""] * len(labels), *rejection, entry["error"]]
        return [entry["path"], LABEL_SEPARATOR.join(entry["labels"]), *[f"{probability[c]:.6f}" for c in labels],
                *rejection, ""]
    ranked, extra = entry["topk"], []
    for i in range(1, topk):
        extra += [ranked[i]["class"], f"{ranked[i]['probability']:.6f}"] if i < len(ranked) else ["", ""]
    extra += rejection
    if not ok:
        return [entry["path"], "", "", *extra, entry["error"]]
    return [entry["path"], entry["predicted"], f"{entry['confidence']:.6f}", *extra, ""]


class PredictionsWriter:
    """``imgcls predict``'s predictions.csv and predictions.json, written as each result arrives (``labels``: a
    multi-label model's, whose rows give the labels present and every label's probability).

    predictions.json is one object: run details (``header``), then "predictions" (one entry per image, in the
    CSV's order), then "summary". Rows are flushed every batch, so an interrupted run keeps a valid CSV.
    """

    def __init__(self, out_dir: Path, header: dict, topk: int, reject: bool = False,
                 labels: list[str] | None = None):
        self.topk, self.reject, self.labels = topk, reject, labels
        self._csv_file = open(out_dir / "predictions.csv", "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._csv_file, lineterminator="\n")
        self._csv.writerow(predict_columns(topk, reject, labels))
        self._json = open(out_dir / "predictions.json", "w", encoding="utf-8")
        self._json.write("{\n" + "".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},\n"
                                          for k, v in header.items()) + '  "predictions": [')
        self._first = True

    def write(self, entry: dict) -> None:
        self._csv.writerow(predict_row(entry, self.topk, self.reject, self.labels))
        self._json.write(("\n    " if self._first else ",\n    ") + json.dumps(entry, ensure_ascii=False))
        self._first = False

    def flush(self) -> None:
        self._csv_file.flush()
        self._json.flush()

    def close(self, summary: dict) -> None:
        self._json.write(("\n  ],\n" if not self._first else "],\n")
                         + f'  "summary": {json.dumps(summary, ensure_ascii=False)}\n}}\n')
        self._csv_file.close()
        self._json.close()
