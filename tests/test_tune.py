"""Hyperparameter search: a tiny study completes, resumes, and its best.yaml trains."""

from __future__ import annotations

import csv

import pytest
import yaml

from conftest import TINY

pytest.importorskip("optuna")


def test_tiny_study_completes_resumes_and_best_yaml_trains(cli, flat_data, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 0.001, high: 0.05, log: true}\n"
                     "optim: {type: categorical, choices: [SGD, AdamW]}\n")
    common = ["tune", "--data", flat_data, *TINY, "--epochs", "2", "--space", space, "--project", tmp_path / "runs"]
    code, _, err = cli(*common, "--trials", "2")
    assert code == 0, err
    tune_dir = tmp_path / "runs" / "tune"
    assert (tune_dir / "study.db").exists() and (tune_dir / "summary.png").exists()
    assert len(list(csv.DictReader(open(tune_dir / "trials.csv")))) == 2

    # The same command with more trials resumes the same study instead of starting over.
    code, _, err = cli(*common, "--trials", "3")
    assert code == 0, err
    assert "Resuming study" in err and "2 trial(s) done, 1 to go" in err
    rows = list(csv.DictReader(open(tune_dir / "trials.csv")))
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    assert not (tmp_path / "runs" / "tune2").exists()
    assert sorted(p.name for p in (tune_dir / "trials").iterdir()) == ["trial0", "trial1", "trial2"]

    best = yaml.safe_load((tune_dir / "best.yaml").read_text())
    assert best["optim"] in ("SGD", "AdamW") and 0.001 <= best["lr"] <= 0.05 and best["epochs"] == 2
    code, _, err = cli("train", "--cfg", tune_dir / "best.yaml", "--epochs", "1", "--project", tmp_path / "final")
    assert code == 0, err
    trained = yaml.safe_load((tmp_path / "final" / "train" / "args.yaml").read_text())
    assert trained["lr"] == pytest.approx(best["lr"]) and trained["optim"] == best["optim"]


def test_bad_space_and_timeout_are_clear(cli, flat_data, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {type: float, low: 0.1, high: 0.2}\n")
    code, _, err = cli("tune", "--data", flat_data, "--space", space, "--project", tmp_path / "runs")
    assert code == 2 and "'learning_rate' is not a training setting" in err
    code, _, err = cli("tune", "--data", flat_data, "--timeout", "soon", "--project", tmp_path / "runs")
    assert code == 2 and "--timeout 'soon'" in err


def test_default_space_covers_the_issue():
    from imgcls.config import parse_duration
    from imgcls.engine.tune import DEFAULT_SPACE

    assert {"lr", "weight_decay", "optim", "batch_size", "label_smoothing", "augment", "unfreeze_at"} <= set(DEFAULT_SPACE)
    assert parse_duration("30m") == 1800 and parse_duration("2h") == 7200 and parse_duration("45") == 45


def test_frozen_trials_reuse_the_feature_cache(cli, flat_data, tmp_path, trained_run, monkeypatch):
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))  # an empty cache: the first trial fills it
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 0.001, high: 0.05, log: true}\n")
    code, _, err = cli("tune", "--data", flat_data, "--model", "simple_cnn", "--weights",
                       trained_run / "weights" / "best.pt", "--freeze", "--imgsz", "32", "--workers", "0",
                       "--epochs", "2", "--space", space, "--trials", "2", "--project", tmp_path / "runs")
    assert code == 0, err
    # The backbone ran for the first trial only; the second trains its head on the stored features.
    assert err.count("Feature cache hit") >= 1 and "computing" in err
