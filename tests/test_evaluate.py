"""imgcls val: metric and calibration functions, Grad-CAM, and the command end to end."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn import metrics as skm
from torch import nn

from imagegen import make_class_folders
from imgcls import metrics
from imgcls.reporting.gradcam import grad_cam

EVAL_FILES = ["metrics.json", "predictions_val.csv", "confusion_matrix.png", "confusion_matrix_normalized.png",
              "roc.png", "pr.png", "calibration.png", "errors.png"]


def _random_probs(n=200, k=4, seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(k), size=n)
    y = rng.integers(0, k, size=n)
    return y, probs


# ---- pure metric functions ---------------------------------------------------------------------------------------

def test_log_loss_auc_ap_and_top5_match_scikit_learn():
    y, probs = _random_probs(k=6)
    report = metrics.evaluation_report(y, probs, [f"c{i}" for i in range(6)])
    assert report["log_loss"] == pytest.approx(skm.log_loss(y, probs, labels=range(6)), abs=1e-6)
    assert report["top5_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y, probs, k=5, labels=range(6)),
                                                    abs=1e-6)
    for c in range(6):
        row = report["per_class"][f"c{c}"]
        assert row["roc_auc"] == pytest.approx(skm.roc_auc_score(y == c, probs[:, c]), abs=1e-6)
        assert row["average_precision"] == pytest.approx(skm.average_precision_score(y == c, probs[:, c]), abs=1e-6)
    pred = probs.argmax(1)
    for avg in ("macro", "weighted"):
        key = f"{avg}_avg"
        assert report[key]["precision"] == pytest.approx(
            skm.precision_score(y, pred, average=avg, zero_division=0), abs=1e-6)
        assert report[key]["recall"] == pytest.approx(skm.recall_score(y, pred, average=avg, zero_division=0), abs=1e-6)
        assert report[key]["f1"] == pytest.approx(skm.f1_score(y, pred, average=avg, zero_division=0), abs=1e-6)
    assert report["macro_avg"]["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"), abs=1e-6)


def test_perfect_predictions():
    y = np.array([0, 1, 2, 2, 1, 0])
    probs = np.eye(3)[y]
    report = metrics.evaluation_report(y, probs, ["a", "b", "c"])
    assert report["accuracy"] == 1.0
    assert report["log_loss"] == pytest.approx(0.0, abs=1e-9)
    assert report["ece"] == 0.0
    assert report["macro_avg"] == {k: 1.0 for k in report["macro_avg"]}
    assert report["most_confused_pairs"] == []


def test_all_wrong_predictions():
    y = np.array([0, 1, 2, 0])
    probs = np.full((4, 3), 0.1)
    probs[np.arange(4), (y + 1) % 3] = 0.8
    report = metrics.evaluation_report(y, probs, ["a", "b", "c"])
    assert report["accuracy"] == 0.0
    assert report["macro_avg"]["f1"] == 0.0 and report["macro_avg"]["recall"] == 0.0
    assert report["ece"] == pytest.approx(0.8)  # 80% confident, never right
    assert report["log_loss"] == pytest.approx(-np.log(0.1))
    assert report["most_confused_pairs"][0] == {"true": "a", "predicted": "b", "count": 2, "rate": 1.0}


def test_class_never_predicted_and_class_absent():
    # class 2 is never predicted; class 3 has no image at all
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 0])
    probs = np.full((6, 4), 0.05)
    probs[np.arange(6), pred] = 0.85
    report = metrics.evaluation_report(y, probs, ["a", "b", "c", "d"])
    c = report["per_class"]["c"]
    assert c["precision"] == 0.0 and c["recall"] == 0.0 and c["f1"] == 0.0 and c["support"] == 2
    assert c["specificity"] == 1.0
    d = report["per_class"]["d"]
    assert d["support"] == 0 and d["roc_auc"] is None and d["average_precision"] is None
    assert report["macro_avg"]["precision"] == pytest.approx(
        skm.precision_score(y, pred, labels=range(4), average="macro", zero_division=0))
    json.dumps(report, allow_nan=False)  # undefined scores are null, never NaN


def test_ece_and_reliability_bins_by_hand():
    # 10 images at confidence 0.9, 6 of them right; 10 at 0.6, all right
    probs = np.array([[0.9, 0.1]] * 10 + [[0.4, 0.6]] * 10)
    y = np.array([0] * 6 + [1] * 4 + [1] * 10)
    bins = metrics.reliability_bins(y, probs, n_bins=10)
    assert bins["count"].sum() == 20
    assert bins["count"][8] == 10 and bins["accuracy"][8] == pytest.approx(0.6)
    assert bins["count"][5] == 10 and bins["confidence"][5] == pytest.approx(0.6)
    assert metrics.expected_calibration_error(y, probs, n_bins=10) == pytest.approx(0.5 * 0.3 + 0.5 * 0.4)


def test_fit_temperature_recovers_overconfidence():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0, 2.0, size=(20_000, 5))
    p = metrics.softmax(true_logits)
    y = np.array([rng.choice(5, p=row) for row in p])
    overconfident = true_logits * 3.0
    t = metrics.fit_temperature(overconfident, y)
    assert t == pytest.approx(3.0, rel=0.05)
    assert metrics.log_loss(y, metrics.softmax(overconfident, t)) < metrics.log_loss(y, metrics.softmax(overconfident))
    assert metrics.expected_calibration_error(y, metrics.softmax(overconfident, t)) < 0.02
    assert metrics.expected_calibration_error(y, metrics.softmax(overconfident)) > 0.1


# ---- Grad-CAM ----------------------------------------------------------------------------------------------------

class _PoolLinear(nn.Module):
    """forward_features is the identity, so the feature map is the input: Grad-CAM is known in closed form."""

    def __init__(self, weight):
        super().__init__()
        self.fc = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.fc.weight.data = weight

    def forward_features(self, x):
        return x * 1.0

    def forward_head(self, x):
        return self.fc(x.mean((2, 3)))


def test_grad_cam_matches_closed_form():
    torch.manual_seed(0)
    weight = torch.randn(3, 4)
    model = _PoolLinear(weight)
    features = torch.randn(2, 4, 5, 6)
    cam = grad_cam(model, features, [2, 0])
    for i, c in enumerate([2, 0]):
        expected = torch.relu(torch.einsum("k,khw->hw", weight[c], features[i])).numpy()
        np.testing.assert_allclose(cam[i], expected / expected.max(), atol=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_grad_cam_finds_the_evidence_and_is_empty_without_it():
    model = _PoolLinear(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    features = torch.zeros(1, 2, 7, 7)
    features[0, 0, 5, 1] = 3.0     # evidence for class 0 at one spot
    cam = grad_cam(model, features, [0])[0]
    assert np.unravel_index(cam.argmax(), cam.shape) == (5, 1) and cam.max() == 1.0
    assert not grad_cam(model, features, [1]).any()


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "convnext_atto", "simple_cnn"])
def test_grad_cam_runs_on_cnn_and_convnext_backbones(name):
    import timm

    from imgcls.models.simple_cnn import SimpleCNN

    torch.manual_seed(0)
    model = SimpleCNN(3) if name == "simple_cnn" else timm.create_model(name, pretrained=False, num_classes=3)
    model.train()
    cam = grad_cam(model, torch.randn(2, 3, 64, 64), [0, 1])
    assert cam.shape[0] == 2 and cam.ndim == 3
    assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
    assert model.training  # the caller's mode is restored


@pytest.mark.parametrize("name, size, grid", [("vit_tiny_patch16_224", 64, (4, 4)), ("eva02_tiny_patch14_224", 56, (4, 4)),
                                              ("swin_tiny_patch4_window7_224", 64, (2, 2)), ("levit_128s", 224, (4, 4))])
def test_grad_cam_lays_transformer_tokens_on_their_patch_grid(name, size, grid):
    """Token features (N x tokens x C, class and register tokens first) and Swin's N x H x W x C become maps on the
    patch grid; a ViT that classifies from its class token alone is explained from its last block's input."""
    from imgcls.models.factory import build_model

    torch.manual_seed(0)
    model = build_model(name, 3, img_size=(size, size))
    explained = [grad_cam(model, torch.randn(2, 3, size, size), [c, c]) for c in range(3)]
    assert all(cam.shape == (2, *grid) for cam in explained)
    assert all(np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1 for cam in explained)
    assert any(cam.max() == 1 for cam in explained)  # some class's evidence is found somewhere on the grid


