"""imgcls benchmark: img/s and latency per runtime, written as CSV and JSON into the run."""

from __future__ import annotations

import csv
import json
import shutil
import sys

import numpy as np
import pytest

from imgcls.deploy.benchmark import parse_batches
from imgcls.runtime.runner import measure


@pytest.fixture
def run(trained_run, tmp_path):
    return shutil.copytree(trained_run, tmp_path / "run")


def test_benchmark_writes_table_for_each_backend_and_batch(cli, run):
    code, out, err = cli("benchmark", "--weights", run / "weights" / "best.pt", "--backends", "torch,onnx,onnx-int8",
                         "--batch", "1,4", "--seconds", "0.1", "--threads", "1")
    assert code == 0, err
    assert out.splitlines()[0].split() == ["backend", "batch", "img/s", "p50", "ms", "p95", "ms"]
    with open(run / "benchmark" / "benchmark.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["backend"], r["batch"]) for r in rows] == [("torch", "1"), ("torch", "4"), ("onnx", "1"),
                                                          ("onnx", "4"), ("onnx-int8", "1"), ("onnx-int8", "4")]
    assert all(float(r["img_per_s"]) > 0 and float(r["p95_ms"]) >= float(r["p50_ms"]) > 0 for r in rows)
    table = json.loads((run / "benchmark" / "benchmark.json").read_text())
    assert table["model"] == "simple_cnn" and len(table["results"]) == 6 and table["machine"]["cores"] >= 1
    assert table["machine"]["threads"] == 1 and table["machine"]["torch_threads"] == 1
    # A second benchmark never overwrites the first: the first folder's files are byte for byte as they were.
    first = {p.name: p.read_bytes() for p in (run / "benchmark").iterdir()}
    assert cli("benchmark", "--weights", run / "weights" / "best.pt", "--backends", "onnx", "--batch", "1",
               "--seconds", "0.05")[0] == 0
    assert {p.name: p.read_bytes() for p in (run / "benchmark").iterdir()} == first
    second = json.loads((run / "benchmark2" / "benchmark.json").read_text())
    assert [(r["backend"], r["batch"]) for r in second["results"]] == [("onnx", 1)]


def test_backend_without_its_package_is_skipped_with_the_package_named(cli, run, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    code, out, err = cli("benchmark", "--weights", run / "weights" / "best.pt", "--backends", "torch,openvino",
                         "--batch", "1", "--seconds", "0.05")
    assert code == 0, err
    assert "WARNING: backend openvino skipped: missing package openvino" in err
    table = json.loads((run / "benchmark" / "benchmark.json").read_text())
    assert [r["backend"] for r in table["results"]] == ["torch"] and "openvino" in table["skipped"]


@pytest.mark.parametrize("args, message", [
    (["--backends", "torch,tensorrt"], "--backends tensorrt: unknown"),
    (["--batch", "1,x"], "--batch '1,x': expected whole numbers"),
    (["--batch", "0"], "batch sizes must be 1 or more"),
    (["--threads", "0"], "--threads 0: must be 1 or more"),
])
def test_bad_benchmark_options_are_one_line_errors(cli, run, args, message):
    code, _, err = cli("benchmark", "--weights", run / "weights" / "best.pt", *args)
    assert code == 2 and message in err


def test_measure_reports_throughput_and_latency_percentiles(monkeypatch):
    """On a fake clock (a loaded CI machine must not change the answer): calls of 10 ms, one slow call of 50 ms."""
    import imgcls.runtime.pytorch as runners

    clock = [0.0]
    monkeypatch.setattr(runners.time, "perf_counter", lambda: clock[0])
    calls = []

    def call(batch):
        calls.append(1)
        clock[0] += 0.05 if len(calls) == 3 else 0.01

    result = measure(call, np.zeros((4, 1)), seconds=0.2, warmup=0, min_runs=5)
    assert result["runs"] == len(calls) == 16  # calls until 0.2 s of fake time: 15 of 10 ms and the slow one
    assert result["p50_ms"] == pytest.approx(10) and result["p95_ms"] > 10
    assert result["img_per_s"] == pytest.approx(4 * 16 / clock[0])
    assert parse_batches("1, 32") == [1, 32]
