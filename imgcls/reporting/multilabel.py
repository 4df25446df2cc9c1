"""The figures of a multi-label run (several labels per image): the training curves in mAP and sample-based F1,
and a precision-recall curve per label with the operating point of its stored threshold; drawn from the run
folder's files alone, as the single-label plots are (reporting/plots.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..record.predictions import read_predictions_csv
from ..record.results import read_results_csv, read_run
from .plots import _drawn, _integer_ticks, pyplot, save_figure

MOST_CURVES = 20  # labels drawn on one precision-recall figure; the table lists them all


def plot_label_pr(y_true, probs, class_names: list[str], thresholds, path: Path, title: str) -> Path:
    """Precision-recall curve of every label with its AP, and a dot where its stored threshold operates."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    plt = pyplot()
    y = np.asarray(y_true) > 0.5
    p = np.asarray(probs, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    drawn = [c for c in range(len(class_names)) if y[:, c].any()]
    for c in drawn[:MOST_CURVES]:
        precision, recall, _ = precision_recall_curve(y[:, c], p[:, c])
        line, = ax.step(recall, precision, where="post", lw=1.4, alpha=0.85,
                        label=f"{class_names[c]} (AP {average_precision_score(y[:, c], p[:, c]):.3f})")
        present = p[:, c] >= thresholds[c]
        hits = (present & y[:, c]).sum()
        ax.plot([hits / y[:, c].sum()], [hits / max(present.sum(), 1)], "o", color=line.get_color(), markersize=5)
    if len(drawn) > MOST_CURVES:
        ax.plot([], [], " ", label=f"... {len(drawn) - MOST_CURVES} more labels")
    ax.plot([], [], "o", color="grey", label="at the stored threshold")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    save_figure(fig, path)
    return path


def plot_multilabel_curves(results_csv: Path, out_dir: Path) -> list[Path]:
    """loss.png and map.png (train and val mAP, val sample-based F1) from a multi-label run's results.csv."""
    plt = pyplot()
    table = read_results_csv(results_csv)
    if not table:
        return []
    written = []
    for filename, label, series in (("loss.png", "Loss", [("train_loss", "train"), ("val_loss", "val")]),
                                    ("map.png", "mAP", [("train_mAP", "train mAP"), ("val_mAP", "val mAP"),
                                                        ("val_sample_f1", "val sample-F1 (at 0.5)")])):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for key, name in series:
            ax.plot(table["epoch"], table[key], marker="o", markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(_integer_ticks())
        ax.set_title(f"{label} per epoch")
        ax.grid(alpha=0.3)
        if filename == "map.png":
            ax.set_ylim(0, 1.02)
        ax.legend()
        save_figure(fig, out_dir / filename)
        written.append(out_dir / filename)
    return written


def plot_multilabel_run(run_dir: str | Path) -> tuple[list[Path], dict[str, str]]:
    """Redraw every figure of a multi-label run from its files; (files drawn, {figure: why not drawn})."""
    run = read_run(run_dir)
    run_dir, names = run.run_dir, run.class_names
    failed: dict[str, str] = {}
    written = _drawn(failed, ("loss.png", "map.png"), plot_multilabel_curves, run_dir / "results.csv", run_dir) or []
    stored = run.results.get("thresholds") or {}
    thresholds = [stored.get(name, 0.5) for name in names]
    for split in ("val", "test"):
        found = read_predictions_csv(run_dir / f"predictions_{split}.csv", names)
        if found is None:
            continue
        y_true, probs, _ = found
        name = f"pr_{split}.png"
        written.append(_drawn(failed, (name,), plot_label_pr, y_true, probs, names, thresholds, run_dir / name,
                              f"Precision-recall per label, {split} (best epoch {run.best_epoch})"))
    return [w for w in written if w is not None], failed
