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


def _round(x) -> float | None:
    return None if x is None else round(float(x), 6)


def classification_report(cm: np.ndarray, class_names: list[str], loss: float | None = None) -> dict:
    """The one schema of imgcls's classification metrics, from a confusion matrix (true classes as rows): the
    loss when given, the number of images, accuracy, per class precision, recall, specificity, F1 and support,
    their macro means, and the matrix. ``evaluation_report`` adds what needs probabilities; results.json's
    per-epoch blocks render this in the seeds' format (record/results.py)."""
    cm = np.asarray(cm, dtype=np.int64)
    per = per_class_metrics(cm)
    columns = ("precision", "recall", "specificity", "f1")
    return {**({"loss": _round(loss)} if loss is not None else {}), "images": int(cm.sum()),
            "accuracy": _round(accuracy(cm)),
            "per_class": {name: {k: _round(per[k][i]) for k in columns} | {"support": int(per["support"][i])}
                          for i, name in enumerate(class_names)},
            "macro_avg": {k: _round(per[k].mean()) if len(class_names) else 0.0 for k in columns},
            "confusion_matrix": cm.tolist()}


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


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Each label's probability of a multi-label model, computed without overflow."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))


def labels_present(probs: np.ndarray, thresholds) -> np.ndarray:
    """A multi-label model's answer: (N, labels) booleans, each label present where its probability reaches its
    threshold (record/card.ModelCard.thresholds). The one decision rule of val, predict, serve and the exports."""
    return np.asarray(probs) >= np.asarray(thresholds, dtype=np.float64)


