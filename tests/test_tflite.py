"""TFLite through ONNX and onnx2tf: FP32 and INT8 files that run in LiteRT, classify on their own, and
work with `imgcls predict` and `imgcls benchmark`.

These tests need the ``tflite`` extra (TensorFlow, onnx2tf, ...). ``pytest`` skips them where it is not
installed; CI installs it in its own step and runs ``pytest -m tflite`` with IMGCLS_TEST_TFLITE=1, where a
missing package fails instead. TensorFlow is never imported into this process: conversion runs in a
child process, and the files are read and run with ai-edge-litert alone.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from imgcls.deploy.formats import TFLITE_PACKAGES

MISSING = [package for module, package in TFLITE_PACKAGES if importlib.util.find_spec(module) is None]
REQUIRED = os.environ.get("IMGCLS_TEST_TFLITE") == "1"   # the CI step that installed the tflite extra

pytestmark = [pytest.mark.tflite,
              pytest.mark.skipif(bool(MISSING) and not REQUIRED,
                                 reason=f"the tflite extra is not installed (missing {', '.join(MISSING)})")]


@pytest.fixture(scope="module", autouse=True)
def _installed():
    if MISSING:  # only reached where IMGCLS_TEST_TFLITE=1 promised the packages
        pytest.fail(f"IMGCLS_TEST_TFLITE=1 but {', '.join(MISSING)} is not installed")


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """A copy of the tiny run with best.tflite and best_int8.tflite (exported once), the export's result and
    the INT8 table it printed."""
    from imgcls.deploy.export import export

    run = shutil.copytree(trained_run, tmp_path_factory.mktemp("tflite") / "run")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = export(run / "weights" / "best.pt", "tflite", int8=True, bench_seconds=0.1)
    return run, result, printed.getvalue()


def _details(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return interpreter.get_input_details()[0], interpreter.get_output_details()[0]


def test_fp32_and_int8_files_run_in_litert_with_their_metadata(exported):
    from imgcls.deploy.tflite import file_metadata

    run, result, _ = exported
    weights = run / "weights"
    assert result.path == weights / "best.tflite" and result.int8_path == weights / "best_int8.tflite"
    # FP32 was checked in LiteRT against PyTorch on the val images before it was kept
    assert result.parity.source == "15 val image(s)" and result.parity.top1_agreement == 1.0
    assert result.parity.max_abs_diff < 1e-3
    # FP32: NHWC float input of batch 1; INT8: int8 input and output with their scale and zero point
    inp, out = _details(weights / "best.tflite")
    assert list(inp["shape"]) == [1, 32, 32, 3] and inp["dtype"] == np.float32 and list(out["shape"]) == [1, 3]
    inp8, out8 = _details(weights / "best_int8.tflite")
    assert inp8["dtype"] == np.int8 and out8["dtype"] == np.int8 and inp8["quantization"][0] > 0
    # the labels and preprocessing travel inside the file
    meta = json.loads(file_metadata(weights / "best.tflite"))
    assert meta["class_names"] == ["circle", "square", "triangle"] and meta["input_layout"] == "NHWC"
    assert meta["preprocess"]["input_size"] == [3, 32, 32] and meta["input_dtype"] == "float32"
    assert json.loads(file_metadata(weights / "best_int8.tflite"))["input_dtype"] == "int8"


def test_int8_report_gives_size_speed_accuracy_and_agreement_with_pytorch(exported):
    run, result, printed = exported
    report = result.int8_report
    assert report["val_images"] == 15 and report["calibration"] == "36 train image(s)"
    assert report["fp32"]["top1_agreement_with_pytorch"] == 1.0
    assert report["int8"]["top1_agreement_with_pytorch"] >= 0.8 and report["int8"]["val_accuracy"] >= 0.6
    assert report["int8"]["size_bytes"] < report["fp32"]["size_bytes"] / 3
    for line in ("file size", "img/s, batch 1", "val accuracy (15 images)", "top-1 agreement with PyTorch"):
        assert line in printed


def test_predict_with_tflite_gives_the_labels_of_the_checkpoint(exported, tmp_path, cli):
    from imagegen import make_class_folders

    run = exported[0]
    images = make_class_folders(tmp_path / "images", per_class=4, seed=11)
    answers = {}
    for weights in ("best.pt", "best.tflite", "best_int8.tflite"):
        out = tmp_path / f"pred_{weights}"
        code, _, err = cli("predict", "--weights", run / "weights" / weights, "--source", images, "--out", out)
        assert code == 0, err
        rows = list(csv.DictReader(open(out / "predictions.csv", encoding="utf-8")))
        assert len(rows) == 12
        answers[weights] = {r["path"]: r for r in rows}
    for path, row in answers["best.pt"].items():
        tflite = answers["best.tflite"][path]
        margin = float(row["confidence"]) - float(row["top2_confidence"])
        if margin > 0.01:
            assert tflite["predicted"] == row["predicted"], path
        assert abs(float(tflite["confidence"]) - float(row["confidence"])) < 1e-3
    agree = np.mean([answers["best_int8.tflite"][p]["predicted"] == r["predicted"]
                     for p, r in answers["best.pt"].items()])
    assert agree >= 0.75


def test_benchmark_times_tflite(trained_run, tmp_path, cli):
    run = shutil.copytree(trained_run, tmp_path / "run")
    code, out, err = cli("benchmark", "--weights", run / "weights" / "best.pt", "--backends", "torch,tflite",
                         "--batch", "1,4", "--seconds", "0.1", "--threads", "1")
    assert code == 0, err
    rows = list(csv.DictReader(open(run / "benchmark" / "benchmark.csv")))
    assert [(r["backend"], r["batch"]) for r in rows] == [("torch", "1"), ("torch", "4"), ("tflite", "1"),
                                                          ("tflite", "4")]
    assert all(float(r["img_per_s"]) > 0 for r in rows)


def test_same_padding_model_converts(tmp_path, cli):
    """The default model's family (TF "same" padding, computed from the input size at run time) converts
    because the ONNX graph is constant-folded first; random weights and no data: parity on random inputs."""
    import torch
    from samepadding import same_padding_checkpoint

    weights = same_padding_checkpoint(tmp_path / "run" / "weights" / "best.pt")
    torch.manual_seed(0)
    code, _, err = cli("export", "--weights", weights, "--format", "tflite")
    assert code == 0, err
    assert "parity on 8 random input(s)" in err and "top-1 agreement 100.0% (8/8)" in err


def test_tensorflow_is_never_imported_next_to_torch(tmp_path):
    """TensorFlow then torch's triton crashes the process; with TensorFlow installed, the TensorBoard tracker
    and the Core ML converter must not import it (both would by default)."""
    code = (
        "import sys, torch\n"
        "from imgcls.engine.trackers import TensorBoardTracker\n"
        f"TensorBoardTracker().start(__import__('pathlib').Path({str(tmp_path)!r}), {{'epochs': 1}}, False)\n"
        "from imgcls.deploy.coreml import import_coremltools\n"
        "import_coremltools()\n"
        "assert 'tensorflow' not in sys.modules or sys.modules['tensorflow'] is None, 'tensorflow imported'\n"
        "import torch._dynamo\n"
        "print('ok')\n")
    env = dict(os.environ, PYTHONPATH=str(__import__("conftest").REPO))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_a_network_tuned_on_mirrored_activations_converts_exactly(trained_run, tmp_path):
    """The default plan's tuned network predicts from its activations and their mirror image: the TFLite file
    computes exactly that (torch.flip went through onnx2tf as a flip of another axis)."""
    import torch

    from imgcls.deploy.export import export
    from imgcls.deploy.formats import load_exported
    from mirrored import expected_logits, make_mirrored

    run = shutil.copytree(trained_run, tmp_path / "run")
    checkpoint = make_mirrored(run / "weights" / "best.pt")
    export(run / "weights" / "best.pt", "tflite")
    runner, _ = load_exported(run / "weights" / "best.tflite")
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    expected, plain = expected_logits(checkpoint, images)
    logits = runner.outputs(images.numpy())[0]
    assert np.allclose(logits, expected.numpy(), atol=1e-4)
    assert not np.allclose(logits, plain.numpy(), atol=1e-3)