# ---- imgcls val end to end ---------------------------------------------------------------------------------------

@pytest.fixture
def run(trained_run, tmp_path):
    """A private copy of the shared trained run (val writes into it)."""
    return shutil.copytree(trained_run, tmp_path / "run")


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_val_writes_every_file_and_agrees_with_training(cli, run):
    code, out, err = cli("val", "--weights", run / "weights" / "best.pt", "--workers", "0")
    assert code == 0, err
    folder = run / "val"
    for name in EVAL_FILES:
        assert (folder / name).is_file(), name
    for name in EVAL_FILES:
        if name.endswith(".png"):
            with Image.open(folder / name) as im:
                assert im.format == "PNG" and im.width > 300 and im.height > 100
    m = json.loads((folder / "metrics.json").read_text())
    results = json.loads((run / "results.json").read_text())
    best = results[f"epoch:{results['best epoch']}"]["valid info"]
    assert m["split"] == "val" and m["images"] == 15 and m["temperature"] == 1.0
    assert m["accuracy"] == pytest.approx(best["accuracy"])
    assert m["log_loss"] == pytest.approx(best["loss"], abs=1e-4)
    assert m["confusion_matrix"] == best["confusion matrix"]
    assert set(m["per_class"]) == {"circle", "square", "triangle"}
    assert set(m["per_class"]["circle"]) == {"precision", "recall", "specificity", "f1", "support", "roc_auc",
                                              "average_precision"}
    for key in ("top5_accuracy", "ece", "macro_avg", "weighted_avg", "most_confused_pairs",
                "most_confident_mistakes"):
        assert key in m
    rows = _read_csv(folder / "predictions_val.csv")
    assert len(rows) == 15 and set(rows[0]) == {"path", "true", "predicted", "confidence", "p_circle", "p_square",
                                                "p_triangle"}
    assert sum(r["true"] == r["predicted"] for r in rows) / 15 == pytest.approx(m["accuracy"])
    assert "accuracy" in err and "Results saved to" in err
    assert cli("val", "--weights", run / "weights" / "best.pt", "--workers", "0")[0] == 0
    assert (run / "val2" / "metrics.json").is_file() and (folder / "metrics.json").read_text() == json.dumps(
        m, indent=2, ensure_ascii=False) + "\n"  # the first folder is untouched