def binary_cross_entropy(logits, targets) -> float:
    """Mean over images and labels of the binary cross-entropy of sigmoid(logits): BCEWithLogitsLoss's value."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if z.size == 0:
        return 0.0
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def best_f1_thresholds(targets, probs, default: float = 0.5) -> tuple[float, ...]:
    """Each label's threshold with the best F1 on these (validation) images: the midpoint between the probability
    where F1 peaks and the next lower one, so a slightly lower probability on new images still counts. A label
    with no positive image here keeps ``default``."""
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(targets) > 0.5
    p = np.asarray(probs, dtype=np.float64)
    found = []
    for c in range(p.shape[1]):
        if not y[:, c].any():
            found.append(float(default))
            continue
        precision, recall, cuts = precision_recall_curve(y[:, c], p[:, c])
        f1 = _safe_divide(2 * precision[:-1] * recall[:-1], precision[:-1] + recall[:-1])
        best = int(np.argmax(f1))
        below = p[:, c][p[:, c] < cuts[best]]
        found.append(float((cuts[best] + below.max()) / 2 if len(below) else cuts[best]))
    return tuple(found)


def multilabel_report(targets, probs, class_names: list[str], thresholds=None, loss: float | None = None) -> dict:
    """The one schema of multi-label metrics (several labels per image), from (N, labels) 0/1 targets and sigmoid
    probabilities, each label present at its threshold (``labels_present``; 0.5 when none are given): mAP (the
    mean over labels of average precision), per label precision, recall, F1, AP, ROC AUC, threshold and support,
    their macro means, micro-averaged P/R/F1, sample-based F1 (an image with no label that is given none scores
    1), subset accuracy (every label right), Hamming loss (the share of wrong image-label pairs) and the label
    cardinality (labels per image) of the data and of the predictions. None where undefined."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(targets) > 0.5
    p = np.asarray(probs, dtype=np.float64).reshape(len(y), len(class_names))
    thresholds = np.full(len(class_names), 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    predicted = labels_present(p, thresholds)
    tp, fp, fn = (y & predicted).sum(0), (~y & predicted).sum(0), (y & ~predicted).sum(0)
    columns = {"precision": list(_safe_divide(tp, tp + fp)), "recall": list(_safe_divide(tp, tp + fn)),
               "f1": list(_safe_divide(2 * tp, 2 * tp + fp + fn)), "average_precision": [], "roc_auc": []}
    for c in range(len(class_names)):
        defined = y[:, c].any() and not y[:, c].all()
        columns["average_precision"].append(float(average_precision_score(y[:, c], p[:, c])) if y[:, c].any() else None)
        columns["roc_auc"].append(float(roc_auc_score(y[:, c], p[:, c])) if defined else None)
    sample_tp, sample_sum = (y & predicted).sum(1), y.sum(1) + predicted.sum(1)
    sample_f1 = np.where(sample_sum > 0, 2 * sample_tp / np.maximum(sample_sum, 1), 1.0)
    micro = (tp.sum(), fp.sum(), fn.sum())
    n = len(y)
    return {"multi_label": True, **({"loss": _round(loss)} if loss is not None else {}), "images": int(n),
            "mAP": _round(_mean(columns["average_precision"]) or 0.0),
            "sample_f1": _round(sample_f1.mean() if n else 0.0),
            "subset_accuracy": _round((y == predicted).all(1).mean() if n else 0.0),
            "hamming_loss": _round((y != predicted).mean() if n else 0.0),
            "label_cardinality": {"data": _round(y.sum(1).mean() if n else 0.0),
                                  "predicted": _round(predicted.sum(1).mean() if n else 0.0)},
            "per_class": {name: {key: _round(values[i]) for key, values in columns.items()}
                          | {"threshold": _round(thresholds[i]), "support": int(y[:, i].sum())}
                          for i, name in enumerate(class_names)},
            "macro_avg": {key: _round(_mean(values)) for key, values in columns.items()},
            "micro_avg": {"precision": _round(_safe_divide(micro[0], micro[0] + micro[1])),
                          "recall": _round(_safe_divide(micro[0], micro[0] + micro[2])),
                          "f1": _round(_safe_divide(2 * micro[0], 2 * micro[0] + micro[1] + micro[2]))}}


def headline(report: dict) -> float:
    """The number that ranks epochs and runs: accuracy, or for multi-label metrics the mAP."""
    return report["mAP"] if report.get("multi_label") else report["accuracy"]


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def cross_entropy(logits, y_true) -> float:
    """Mean negative log-softmax of the true class: the loss of unsmoothed, unweighted cross-entropy."""
    y_true = np.asarray(y_true, dtype=np.int64)
    if len(y_true) == 0:
        return 0.0
    return float(-np.mean(log_softmax(logits)[np.arange(len(y_true)), y_true]))


def log_loss(y_true, probs, eps: float = 1e-15) -> float:
    """Mean negative log-probability of the true class (scikit-learn's log_loss with every class as a label)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if len(y_true) == 0:
        return 0.0
    p_true = probs[np.arange(len(y_true)), y_true] / probs.sum(axis=1)
    return float(-np.mean(np.log(np.clip(p_true, eps, 1.0))))


def reliability_bins(y_true, probs, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Confidence (top probability) binned into ``n_bins`` equal-width bins on (0, 1].

    Returns per bin its edges, the number of images, the mean confidence and the accuracy
    (confidence and accuracy are 0 for empty bins).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    count = np.zeros(n_bins, dtype=np.int64)
    confidence = np.zeros(n_bins)
    acc = np.zeros(n_bins)
    if len(y_true):
        top = probs.max(axis=1)
        correct = probs.argmax(axis=1) == y_true
        # Bin b holds confidences in (b/n, (b+1)/n]; the top probability is never 0.
        bins = np.clip(np.ceil(top * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
        count = np.bincount(bins, minlength=n_bins)
        confidence = _safe_divide(np.bincount(bins, weights=top, minlength=n_bins), count)
        acc = _safe_divide(np.bincount(bins, weights=correct.astype(np.float64), minlength=n_bins), count)
    return {"edges": edges, "count": count, "confidence": confidence, "accuracy": acc}


def expected_calibration_error(y_true, probs, n_bins: int = 15) -> float:
    """ECE: the image-weighted mean gap between confidence and accuracy over the confidence bins."""
    bins = reliability_bins(y_true, probs, n_bins)
    total = bins["count"].sum()
    if total == 0:
        return 0.0
    return float(np.sum(bins["count"] * np.abs(bins["accuracy"] - bins["confidence"])) / total)


def fit_temperature(logits, y_true, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T that minimises the negative log-likelihood of softmax(logits / T).

    One parameter and a convex-looking objective in log T, so a bounded 1-D search is exact enough
    and needs no gradient plumbing.
    """
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    if len(y_true) == 0:
        return 1.0
    rows = np.arange(len(y_true))

    def nll(log_t: float) -> float:
        return float(-np.mean(log_softmax(logits, np.exp(log_t))[rows, y_true]))

    found = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                            options={"xatol": 1e-5})
    return float(np.exp(found.x))


