"""A native fast path that crashes the process (a segmentation fault in PyTorch's kernels for one architecture on
one CPU) is tried once in a forked child, remembered, and costs only that path: the run goes on without it."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin",
                                reason="the trial runs in a forked child")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_path_that_crashes_is_found_in_a_child_and_remembered(cache, monkeypatch):
    from imgcls.runtime import device

    def segfault():
        os.kill(os.getpid(), signal.SIGSEGV)

    assert device.survives("channels_last", "a crashing model", segfault) is False
    assert device.survives("channels_last", "a sound model", lambda: None) is True
    assert sorted(json.loads((cache / device.PROBES_FILE).read_text()).values()) == ["crash", "ok"]

    def no_fork():
        raise AssertionError("the outcome is remembered: no second child")

    monkeypatch.setattr(os, "fork", no_fork)
    assert device.survives("channels_last", "a crashing model", lambda: None) is False
    assert device.survives("channels_last", "a sound model", segfault) is True


def test_a_child_that_hangs_is_not_taken_for_a_crash(cache):
    import time

    from imgcls.runtime import device

    assert device.survives("bf16 autocast", "slow", lambda: time.sleep(30), timeout=0.5) is True
    assert not (cache / device.PROBES_FILE).exists()  # tried again next time


def test_training_goes_on_in_the_default_memory_format_when_channels_last_crashes(cli, flat_data, tmp_path,
                                                                                 monkeypatch):
    """Where channels_last crashes this model here, training, validation and the final evaluation run without
    it, with one warning line, and the run finishes as any other."""
    from imgcls.runtime import device

    monkeypatch.setattr(device, "_in_child", lambda trial, timeout: "crash")
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(device, "_warned", set())
    code, _, err = cli("train", "--data", flat_data, "--model", "simple_cnn", "--no-pretrained", "--imgsz", "32",
                       "--epochs", "2", "--batch-size", "8", "--workers", "0", "--runtime", "torch",
                       "--project", tmp_path / "runs")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "channels_last crashes" in line]
    assert len(warnings) == 1 and "simple_cnn" in warnings[0]
    assert (tmp_path / "runs" / "train" / "report.html").exists()


def _segfaulting_sessions(monkeypatch):
    """ONNX Runtime sessions that crash the process on their first batch, as one of its kernels can on one graph
    on one CPU: the parent must never run one (the test process would die), the child that tries it does."""
    pytest.importorskip("onnxruntime")
    from imgcls.runtime import pytorch
    from imgcls.runtime.runner import Runner

    def crashing(model, *, threads, name=pytorch.ORT):
        return Runner(name, lambda inputs: os.kill(os.getpid(), signal.SIGSEGV))

    monkeypatch.setattr(pytorch, "onnx_runner", crashing)


def test_an_onnx_runtime_that_crashes_on_a_network_is_never_run_and_pytorch_runs_it(cache, trained_run, monkeypatch):
    import torch

    from imgcls.models.parts import PreLogits
    from imgcls.models.simple_cnn import SimpleCNN
    from imgcls.record.checkpoint import load_checkpoint
    from imgcls.runtime import device, pytorch
    from imgcls.runtime.runner import ORT

    _segfaulting_sessions(monkeypatch)
    monkeypatch.setattr(device, "_warned", set())
    warned = []
    monkeypatch.setattr(device.log, "warning", warned.append)
    features = pytorch.fastest_runner(PreLogits(SimpleCNN(3)), (3, 32, 32))
    runner = pytorch.checkpoint_runner(load_checkpoint(trained_run / "weights" / "best.pt"))
    assert not features.name.startswith(ORT) and not runner.name.startswith(ORT)
    assert runner(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    assert len([line for line in warned if "onnxruntime crashes" in line]) == 1
    probes = json.loads((cache / device.PROBES_FILE).read_text())
    assert [v for k, v in probes.items() if k.startswith(f"{ORT}:")] == ["crash", "crash"]  # both networks

    def no_fork():
        raise AssertionError("the crash is remembered: no second child")

    monkeypatch.setattr(os, "fork", no_fork)
    assert not pytorch.fastest_runner(PreLogits(SimpleCNN(3)), (3, 32, 32)).name.startswith(ORT)
    with pytest.raises(pytorch.ImgclsError, match="crashes on this network"):
        pytorch.checkpoint_runner(load_checkpoint(trained_run / "weights" / "best.pt"), kind="onnxruntime")


def test_training_and_predicting_go_on_in_pytorch_where_onnx_runtime_crashes(cli, flat_data, trained_run, tmp_path,
                                                                            cache, monkeypatch):
    from imgcls.runtime import device

    _segfaulting_sessions(monkeypatch)
    monkeypatch.setattr(device, "_warned", set())
    code, _, err = cli("train", "--data", flat_data, "--model", "simple_cnn", "--weights",
                       trained_run / "weights" / "best.pt", "--imgsz", "32", "--fast", "--epochs", "2",
                       "--batch-size", "8", "--workers", "0", "--project", tmp_path / "runs")
    assert code == 0, err
    assert len([line for line in err.splitlines() if "onnxruntime crashes" in line]) == 1
    code, _, err = cli("predict", "--weights", tmp_path / "runs" / "train" / "weights" / "best.pt", "--source",
                       flat_data / "circle", "--workers", "0", "--out", tmp_path / "predict")
    assert code == 0, err
    assert (tmp_path / "predict" / "predictions.csv").exists()


def test_a_compiled_network_that_crashes_trains_uncompiled(cli, flat_data, tmp_path, cache, monkeypatch):
    """--compile where torch.compile's kernels crash the process (or it cannot compile here): one warning, and
    the network trains as it is."""
    import torch

    from imgcls.runtime import device

    compiled = []
    monkeypatch.setattr(device, "_in_child", lambda trial, timeout: "crash")
    monkeypatch.setattr(device, "_warned", set())
    monkeypatch.setattr(torch, "compile", lambda module, *a, **k: compiled.append(module) or module)
    code, _, err = cli("train", "--data", flat_data, "--model", "simple_cnn", "--no-pretrained", "--imgsz", "32",
                       "--epochs", "1", "--batch-size", "8", "--workers", "0", "--runtime", "torch", "--compile",
                       "--project", tmp_path / "runs")
    assert code == 0, err
    assert not compiled and len([line for line in err.splitlines() if "torch.compile crashes" in line]) == 1
    monkeypatch.setattr(device, "_in_child", lambda trial, timeout: "ok")
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "another machine"))  # where the crash is not remembered
    code, _, err = cli("train", "--data", flat_data, "--model", "simple_cnn", "--no-pretrained", "--imgsz", "32",
                       "--epochs", "1", "--batch-size", "8", "--workers", "0", "--runtime", "torch", "--compile",
                       "--project", tmp_path / "runs", "--name", "compiled")
    assert code == 0, err
    assert compiled  # where it runs, the network trains compiled