def test_evaluate_api_metrics_are_metrics_json(run):
    import imgcls
    import imgcls.engine.evaluate  # the module must not hide the function imgcls.evaluate

    result = imgcls.evaluate(run / "weights" / "best.pt", split="test", workers=0, errors=4)
    assert isinstance(result, imgcls.EvalResult)
    assert result.out_dir == run / "val"
    assert result.metrics == json.loads((result.out_dir / "metrics.json").read_text())
    assert result.metrics["split"] == "test" and result.metrics["images"] == 15
    assert len(result.metrics["most_confident_mistakes"]) <= 4
    assert result.probs.shape == (15, 3) and np.allclose(result.probs.sum(1), 1)


def test_flip_tta_averages_two_views(run):
    import imgcls
    import imgcls.engine.evaluate  # the module must not hide the function imgcls.evaluate

    plain = imgcls.evaluate(run / "weights" / "best.pt", workers=0, save=False)
    tta = imgcls.evaluate(run / "weights" / "best.pt", workers=0, tta=True, save=False)
    assert tta.metrics["tta"] is True and plain.out_dir is None
    assert plain.paths == tta.paths
    assert not np.allclose(plain.probs, tta.probs)  # the shapes sit off-centre, so the mirror image differs


def test_calibrate_stores_the_temperature_in_the_checkpoint(cli, run):
    weights = run / "weights" / "best.pt"
    before = torch.load(weights, weights_only=True)
    code, _, err = cli("val", "--weights", weights, "--calibrate", "--workers", "0")
    assert code == 0, err
    after = torch.load(weights, weights_only=True)
    m = json.loads((run / "val" / "metrics.json").read_text())
    cal = m["calibration"]
    assert after["temperature"] == pytest.approx(cal["temperature"], abs=1e-6) and after["temperature"] != 1.0
    assert cal["ece_after"] <= cal["ece_before"] and cal["log_loss_after"] <= cal["log_loss_before"]
    assert "ECE" in err and str(weights) in err
    assert after.keys() == before.keys() and before["temperature"] == 1.0  # only the card's temperature changed
    assert all(torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in before["state_dict"])
    # later evaluations use the stored temperature
    code, _, _ = cli("val", "--weights", weights, "--workers", "0")
    again = json.loads((run / "val2" / "metrics.json").read_text())
    assert again["temperature"] == m["temperature"] and again["ece"] == pytest.approx(cal["ece_after"])


