"""Plots drawn from what a run folder holds (results.csv, results.json, predictions files)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from ..record.files import atomic_write_bytes
from ..record.predictions import read_predictions_csv
from ..record.results import read_results_csv

log = logging.getLogger("imgcls")


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig, dpi: int = 110) -> bytes:
    """A figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return buffer.getvalue()


def save_figure(fig, path: Path) -> None:
    atomic_write_bytes(path, png_bytes(fig))


def _save_unit_square(fig, ax, path: Path, title: str, xlabel: str, ylabel: str, legend: str) -> Path:
    """Finish and save a curve plot whose axes both run from 0 to 1 (ROC, precision-recall)."""
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc=legend, fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    return path


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def plot_curves(results_csv: Path, out_dir: Path) -> list[Path]:
    """loss.png, accuracy.png and lr.png from results.csv."""
    plt = pyplot()
    table = read_results_csv(results_csv)
    if not table:
        return []
    epochs = table["epoch"]
    written = []
    specs = [
        ("loss.png", "Loss", [("train_loss", "train"), ("val_loss", "val")]),
        ("accuracy.png", "Accuracy", [("train_acc", "train"), ("val_acc", "val"), ("val_macro_f1", "val macro-F1")]),
        ("lr.png", "Learning rate", [("lr", "head lr")]),
    ]
    for filename, label, series in specs:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for key, name in series:
            if key in table:
                ax.plot(epochs, table[key], marker="o", markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(_integer_ticks())
        ax.set_ylabel(label.lower())
        ax.set_title(f"{label} per epoch")
        ax.grid(alpha=0.3)
        if filename == "accuracy.png":
            ax.set_ylim(0, 1.02)
        if filename == "lr.png":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.legend()
        save_figure(fig, out_dir / filename)
        written.append(out_dir / filename)
    return written


def plot_confusion_matrix(cm, class_names: list[str], path: Path, title: str, normalize: bool = False) -> Path:
    """Counts (or row-normalised rates) with class names on both axes."""
    plt = pyplot()
    cm = np.asarray(cm, dtype=np.float64)
    values = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    n = len(class_names)
    size = min(4.0 + 0.45 * n, 22)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else max(values.max(), 1))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), class_names, rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if n <= 30:
        threshold = values.max() / 2 if values.max() else 0.5
        for i in range(n):
            for j in range(n):
                text = f"{values[i, j]:.2f}" if normalize else f"{int(values[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8 if n > 12 else 10,
                        color="white" if values[i, j] > threshold else "black")
    save_figure(fig, path)
    return path


def plot_roc(y_true, probs, class_names: list[str], path: Path, title: str) -> Path:
    """One-vs-rest ROC per class with its AUC, plus micro and macro averages."""
    from ..metrics import roc_curves

    plt = pyplot()
    curves = roc_curves(y_true, probs, len(class_names))
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    per_class = [k for k in curves if isinstance(k, (int, np.integer))]
    for c in per_class[:20]:
        fpr, tpr, area = curves[c]
        ax.plot(fpr, tpr, lw=1.2, alpha=0.8, label=f"{class_names[c]} (AUC {area:.3f})")
    for key, style in (("micro", ":"), ("macro", "--")):
        if key in curves:
            fpr, tpr, area = curves[key]
            ax.plot(fpr, tpr, style, lw=2.2, color="black" if key == "micro" else "tab:red",
                    label=f"{key}-average (AUC {area:.3f})")
    if len(per_class) > 20:
        ax.plot([], [], " ", label=f"... {len(per_class) - 20} more classes")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, alpha=0.5)
    return _save_unit_square(fig, ax, path, title, "false positive rate (1 - specificity)",
                             "true positive rate (recall)", legend="lower right")


