"""Classification metrics as pure functions of labels, predictions and probabilities."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts with true classes as rows and predicted classes as columns."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    flat = y_true * num_classes + y_pred
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num/den with 0 where den is 0 (scikit-learn's zero_division=0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def per_class_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, specificity, F1 and support for every class of a confusion matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = cm.sum() - tp - fp - fn
    precision = _safe_divide(tp, tp + fp)
    recall = _safe_divide(tp, tp + fn)
    return {
        "precision": precision,
        "recall": recall,
        "specificity": _safe_divide(tn, tn + fp),
        "f1": _safe_divide(2 * tp, 2 * tp + fp + fn),
        "support": cm.sum(axis=1),
    }


def accuracy(cm: np.ndarray) -> float:
    cm = np.asarray(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else 0.0


def top_k_accuracy(y_true, probs, k: int = 5) -> float:
    probs = np.asarray(probs)
    y_true = np.asarray(y_true)
    if len(y_true) == 0:
        return 0.0
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1)[:, :k]
    return float(np.mean(np.any(top == y_true[:, None], axis=1)))


def summary(cm: np.ndarray, class_names: list[str], loss: float | None = None) -> dict:
    """The per-epoch info block of results.json: loss, accuracy, per-class metrics and their means."""
    metrics = per_class_metrics(cm)
    info = {}
    if loss is not None:
        info["loss"] = round(float(loss), 6)
    info["accuracy"] = round(accuracy(cm), 6)
    for i, name in enumerate(class_names):
        info[name] = {
            "Precision": round(float(metrics["precision"][i]), 6),
            "Recall": round(float(metrics["recall"][i]), 6),
            "Specificity": round(float(metrics["specificity"][i]), 6),
            "F1 score": round(float(metrics["f1"][i]), 6),
        }
    info["mean Precision"] = round(float(metrics["precision"].mean()), 6)
    info["mean Recall"] = round(float(metrics["recall"].mean()), 6)
    info["mean Specificity"] = round(float(metrics["specificity"].mean()), 6)
    info["mean F1 score"] = round(float(metrics["f1"].mean()), 6)
    return info


def roc_curves(y_true, probs, num_classes: int) -> dict:
    """One-vs-rest ROC per class, plus micro and macro averages: {key: (fpr, tpr, auc)}.

    Classes absent from y_true (no positives) have no defined curve and are left out.
    """
    from sklearn.metrics import auc, roc_curve

    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    onehot = np.eye(num_classes)[y_true]
    curves = {}
    for c in range(num_classes):
        positives = onehot[:, c].sum()
        if positives == 0 or positives == len(y_true):
            continue
        fpr, tpr, _ = roc_curve(onehot[:, c], probs[:, c])
        curves[c] = (fpr, tpr, float(auc(fpr, tpr)))
    if curves:
        fpr, tpr, _ = roc_curve(onehot.ravel(), probs.ravel())
        curves["micro"] = (fpr, tpr, float(auc(fpr, tpr)))
        grid = np.unique(np.concatenate([curves[c][0] for c in curves if c != "micro"]))
        mean_tpr = np.mean([np.interp(grid, curves[c][0], curves[c][1]) for c in curves if c != "micro"], axis=0)
        curves["macro"] = (grid, mean_tpr, float(auc(grid, mean_tpr)))
    return curves


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
