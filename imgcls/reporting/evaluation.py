"""The figures of an evaluation (``imgcls val``): drawn from its record, its predictions and, for the error
gallery, the network that made them."""

from __future__ import annotations

from pathlib import Path

from .gallery import draw_error_gallery
from .plots import plot_calibration, plot_confusion_matrix, plot_pr, plot_roc


def draw_evaluation(out: Path, metrics: dict, y_true, probs, class_names: list[str], *, before=None,
                    mistakes: list[dict], root: Path, model, preprocess: dict, device) -> list[Path]:
    """errors.png (the most confident mistakes with Grad-CAM), the confusion matrices, ROC, precision-recall and
    the reliability diagram (with the probabilities ``before`` a calibration, when there was one)."""
    m, names = metrics, class_names
    what = f"{m['split']}, {m['images']} images" + (", flip TTA" if m["tta"] else "")
    draw_error_gallery(model, root, mistakes, names, preprocess, out / "errors.png", device=device,
                       title=f"Most confident mistakes ({what})")
    return [
        out / "errors.png",
        plot_confusion_matrix(m["confusion_matrix"], names, out / "confusion_matrix.png", f"Confusion matrix ({what})"),
        plot_confusion_matrix(m["confusion_matrix"], names, out / "confusion_matrix_normalized.png",
                              f"Confusion matrix, normalised by true class ({what})", normalize=True),
        plot_roc(y_true, probs, names, out / "roc.png", f"ROC one-vs-rest ({what})"),
        plot_pr(y_true, probs, names, out / "pr.png", f"Precision-recall ({what})"),
        plot_calibration(y_true, probs, out / "calibration.png",
                         f"Reliability diagram, T={m['temperature']:.3g} ({what})", before=before),
    ]