def plot_accuracy_time(run, path: Path) -> Path | None:
    """Validation accuracy against wall time since the run began, phase by phase, with the test accuracy of
    the best weights at the end: what each minute of training bought."""
    epochs = run.epochs
    if not epochs:
        return None
    plt = pyplot()
    clock = np.cumsum([e["seconds"] for e in epochs])  # runs written before "elapsed" was recorded
    minutes = np.array([e.get("elapsed", c) for e, c in zip(epochs, clock)]) / 60
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    phases = [e.get("phase", "train") for e in epochs]
    for name in dict.fromkeys(phases):
        keep = [i for i, p in enumerate(phases) if p == name]
        ax.plot(minutes[keep], [epochs[i]["val"]["accuracy"] for i in keep], marker="o", markersize=3,
                label=f"val accuracy, {name}")
    if run.best_epoch:
        ax.axvline(minutes[run.best_epoch - 1], color="grey", lw=0.8, ls=":", label=f"best epoch ({run.best_epoch})")
    if run.test:
        end = (run.wall_seconds or minutes[-1] * 60) / 60
        ax.plot([end], [run.test["accuracy"]], "*", markersize=12, color="tab:red",
                label=f"test accuracy {run.test['accuracy']:.3f}")
    ax.set_xlim(left=0)  # the time before the first epoch (data check, feature cache) counts too
    ax.set_xlabel("wall time since the run began (minutes)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy against wall time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)
    return path


def plot_run(run_dir: str | Path) -> tuple[list[Path], dict[str, str]]:
    """Redraw every plot of a training run from its files alone: curves, confusion matrices, and ROC,
    precision-recall and reliability diagrams from the predictions files. Returns the files drawn and, for each
    figure that could not be drawn, why (the others are drawn all the same)."""
    from ..record.results import read_run

    run = read_run(run_dir)
    run_dir, names, best = run.run_dir, run.class_names, run.best_epoch
    failed: dict[str, str] = {}
    written = _drawn(failed, ("loss.png", "accuracy.png", "lr.png"), plot_curves, run_dir / "results.csv", run_dir) or []
    written.append(_drawn(failed, ("accuracy_time.png",), plot_accuracy_time, run, run_dir / "accuracy_time.png"))
    matrices = {}
    if best:
        epoch = run.epochs[best - 1]
        matrices = {split: epoch[split]["confusion_matrix"] for split in ("train", "val")}
    if run.test:
        matrices["test"] = run.test["confusion_matrix"]
    for split, cm in matrices.items():
        name = f"confusion_matrix_{split}.png"
        written.append(_drawn(failed, (name,), plot_confusion_matrix, cm, names, run_dir / name,
                              f"Confusion matrix, {split} (best epoch {best})"))
    for split in ("val", "test"):
        found = read_predictions_csv(run_dir / f"predictions_{split}.csv", names)
        if found is None:
            continue
        y_true, probs, _ = found
        where = f"{split} (best epoch {best})"
        for kind, draw, title in (("roc", plot_roc, f"ROC one-vs-rest, {where}"),
                                  ("pr", plot_pr, f"Precision-recall, {where}")):
            name = f"{kind}_{split}.png"
            written.append(_drawn(failed, (name,), draw, y_true, probs, names, run_dir / name, title))
        name = f"calibration_{split}.png"
        written.append(_drawn(failed, (name,), plot_calibration, y_true, probs, run_dir / name,
                              f"Reliability diagram, {where}"))
    return [w for w in written if w is not None], failed


def _drawn(failed: dict[str, str], names: tuple[str, ...], draw, *args):
    """``draw(*args)``; should it fail, each of ``names`` is recorded in ``failed`` with the reason, and None comes
    back: one figure that cannot be drawn must not cost the others, or the report."""
    try:
        return draw(*args)
    except Exception as e:  # noqa: BLE001 - whatever matplotlib or the data raise, the figure is the only loss
        reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160]}" if str(e).strip() else type(e).__name__
        log.warning(f"WARNING: {', '.join(names)} not drawn ({reason})")
        failed.update(dict.fromkeys(names, reason))
        return None


