"""results.json (the full record of a training run) and results.csv (one row per epoch): writer and reader.

Per epoch, results.json holds ``"epoch:N": {"train info": ..., "valid info": ..., "lr", "seconds", "phase"}``
with per-class "Precision", "Recall", "Specificity" and "F1 score" (the seeds' format). Its "test" block
is an evaluation record, the same schema as ``imgcls val``'s metrics.json (see engine.evaluate).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImgclsError
from .files import atomic_write_text, read_yaml, write_json

CSV_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "seconds"]
# written after the epochs, in this order
TAIL_KEYS = ("phases", "best epoch", "test", "train seconds", "wall seconds")


def write_results(run_dir: Path, results: dict, history: list[dict]) -> None:
    """results.json: the run's header blocks, one "epoch:N" block per epoch, then the tail blocks;
    results.csv: the per-epoch numbers a spreadsheet or plot needs."""
    body = {k: v for k, v in results.items() if k not in TAIL_KEYS}
    for i, record in enumerate(history, start=1):
        body[f"epoch:{i}"] = record
    body.update({k: results[k] for k in TAIL_KEYS if k in results})
    write_json(run_dir / "results.json", body)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for i, r in enumerate(history, start=1):
        writer.writerow([i, f"{r['lr']:.6g}", f"{r['train info']['loss']:.6f}", f"{r['train info']['accuracy']:.6f}",
                         f"{r['valid info']['loss']:.6f}", f"{r['valid info']['accuracy']:.6f}",
                         f"{r['valid info']['mean F1 score']:.6f}", f"{r['seconds']:.2f}"])
    atomic_write_text(run_dir / "results.csv", buffer.getvalue())


def read_results_csv(path: Path) -> dict[str, np.ndarray]:
    """results.csv as columns of numbers ({} when it is empty)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: np.array([float(r[key]) for r in rows]) for key in rows[0]} if rows else {}


@dataclass
class RunRecord:
    """A training run as its folder records it; built by ``read_run``, the one reader of results.json."""

    run_dir: Path
    results: dict
    settings: dict          # args.yaml, or the "train parameters" block of results.json

    @property
    def class_names(self) -> list[str]:
        return self.results["dataset"]["class_names"]

    @property
    def epochs(self) -> list[dict]:
        return [self.results[f"epoch:{i}"] for i in range(1, self.epochs_run + 1)]

    @property
    def epochs_run(self) -> int:
        return sum(1 for k in self.results if k.startswith("epoch:"))

    @property
    def best_epoch(self) -> int:
        return int(self.results.get("best epoch") or 0)

    @property
    def best(self) -> dict | None:
        """The best epoch's "valid info"."""
        return self.results.get(f"epoch:{self.best_epoch}", {}).get("valid info")

    @property
    def model(self) -> dict:
        return self.results.get("model", {})

    @property
    def dataset(self) -> dict:
        return self.results.get("dataset", {})

    @property
    def phases(self) -> list[dict]:
        return self.results.get("phases", [])

    @property
    def label_review(self) -> dict | None:
        """train's label review before the first epoch (runs with cleanlab installed, from this version on)."""
        return self.results.get("label review")

    @property
    def train_seconds(self) -> float | None:
        return self.results.get("train seconds")

    @property
    def wall_seconds(self) -> float | None:
        """The whole run from start to the final evaluation (runs written before this was recorded: None)."""
        return self.results.get("wall seconds")

    @property
    def test(self) -> dict | None:
        """The test evaluation in the metrics.json schema; runs written before that schema are converted."""
        test = self.results.get("test")
        if not test:
            return None
        return test if "per_class" in test else _test_from_seed_format(test, self.class_names)


def read_run(run_dir: str | Path) -> RunRecord:
    """Read RUN/results.json (and args.yaml) once; one clear error when it is not an imgcls run."""
    run_dir = Path(run_dir)
    results_file = run_dir / "results.json"
    if not results_file.is_file():
        raise ImgclsError(f"{run_dir}: not a run folder (no results.json); pass a folder such as runs/train")
    try:
        results = json.loads(results_file.read_text(encoding="utf-8"))
        results["dataset"]["class_names"]  # noqa: B018 - the one key every reader needs
    except (ValueError, KeyError, TypeError) as e:
        raise ImgclsError(f"{results_file}: damaged or not written by imgcls ({e})") from None
    args_file = run_dir / "args.yaml"
    settings = read_yaml(args_file) if args_file.exists() else results.get("train parameters", {})
    return RunRecord(run_dir, results, settings)


def _test_from_seed_format(test: dict, class_names: list[str]) -> dict:
    """A "test" block written before train and val shared one schema, in that schema (no AUC or AP then)."""
    cm = np.asarray(test["confusion matrix"])
    support = cm.sum(axis=1)
    names = {"precision": "Precision", "recall": "Recall", "specificity": "Specificity", "f1": "F1 score"}
    per_class = {c: {k: test[c][old] for k, old in names.items()} | {"roc_auc": None, "average_precision": None,
                                                                      "support": int(support[i])}
                 for i, c in enumerate(class_names)}
    macro = {k: test[f"mean {old}"] for k, old in names.items()} | {"roc_auc": None, "average_precision": None}
    return {"accuracy": test["accuracy"], "loss": test.get("loss"), "images": int(cm.sum()), "per_class": per_class,
            "macro_avg": macro, "confusion_matrix": cm.tolist(), "epoch": test.get("epoch")}
