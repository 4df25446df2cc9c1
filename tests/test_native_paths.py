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