def test_val_on_another_folder_with_the_same_classes_reports_a_missing_class(cli, run, tmp_path):
    data = make_class_folders(tmp_path / "new", classes=("circle", "square"), per_class=3, seed=7)
    code, _, err = cli("val", "--weights", run / "weights" / "best.pt", "--data", data, "--workers", "0")
    assert code == 0, err
    m = json.loads((run / "val" / "metrics.json").read_text())
    assert m["split"] == "all" and m["images"] == 6 and m["missing_classes"] == ["triangle"]
    assert m["per_class"]["triangle"]["support"] == 0 and m["per_class"]["triangle"]["roc_auc"] is None
    assert "WARNING" in err and "triangle" in err


def test_bad_inputs_give_one_clear_line_and_write_nothing(cli, run, tmp_path):
    weights = run / "weights" / "best.pt"
    code, _, err = cli("val", "--weights", tmp_path / "nope.pt")
    assert code == 2 and err.strip().count("\n") == 0 and "nope.pt" in err and "not found" in err

    plain = tmp_path / "other_tool.pt"
    torch.save(nn.Linear(3, 2).state_dict(), plain)
    code, _, err = cli("val", "--weights", plain)
    assert code == 2 and "not an imgcls checkpoint" in err and "other_tool.pt" in err

    other = make_class_folders(tmp_path / "animals", classes=("cat", "circle"), per_class=2)
    code, _, err = cli("val", "--weights", weights, "--data", other)
    assert code == 2 and err.strip().count("\n") == 0
    assert "'cat'" in err and "not classes of this model" in err

    code, _, err = cli("val", "--weights", weights, "--calibrate", "--split", "test")
    assert code == 2 and "--calibrate" in err
    assert not list(run.glob("val*")), "a failed val must not leave a folder behind"
    assert torch.load(weights, weights_only=True)["temperature"] == 1.0


def test_train_test_block_and_val_metrics_are_one_record(cli, split_data, tmp_path):
    """results.json's "test" and `imgcls val --split test`'s metrics.json agree key for key, value for value."""
    code, _, err = cli("train", "--data", split_data, "--epochs", "2", "--model", "simple_cnn", "--no-pretrained",
                       "--imgsz", "32", "--batch-size", "8", "--workers", "0", "--project", tmp_path / "runs")
    assert code == 0, err
    run = tmp_path / "runs" / "train"
    code, _, err = cli("val", "--weights", run / "weights" / "best.pt", "--split", "test", "--workers", "0")
    assert code == 0, err
    test = json.loads((run / "results.json").read_text())["test"]
    metrics = json.loads((run / "val" / "metrics.json").read_text())
    assert list(test) == list(metrics)
    assert test == metrics
    assert test["split"] == "test" and test["images"] > 0 and "per_class" in test and "macro_avg" in test
