"""Metric and schedule functions against scikit-learn and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import precision_recall_fscore_support, recall_score, roc_auc_score

from imgcls.engine.loop import lr_factor
from imgcls.metrics import (accuracy, classification_report, confusion_matrix, per_class_metrics, roc_curves,
                            top_k_accuracy)
from imgcls.record.results import report_from_seed, seed_info


@pytest.mark.parametrize("seed", range(5))
def test_per_class_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n_classes = rng.integers(2, 7)
    y_true = rng.integers(0, n_classes, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, n_classes, 200))
    cm = confusion_matrix(y_true, y_pred, n_classes)
    assert np.array_equal(cm, sk_confusion_matrix(y_true, y_pred, labels=range(n_classes)))
    ours = per_class_metrics(cm)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=range(n_classes), zero_division=0)
    np.testing.assert_allclose(ours["precision"], p)
    np.testing.assert_allclose(ours["recall"], r)
    np.testing.assert_allclose(ours["f1"], f)
    np.testing.assert_array_equal(ours["support"], s)
    # Specificity of class c is the recall of "not c".
    for c in range(n_classes):
        expected = recall_score(y_true != c, y_pred != c, zero_division=0)
        assert ours["specificity"][c] == pytest.approx(expected)
    assert accuracy(cm) == pytest.approx(np.mean(y_true == y_pred))


def test_known_confusion_matrices():
    perfect = np.diag([5, 3, 2])
    m = per_class_metrics(perfect)
    assert all(np.all(m[k] == 1) for k in ("precision", "recall", "specificity", "f1"))
    all_wrong = np.array([[0, 4], [6, 0]])
    m = per_class_metrics(all_wrong)
    assert np.all(m["precision"] == 0) and np.all(m["recall"] == 0) and np.all(m["specificity"] == 0)
    assert accuracy(all_wrong) == 0
    never_predicted = np.array([[3, 1, 0], [0, 4, 0], [2, 2, 0]])  # class 2 is never predicted
    m = per_class_metrics(never_predicted)
    assert m["precision"][2] == 0 and m["recall"][2] == 0 and m["f1"][2] == 0 and m["specificity"][2] == 1
    assert m["precision"][0] == pytest.approx(3 / 5) and m["specificity"][0] == pytest.approx(6 / 8)


SEED_KEYS = ["loss", "accuracy", "cat", "dog", "mean Precision", "mean Recall", "mean Specificity", "mean F1 score",
             "confusion matrix"]


def test_the_seeds_per_epoch_format_is_a_rendering_of_the_one_report():
    """results.json's "train info"/"valid info" keep the seeds' keys, in their order, and read back as the
    report they render."""
    report = classification_report(np.array([[3, 1], [0, 4]]), ["cat", "dog"], loss=0.5)
    assert report["per_class"]["cat"] == {"precision": 1.0, "recall": 0.75, "specificity": 1.0,
                                          "f1": pytest.approx(6 / 7, abs=1e-6), "support": 4}
    assert report["macro_avg"]["recall"] == pytest.approx((0.75 + 1) / 2) and report["images"] == 8
    info = seed_info(report)
    assert list(info) == SEED_KEYS
    assert info["loss"] == 0.5 and info["accuracy"] == pytest.approx(7 / 8)
    assert info["cat"] == {"Precision": 1.0, "Recall": 0.75, "Specificity": 1.0, "F1 score": pytest.approx(6 / 7, abs=1e-6)}
    assert info["mean Recall"] == pytest.approx((0.75 + 1) / 2) and info["confusion matrix"] == [[3, 1], [0, 4]]
    assert report_from_seed(info, ["cat", "dog"]) == report


def test_roc_auc_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    probs = rng.dirichlet([1, 1, 1], 300)
    probs[np.arange(300), y] += 0.5
    probs /= probs.sum(1, keepdims=True)
    curves = roc_curves(y, probs, 3)
    for c in range(3):
        assert curves[c][2] == pytest.approx(roc_auc_score(y == c, probs[:, c]))
    assert curves["macro"][2] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"), abs=0.01)
    assert top_k_accuracy(y, probs, k=3) == 1.0


def test_lr_schedule_warms_up_then_decays_to_lrf():
    total, warmup, lrf = 100, 10, 0.01
    factors = [lr_factor(s, total, warmup, lrf) for s in range(total)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # monotone decay after warmup
    assert lr_factor(total, total, warmup, lrf) == pytest.approx(lrf)
    assert lr_factor(10 + 45, total, warmup, lrf) == pytest.approx(lrf + (1 - lrf) * 0.5)
    assert lr_factor(0, 50, 0, 0.1) == pytest.approx(1.0)
