"""results.json (the full record of a training run) and results.csv (one row per epoch): writer and reader.

In code an epoch is ``{"train": report, "val": report, "lr", "seconds", "phase", "elapsed"}``, each report in
the one metrics schema (metrics.classification_report). results.json renders it in the seeds' format, which
users' scripts read: ``"epoch:N": {"train info": ..., "valid info": ..., "lr", "seconds", "phase", "elapsed"}``
with the loss, the accuracy, per class "Precision", "Recall", "Specificity" and "F1 score", their "mean ..."
and the "confusion matrix". ``seed_epoch`` is that rendering and ``epoch_from_seed`` reads it back. Its "test"
block is an evaluation record, the same as ``imgcls val``'s metrics.json (engine/evaluate.evaluation_record).
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
MULTI_LABEL_CSV_COLUMNS = ["epoch", "lr", "train_loss", "train_mAP", "val_loss", "val_mAP", "val_sample_f1",
                           "seconds"]
# written after the epochs, in this order
TAIL_KEYS = ("phases", "best epoch", "test", "train seconds", "wall seconds")


SEED_NAMES = {"precision": "Precision", "recall": "Recall", "specificity": "Specificity", "f1": "F1 score"}


def seed_info(report: dict) -> dict:
    """A classification report in the seeds' per-epoch format ("train info" / "valid info"); a multi-label report
    (metrics.multilabel_report) has no seeds' format and is written as it is."""
    if report.get("multi_label"):
        return report
    info = {"loss": report["loss"]} if "loss" in report else {}
    info["accuracy"] = report["accuracy"]
    for name, row in report["per_class"].items():
        info[name] = {seed: row[key] for key, seed in SEED_NAMES.items()}
    info |= {f"mean {seed}": report["macro_avg"][key] for key, seed in SEED_NAMES.items()}
    return info | {"confusion matrix": report["confusion_matrix"]}


def report_from_seed(info: dict, class_names: list[str]) -> dict:
    """The classification report that ``seed_info`` rendered (support and images from the confusion matrix)."""
    if info.get("multi_label"):
        return info
    cm = np.asarray(info["confusion matrix"], dtype=np.int64)
    support = cm.sum(axis=1)
    per_class = {name: {key: info[name][seed] for key, seed in SEED_NAMES.items()} | {"support": int(support[i])}
                 for i, name in enumerate(class_names)}
    return {**({"loss": info["loss"]} if "loss" in info else {}), "images": int(cm.sum()),
            "accuracy": info["accuracy"], "per_class": per_class,
            "macro_avg": {key: info[f"mean {seed}"] for key, seed in SEED_NAMES.items()},
            "confusion_matrix": cm.tolist()}


def seed_epoch(epoch: dict) -> dict:
    """One epoch as results.json's "epoch:N" block."""
    rest = {k: v for k, v in epoch.items() if k not in ("train", "val")}
    return {"train info": seed_info(epoch["train"]), "valid info": seed_info(epoch["val"])} | rest


def epoch_from_seed(block: dict, class_names: list[str]) -> dict:
    """An "epoch:N" block of results.json (or of a last.pt's history) as the epoch ``seed_epoch`` rendered."""
    rest = {k: v for k, v in block.items() if k not in ("train info", "valid info")}
    return {"train": report_from_seed(block["train info"], class_names),
            "val": report_from_seed(block["valid info"], class_names)} | rest


def write_results(run_dir: Path, results: dict, history: list[dict]) -> None:
    """results.json: the run's header blocks, one "epoch:N" block per epoch (``history``: epochs in the one
    schema), then the tail blocks; results.csv: the per-epoch numbers a spreadsheet or plot needs."""
    body = {k: v for k, v in results.items() if k not in TAIL_KEYS}
    for i, epoch in enumerate(history, start=1):
        body[f"epoch:{i}"] = seed_epoch(epoch)
    body.update({k: results[k] for k in TAIL_KEYS if k in results})
    write_json(run_dir / "results.json", body)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if history and history[0]["val"].get("multi_label"):
        _multi_label_csv(writer, history)
        atomic_write_text(run_dir / "results.csv", buffer.getvalue())
        return
    writer.writerow(CSV_COLUMNS)
    for i, e in enumerate(history, start=1):
        writer.writerow([i, f"{e['lr']:.6g}", f"{e['train']['loss']:.6f}", f"{e['train']['accuracy']:.6f}",
                         f"{e['val']['loss']:.6f}", f"{e['val']['accuracy']:.6f}", f"{e['val']['macro_avg']['f1']:.6f}",
                         f"{e['seconds']:.2f}"])
    atomic_write_text(run_dir / "results.csv", buffer.getvalue())


def _multi_label_csv(writer, history: list[dict]) -> None:
    """results.csv of a multi-label run: mAP and sample-based F1 where a single-label run has accuracy."""
    writer.writerow(MULTI_LABEL_CSV_COLUMNS)
    for i, e in enumerate(history, start=1):
        writer.writerow([i, f"{e['lr']:.6g}", f"{e['train']['loss']:.6f}", f"{e['train']['mAP']:.6f}",
                         f"{e['val']['loss']:.6f}", f"{e['val']['mAP']:.6f}", f"{e['val']['sample_f1']:.6f}",
                         f"{e['seconds']:.2f}"])


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
    def multi_label(self) -> bool:
        """Several labels per image: the run's metrics are metrics.multilabel_report's."""
        return bool(self.results["dataset"].get("multi_label"))

    @property
    def epochs(self) -> list[dict]:
        """Every epoch in the one schema: {"train": report, "val": report, "lr", "seconds", "phase", ...}."""
        return [epoch_from_seed(self.results[f"epoch:{i}"], self.class_names) for i in range(1, self.epochs_run + 1)]

    @property
    def epochs_run(self) -> int:
        return sum(1 for k in self.results if k.startswith("epoch:"))

    @property
    def best_epoch(self) -> int:
        return int(self.results.get("best epoch") or 0)

    @property
    def best(self) -> dict | None:
        """The best epoch's validation report (metrics.classification_report), None before the first epoch."""
        block = self.results.get(f"epoch:{self.best_epoch}")
        return report_from_seed(block["valid info"], self.class_names) if block else None

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
        """The test evaluation (metrics.json's record); a run whose "test" block is in the seeds' format, as runs
        of imgcls's first versions wrote it, gives that block's report (no AUC or AP then)."""
        test = self.results.get("test")
        if not test:
            return None
        return test if "per_class" in test else report_from_seed(test, self.class_names) | {"epoch": test.get("epoch")}


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


def write_metrics(folder: Path, metrics: dict) -> Path:
    """FOLDER/metrics.json, an evaluation record (``imgcls val``): written last, so a folder that has it is whole."""
    write_json(Path(folder) / "metrics.json", metrics)
    return Path(folder) / "metrics.json"


def read_metrics(folder: Path) -> dict | None:
    """FOLDER/metrics.json, or None when there is none or it is not an evaluation record."""
    path = Path(folder) / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        metrics["split"], metrics["macro_avg"]["f1"]  # noqa: B018 - keys every reader needs
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return metrics