def plot_pr(y_true, probs, class_names: list[str], path: Path, title: str) -> Path:
    """Precision-recall curve of every class (one vs rest) with its average precision."""
    from ..metrics import pr_curves

    plt = pyplot()
    curves = pr_curves(y_true, probs, len(class_names))
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    for c in list(curves)[:20]:
        recall, precision, ap = curves[c]
        ax.step(recall, precision, where="post", lw=1.4, alpha=0.85, label=f"{class_names[c]} (AP {ap:.3f})")
    if len(curves) > 20:
        ax.plot([], [], " ", label=f"... {len(curves) - 20} more classes")
    if curves:
        mean_ap = float(np.mean([v[2] for v in curves.values()]))
        ax.plot([], [], " ", label=f"mean AP {mean_ap:.3f}")
    return _save_unit_square(fig, ax, path, title, "recall", "precision", legend="lower left")


def plot_calibration(y_true, probs, path: Path, title: str, before=None, n_bins: int = 15) -> Path:
    """Reliability diagram: accuracy against confidence per bin, with the ECE; ``before`` (probabilities
    before temperature scaling) adds the uncalibrated curve for comparison."""
    from ..metrics import expected_calibration_error, reliability_bins

    plt = pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6.0, 6.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    bins = reliability_bins(y_true, probs, n_bins)
    centers = (bins["edges"][:-1] + bins["edges"][1:]) / 2
    width = 1.0 / n_bins
    filled = bins["count"] > 0
    ece = expected_calibration_error(y_true, probs, n_bins)
    ax.bar(centers[filled], bins["accuracy"][filled], width=width * 0.95, color="tab:blue", alpha=0.75,
           edgecolor="black", lw=0.5, label=f"accuracy per bin (ECE {ece:.3f})")
    ax.bar(centers[filled], bins["confidence"][filled] - bins["accuracy"][filled], bottom=bins["accuracy"][filled],
           width=width * 0.95, fill=False, hatch="///", edgecolor="tab:red", lw=0.8,
           label="gap to the mean confidence")
    if before is not None:
        b = reliability_bins(y_true, before, n_bins)
        keep = b["count"] > 0
        ax.plot(b["confidence"][keep], b["accuracy"][keep], "o--", color="tab:orange", lw=1.5,
                label=f"before calibration (ECE {expected_calibration_error(y_true, before, n_bins):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":", label="perfectly calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # outside: bars fill any corner
    ax.grid(alpha=0.3)
    hist.bar(centers, bins["count"], width=width * 0.95, color="grey", edgecolor="black", lw=0.5)
    hist.set_xlabel("confidence (top probability)")
    hist.set_ylabel("images")
    hist.grid(alpha=0.3)
    save_figure(fig, path)
    return path


def plot_error_gallery(tiles: list[dict], path: Path, title: str, per_row: int = 4) -> Path:
    """The most confident mistakes: each image next to its Grad-CAM overlay, with true and predicted class.

    ``tiles``: dicts with image and heatmap (H x W x 3 floats in [0, 1]), true, predicted, confidence, name,
    and cam_empty (True when no part of the image raised the predicted class's score).
    """
    plt = pyplot()
    if not tiles:
        fig, ax = plt.subplots(figsize=(6, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "No mistakes on this split.", ha="center", va="center", fontsize=12)
        ax.set_title(title)
        save_figure(fig, path)
        return path
    per_row = min(per_row, len(tiles))
    rows = -(-len(tiles) // per_row)
    fig, axes = plt.subplots(rows, 2 * per_row, figsize=(2 * per_row * 1.75, rows * 2.35), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, tile in enumerate(tiles):
        row, col = divmod(i, per_row)
        left, right = axes[row, 2 * col], axes[row, 2 * col + 1]
        left.imshow(tile["image"])
        left.set_title(f"true: {_short(tile['true'])}\npred: {_short(tile['predicted'])} ({tile['confidence']:.2f})",
                       fontsize=8, loc="left", color="darkred")
        right.imshow(tile["heatmap"])
        right.set_title("Grad-CAM: no region\nspeaks for it" if tile.get("cam_empty") else
                        "Grad-CAM\n(predicted class)", fontsize=7, color="dimgray")
        left.text(0, -0.04, _short(tile["name"], 28), transform=left.transAxes, fontsize=6, va="top", color="dimgray")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def _short(text: str, limit: int = 18) -> str:
    text = str(text)
    return text if len(text) <= limit else "…" + text[-(limit - 1):]
