"""torchrun with two CPU processes (gloo on loopback): one run folder, metrics over the whole val set."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, TINY
from imagegen import make_class_folders


def _torchrun(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "imgcls", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def _val_matches_single_process(run):
    import imgcls

    results = json.loads((run / "results.json").read_text())
    best = results[f"epoch:{results['best epoch']}"]["valid info"]
    single = imgcls.evaluate(run / "weights" / "best.pt", save=False, workers=0)
    assert best["accuracy"] == pytest.approx(single.accuracy, abs=1e-9)
    cm = np.array(best["confusion matrix"])
    assert cm.sum() == results["dataset"]["val"]["total"]  # every val image counted exactly once
    expected = np.zeros_like(cm)
    for t, p in zip(single.y_true, single.probs.argmax(1)):
        expected[t, p] += 1
    assert np.array_equal(cm, expected)
    assert best["loss"] == pytest.approx(single.metrics["log_loss"], rel=1e-4)
    return results


def test_two_processes_train_one_run(tmp_path):
    # 3 val images per class, 9 in all: the DistributedSampler pads one, which must not be counted twice.
    data = make_class_folders(tmp_path / "data", per_class=15)
    proc = _torchrun("train", "--data", data, *TINY, "--epochs", "2", "--split", "0.8,0.2", "--project", tmp_path / "runs",
                     cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Distributed: 2 processes (gloo)" in proc.stderr
    assert proc.stderr.count("Results saved to") == 1  # rank 0 alone speaks
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["train"]
    run = tmp_path / "runs" / "train"
    assert (run / "weights" / "best.pt").exists() and (run / "confusion_matrix_val.png").exists()
    results = _val_matches_single_process(run)
    assert results["dataset"]["val"]["total"] % 2 == 1  # an odd count: the padding case is exercised


def test_two_processes_share_the_feature_cache(tmp_path, trained_run):
    data = make_class_folders(tmp_path / "data", per_class=15)
    proc = _torchrun("train", "--data", data, "--model", "simple_cnn", "--weights", trained_run / "weights" / "best.pt",
                     "--freeze", "--imgsz", "32", "--batch-size", "8", "--workers", "0", "--epochs", "3",
                     "--project", tmp_path / "runs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Feature cache:" in proc.stderr
    _val_matches_single_process(tmp_path / "runs" / "train")


def test_two_processes_run_one_budget_plan(tmp_path, trained_run):
    """The default (planned) path under torchrun: rank 0 measures and plans, every rank runs that plan."""
    data = make_class_folders(tmp_path / "data", per_class=15)
    proc = _torchrun("train", "--data", data, "--model", "simple_cnn", "--weights", trained_run / "weights" / "best.pt",
                     "--imgsz", "32", "--batch-size", "8", "--workers", "0", "--budget", "30s",
                     "--project", tmp_path / "runs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("Plan for --budget 30s") == 1
    run = tmp_path / "runs" / "train"
    results = _val_matches_single_process(run)
    phases = results["phases"]
    assert [p["name"] for p in phases] == ["probe", "tune"]
    ran = [results[f"epoch:{i}"]["phase"] for i in range(1, 1 + sum(k.startswith("epoch:") for k in results))]
    assert ran[:phases[0]["epochs"]] == ["probe"] * phases[0]["epochs"] and set(ran[phases[0]["epochs"]:]) == {"tune"}


def test_a_failing_rank_ends_the_run_with_a_clear_message(tmp_path):
    proc = _torchrun("train", "--data", tmp_path / "missing", *TINY, cwd=tmp_path)
    assert proc.returncode != 0
    # Each failing rank names itself and the cause in one line; torchrun then stops the whole run.
    assert f"imgcls: error (rank 0 of 2): --data {tmp_path / 'missing'}: folder not found" in proc.stderr
    assert "ChildFailedError" in proc.stderr and "imgcls" in proc.stderr


def test_gpu_paths_choose_nccl_local_device_and_fp16(monkeypatch):
    """CI has no GPU: check the decisions the CUDA path makes, up to the device calls themselves."""
    import torch

    from imgcls.engine import distributed
    from imgcls.runtime.device import autocast

    calls = {}
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.setdefault("set_device", index))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda backend, **kw: calls.update(backend=backend, device_id=kw.get("device_id")))
    device = distributed.setup("auto")
    assert device == torch.device("cuda", 1) and calls["set_device"] == 1
    assert calls["backend"] == "nccl" and calls["device_id"] == torch.device("cuda", 1)
    assert not distributed.is_main()

    monkeypatch.setenv("LOCAL_RANK", "2")  # more processes on a node than GPUs
    from imgcls.errors import ImgclsError

    with pytest.raises(ImgclsError, match="only 2 GPU"):
        distributed.setup("auto")

    mixed = autocast(torch.device("cuda", 0), True)
    assert isinstance(mixed, torch.autocast) and mixed.fast_dtype == torch.float16
    assert not isinstance(autocast(torch.device("cpu"), True), torch.autocast)  # --amp is for CUDA only
    import logging

    logging.getLogger("imgcls").setLevel(logging.INFO)


def test_a_network_built_on_the_cpu_runs_on_the_device_it_is_given():
    """The --reject score's fit builds its network from the checkpoint on the CPU and runs it on the training
    device: on CUDA every run failed at its end until the runner moved the network there (found on an H200).
    CI has no GPU: PyTorch's meta device stands in for one."""
    import torch

    from imgcls.runtime.pytorch import fastest_runner

    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    fastest_runner(network, (3, 16, 16), device="meta")
    assert {p.device.type for p in network.parameters()} == {"meta"}


def test_merge_by_index_drops_sampler_padding():
    from imgcls.engine.distributed import merge_by_index

    parts = [{"indices": np.array([0, 2, 4]), "v": np.array([10, 12, 14])},
             {"indices": np.array([1, 3, 0]), "v": np.array([11, 13, 10])}]  # index 0 padded onto rank 1
    merged = merge_by_index(parts)
    assert merged["indices"].tolist() == [0, 1, 2, 3, 4] and merged["v"].tolist() == [10, 11, 12, 13, 14]