def one_vs_rest_scores(y_true, probs, num_classes: int) -> tuple[list[float | None], list[float | None]]:
    """ROC AUC and average precision of every class against the rest; None where a class has no
    positive (or no negative) image, since the score is then undefined."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    aucs, aps = [], []
    for c in range(num_classes):
        positive = y_true == c
        if positive.all() or not positive.any():
            aucs.append(None)
            aps.append(None)
            continue
        aucs.append(float(roc_auc_score(positive, probs[:, c])))
        aps.append(float(average_precision_score(positive, probs[:, c])))
    return aucs, aps


def pr_curves(y_true, probs, num_classes: int) -> dict:
    """Precision-recall curve of every class present in y_true: {class: (recall, precision, AP)}."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    curves = {}
    for c in range(num_classes):
        positive = y_true == c
        if not positive.any():
            continue
        precision, recall, _ = precision_recall_curve(positive, probs[:, c])
        curves[c] = (recall, precision, float(average_precision_score(positive, probs[:, c])))
    return curves


def most_confused_pairs(cm: np.ndarray, class_names: list[str], top: int = 10) -> list[dict]:
    """The off-diagonal cells with the most images: which true class is taken for which."""
    cm = np.asarray(cm, dtype=np.int64)
    row_totals = cm.sum(axis=1)
    pairs = [
        {"true": class_names[i], "predicted": class_names[j], "count": int(cm[i, j]),
         "rate": round(float(cm[i, j] / row_totals[i]), 6)}
        for i in range(len(class_names)) for j in range(len(class_names)) if i != j and cm[i, j] > 0
    ]
    pairs.sort(key=lambda p: (-p["count"], -p["rate"], p["true"], p["predicted"]))
    return pairs[:top]


def _mean(values: list[float | None], weights=None) -> float | None:
    """Mean over the defined values (None skipped), optionally weighted."""
    keep = [i for i, v in enumerate(values) if v is not None]
    if not keep:
        return None
    v = np.array([values[i] for i in keep], dtype=np.float64)
    if weights is None:
        return float(v.mean())
    w = np.asarray(weights, dtype=np.float64)[keep]
    return float(np.sum(v * w) / w.sum()) if w.sum() > 0 else None


def evaluation_report(y_true, probs, class_names: list[str], n_bins: int = 15) -> dict:
    """Every number ``imgcls val`` reports, as plain JSON types (None where undefined): classification_report,
    with ROC AUC and average precision per class and in the means, support-weighted means, top-5 accuracy, log
    loss, ECE and the most confused pairs."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n = len(class_names)
    predicted = probs.argmax(axis=1) if len(y_true) else np.zeros(0, dtype=np.int64)
    cm = confusion_matrix(y_true, predicted, n)
    report = classification_report(cm, class_names)
    per = per_class_metrics(cm)
    aucs, aps = one_vs_rest_scores(y_true, probs, n)
    columns = {"precision": list(per["precision"]), "recall": list(per["recall"]),
               "specificity": list(per["specificity"]), "f1": list(per["f1"]), "roc_auc": aucs,
               "average_precision": aps}
    per_class = {name: {key: _round(values[i]) for key, values in columns.items()} | {"support": int(per["support"][i])}
                 for i, name in enumerate(class_names)}
    return {"images": report["images"], "accuracy": report["accuracy"],
            "top5_accuracy": _round(top_k_accuracy(y_true, probs, 5)), "log_loss": _round(log_loss(y_true, probs)),
            "ece": _round(expected_calibration_error(y_true, probs, n_bins)), "per_class": per_class,
            "macro_avg": {key: _round(_mean(values)) for key, values in columns.items()},
            "weighted_avg": {key: _round(_mean(values, per["support"])) for key, values in columns.items()},
            "confusion_matrix": report["confusion_matrix"], "most_confused_pairs": most_confused_pairs(cm, class_names)}


def most_confident_mistakes(y_true, probs, n: int = 16) -> np.ndarray:
    """Indices of the wrong predictions, the most confident first."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs)
    if len(y_true) == 0:
        return np.zeros(0, dtype=np.int64)
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    order = np.argsort(-probs[wrong, predicted[wrong]], kind="stable")
    return wrong[order][:n]


def mistake_rows(paths: list[str], y_true, probs, class_names: list[str], n: int = 16) -> list[dict]:
    """The ``n`` most confident mistakes as rows: path, true class, predicted class, confidence."""
    rows = []
    for i in most_confident_mistakes(y_true, probs, n):
        predicted = int(np.argmax(probs[i]))
        rows.append({"path": paths[i], "true": class_names[int(y_true[i])], "predicted": class_names[predicted],
                     "confidence": round(float(probs[i][predicted]), 6)})
    return rows


# ---------------------------------------------------------------- open-set recognition: "none of these"

OPEN_SET_SCORES = ("energy", "max_logit", "familiarity")


def open_set_score(logits, kind: str = "energy", familiarity=None) -> np.ndarray:
    """How much an input looks like the training data (higher = more familiar).

    ``energy``: logsumexp of the logits, the negative free energy (Liu et al., 2020); ``max_logit``: the largest
    logit (Hendrycks et al., 2022). Both use raw logits, so a later temperature does not move them, and every
    runtime and exported format gives them. ``familiarity``: the network's own second output, which adds the
    distance of the pooled features to the classes (models/familiarity.py), passed as ``familiarity``.
    """
    if kind == "familiarity":
        if familiarity is None:
            raise ValueError("the familiarity score needs the network's familiarity output")
        return np.asarray(familiarity, dtype=np.float64).reshape(-1)
    z = np.asarray(logits, dtype=np.float64)
    if len(z) == 0:
        return np.zeros(0)
    if kind == "max_logit":
        return z.max(axis=1)
    if kind != "energy":
        raise ValueError(f"unknown open-set score {kind!r}; choose from {OPEN_SET_SCORES}")
    top = z.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]


def rejection_threshold(scores, keep: float) -> float:
    """The score below which an input is rejected so that a share ``keep`` of ``scores`` (in-distribution
    images) is kept: their (1 - keep) quantile."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        raise ValueError("no scores to calibrate a threshold on")
    return float(np.quantile(scores, 1.0 - keep, method="lower"))


def score_quantiles(scores, points: int = 101) -> list[float]:
    """``points`` evenly spaced quantiles of the scores (0%, 1%, ..., 100% by default): enough to place a threshold
    for any share kept later without the scores themselves."""
    return [float(q) for q in np.quantile(np.asarray(scores, dtype=np.float64), np.linspace(0.0, 1.0, points))]


def threshold_from_quantiles(quantiles: list[float], keep: float) -> float:
    """rejection_threshold from stored quantiles, interpolated between them."""
    grid = np.linspace(0.0, 1.0, len(quantiles))
    return float(np.interp(1.0 - keep, grid, np.asarray(quantiles, dtype=np.float64)))


def auroc(in_scores, out_scores) -> float | None:
    """Probability that an in-distribution input scores above an out-of-distribution one (ties count half):
    the area under the ROC curve of telling them apart. None when either side is empty."""
    from sklearn.metrics import roc_auc_score

    a = np.asarray(in_scores, dtype=np.float64)
    b = np.asarray(out_scores, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return None
    return float(roc_auc_score(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b]))


def open_set_report(in_scores, out_scores, threshold: float) -> dict:
    """AUROC and, at ``threshold``, the share of in-distribution inputs rejected and of out-of-distribution
    inputs accepted (the false-accept rate)."""
    a = np.asarray(in_scores, dtype=np.float64)
    b = np.asarray(out_scores, dtype=np.float64)
    area = auroc(a, b)
    return {"auroc": None if area is None else round(area, 6),
            "in_rejected": round(float((a < threshold).mean()), 6) if len(a) else None,
            "false_accept_rate": round(float((b >= threshold).mean()), 6) if len(b) else None,
            "in_images": int(len(a)), "ood_images": int(len(b))}


def rejection_spec(logits, keep: float = 0.95, kind: str = "energy", split: str = "val", familiarity=None) -> dict:
    """What a checkpoint and its exports store to say "none of these": the score, the threshold that keeps a
    share ``keep`` of these (in-distribution) images, and the scores' quantiles so that another share can be
    chosen later (``threshold_from_quantiles``). With ``familiarity`` (the network's second output) the spec is
    that score's, with the logits' ``kind`` spec under "fallback" for a file that gives logits only."""
    def spec(score: str) -> dict:
        scores = open_set_score(logits, score, familiarity)
        return {"score": score, "keep": float(keep), "threshold": rejection_threshold(scores, keep),
                "calibrated_on": split, "images": int(len(scores)), "quantiles": score_quantiles(scores)}

    return spec(kind) if familiarity is None else spec("familiarity") | {"fallback": spec(kind)}


def usable_spec(spec: dict, has_familiarity: bool) -> dict:
    """The part of a stored rejection spec that a network can use: the familiarity score's when it gives that
    output, else the logits' fallback (a file exported without it, or a TFLite or Core ML file)."""
    if spec.get("score") == "familiarity" and not has_familiarity:
        return spec["fallback"]
    return spec


def threshold_for(spec: dict, keep: float | None = None) -> float:
    """The stored threshold, or the one for another share kept, from the stored quantiles."""
    if keep is None or abs(keep - spec["keep"]) < 1e-9:
        return float(spec["threshold"])
    return threshold_from_quantiles(spec["quantiles"], keep)
