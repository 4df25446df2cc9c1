"""imgcls export: files that classify on their own, parity with PyTorch, INT8, optional formats."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys

import numpy as np
import pytest
import torch
import yaml

from imgcls.deploy import export as export_mod
from imgcls.deploy.formats import load_exported
from imgcls.deploy.parity import compare_logits
from imgcls.errors import ImgclsError
from imgcls.models.factory import model_from_checkpoint
from imgcls.record.checkpoint import card_of, load_checkpoint, save_checkpoint


@pytest.fixture
def run(trained_run, tmp_path):
    """A private copy of the shared tiny run, so exports never write into the shared one."""
    return shutil.copytree(trained_run, tmp_path / "run")


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _val_images(run):
    data = yaml.safe_load((run / "args.yaml").read_text())["data"]
    from pathlib import Path

    return sorted(Path(data, "val").rglob("*.png"))


def test_onnx_export_classifies_on_its_own(cli, run):
    import onnx
    import onnxruntime as ort

    from imgcls.data.images import load_image
    from imgcls.data.transforms import eval_transform

    best = run / "weights" / "best.pt"
    before = _sha(best)
    code, out, err = cli("export", "--weights", best)
    assert code == 0, err
    onnx_path = run / "weights" / "best.onnx"
    assert onnx_path.exists() and _sha(best) == before  # next to the checkpoint, which is untouched
    assert "parity on 15 val image(s)" in err and "top-1 agreement 100.0% (15/15)" in err

    proto = onnx.load(str(onnx_path))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["imgcls"])
    checkpoint = load_checkpoint(best)
    card = card_of(checkpoint)  # the file carries the checkpoint's model card, and names its two outputs
    assert meta == {"format": "imgcls-onnx", "version": 1, **card.to_dict()}
    assert meta["model_name"] == "simple_cnn" and meta["class_names"] == ["circle", "square", "triangle"]
    assert meta["temperature"] == 1.0 and meta["outputs"] == ["logits", "familiarity"]
    assert meta["weights_source"] == "random initialisation (--no-pretrained)" and meta["metrics"]["val_accuracy"] > 0
    assert meta["rejection"]["score"] == "familiarity" and meta["rejection"]["keep"] == 0.95  # --reject's threshold
    assert meta["rejection"]["fallback"]["score"] == "energy"  # for a file that gives logits only

    # Only the file: preprocessing from its metadata, then onnxruntime. Same top-1 as the .pt in PyTorch.
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["logits", "familiarity"]
    model = model_from_checkpoint(checkpoint)
    transform = eval_transform(meta["preprocess"])
    for path in _val_images(run):
        x = transform(load_image(path)).unsqueeze(0)
        onnx_logits = session.run(["logits"], {"images": x.numpy()})[0]
        with torch.no_grad():
            torch_logits = model(x).numpy()
        assert meta["class_names"][onnx_logits.argmax()] == checkpoint["class_names"][torch_logits.argmax()]


def test_dynamic_batch_accepts_any_batch_size(cli, run, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "exports" / "model.onnx"
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt", "--dynamic-batch", "--out", out)
    assert code == 0, err
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"images": np.zeros((5, 3, 32, 32), np.float32)})[0]
    assert logits.shape == (5, 3)
    assert not (run / "weights" / "best.onnx").exists()  # --out wrote only where asked


def test_export_that_disagrees_with_pytorch_fails_and_writes_nothing(cli, run, monkeypatch):
    import dataclasses

    from imgcls.deploy import formats

    onnx = formats.FORMATS["onnx"]

    def drifting_load(path, threads=None):
        runner, meta = onnx.load(path, threads)
        return dataclasses.replace(runner, run=lambda batch: (runner(batch) + 0.01, *runner.outputs(batch)[1:])), meta

    monkeypatch.setitem(formats.FORMATS, "onnx", dataclasses.replace(onnx, load=drifting_load))
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt")
    assert code == 2
    assert "disagrees with PyTorch" in err and "1.00e-02" in err and "nothing was written" in err
    assert sorted(p.name for p in (run / "weights").iterdir()) == ["best.pt", "last.pt"]


def test_a_file_whose_familiarity_score_differs_is_written_without_it_in_one_line(cli, run, monkeypatch, tmp_path):
    """The logits agree but the score does not: the user gets the file, told in one line that --reject on it uses
    the energy of the logits, and predict --reject runs on it."""
    import dataclasses

    from imgcls.deploy import formats

    onnx = formats.FORMATS["onnx"]

    def drifting_load(path, threads=None):
        runner, meta = onnx.load(path, threads)
        return dataclasses.replace(runner, run=lambda batch: tuple(
            o + 1.0 if i else o for i, o in enumerate(runner.outputs(batch)))), meta

    monkeypatch.setitem(formats.FORMATS, "onnx", dataclasses.replace(onnx, load=drifting_load))
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "familiarity" in line and "WARNING" in line]
    assert len(warnings) == 1 and "written without it: --reject on this file uses the logits' energy" in warnings[0]
    _, card = load_exported(run / "weights" / "best.onnx")
    assert card.outputs == ("logits",)
    code, _, err = cli("predict", "--weights", run / "weights" / "best.onnx", "--source", _val_images(run)[0],
                       "--reject", "--out", tmp_path / "pred")
    assert code == 0, err
    assert json.loads((tmp_path / "pred" / "predictions.json").read_text())["rejection"]["score"] == "energy"


def test_parity_falls_back_to_random_inputs_when_the_data_is_gone(cli, run):
    args = yaml.safe_load((run / "args.yaml").read_text())
    args["data"] = str(run / "no-such-data")
    (run / "args.yaml").write_text(yaml.safe_dump(args))
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt")
    assert code == 0, err
    assert "WARNING: no val images for this check" in err and "random inputs" in err
    assert "parity on 8 random input(s)" in err
    assert (run / "weights" / "best.onnx").exists()


def test_int8_export_reports_size_speed_and_accuracy(run, capsys):
    import onnxruntime as ort

    result = export_mod.export(run / "weights" / "best.pt", "onnx", int8=True, bench_seconds=0.2)
    printed = capsys.readouterr().out
    assert result.int8_path == run / "weights" / "best_int8.onnx"
    report = result.int8_report
    assert report["int8"]["size_bytes"] < report["fp32"]["size_bytes"] / 2
    assert report["val_images"] == 15 and report["calibration"] == "36 train image(s)"
    assert report["fp32"]["val_accuracy"] >= 0.8
    for line in ("file size", "img/s, batch 1", "img/s, batch 32", "val accuracy (15 images)"):
        assert line in printed
    assert "FP32" in printed and "INT8" in printed
    # The INT8 file is a real, self-describing classifier with the user's batch setting (fixed batch 1).
    assert _metadata(result.int8_path).class_names == ("circle", "square", "triangle")
    session = ort.InferenceSession(str(result.int8_path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == 1
    graph = __import__("onnx").load(str(result.int8_path)).graph
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)
    # the familiarity score (--reject) stays in float: its distances are small differences of large terms
    familiarity = [n for n in graph.node if n.name.startswith("/familiarity/")]
    assert familiarity and all(n.op_type not in ("QuantizeLinear", "DequantizeLinear") for n in familiarity)
    matmuls = [n for n in familiarity if n.op_type == "MatMul"]
    assert matmuls and not any(i.endswith("_DequantizeLinear_Output") for n in matmuls for i in n.input[1:])


def test_int8_verdicts_say_plainly_when_int8_is_worse():
    from imgcls.deploy.quantize import format_int8_report, int8_verdicts

    def speed(v):
        return {"img_per_s": v, "p50_ms": 1.0, "p95_ms": 1.0, "runs": 5}

    report = {"fp32": {"size_bytes": 4e6, "val_accuracy": 0.95, "speed": {"1": speed(100.0), "32": speed(300.0)}},
              "int8": {"size_bytes": 1e6, "val_accuracy": 0.90, "speed": {"1": speed(150.0), "32": speed(200.0)}},
              "val_images": 100}
    report["verdicts"] = int8_verdicts(report, (1, 32))
    assert len(report["verdicts"]) == 2
    assert "INT8 is SLOWER than FP32 at batch 32" in report["verdicts"][0]
    assert "INT8 LOSES 5.0 points" in report["verdicts"][1]
    text = format_int8_report(report, (1, 32))
    assert "95.0%" in text and "90.0%" in text and "1.00 MB" in text
    report["int8"]["val_accuracy"], report["int8"]["speed"]["32"] = 0.945, speed(400.0)
    assert int8_verdicts(report, (1, 32)) == []
    report["int8"]["speed"]["32"] = speed(299.96)  # the same speed as FP32 within timing noise: not "SLOWER"
    assert int8_verdicts(report, (1, 32)) == []


def test_torchscript_export_has_parity_and_metadata(cli, run):
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt", "--format", "torchscript")
    assert code == 0, err
    assert "top-1 agreement 100.0% (15/15)" in err
    path = run / "weights" / "best.torchscript"
    runner, card = load_exported(path)
    assert card.class_names == ("circle", "square", "triangle") and card.outputs == ("logits", "familiarity")
    assert runner(torch.zeros((4, 3, 32, 32))).shape == (4, 3)


def test_calibration_temperature_is_kept_in_every_export(cli, run):
    checkpoint = load_checkpoint(run / "weights" / "best.pt")
    checkpoint.pop("path")
    checkpoint["temperature"] = 1.7
    calibrated = run / "weights" / "calibrated.pt"
    save_checkpoint(calibrated, checkpoint)
    assert cli("export", "--weights", calibrated)[0] == 0
    assert _metadata(run / "weights" / "calibrated.onnx").temperature == 1.7
    assert cli("export", "--weights", calibrated, "--format", "torchscript")[0] == 0
    assert _metadata(run / "weights" / "calibrated.torchscript").temperature == 1.7


def _metadata(path):
    """The model card an exported file carries, read back the way predict reads it."""
    return load_exported(path)[1]


def _has(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.skipif(not _has("openvino"), reason="openvino not installed; its missing-package error is tested below")
def test_openvino_export_has_parity_and_metadata(cli, run):
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt", "--format", "openvino")
    assert code == 0, err
    assert "top-1 agreement 100.0% (15/15)" in err
    xml = run / "weights" / "best.xml"
    assert xml.exists() and xml.with_suffix(".bin").exists()
    assert _metadata(xml).class_names == ("circle", "square", "triangle")


@pytest.mark.skipif(_has("tensorflow"), reason="TensorFlow is installed here (tests/test_tflite.py converts)")
def test_tflite_without_tensorflow_says_which_package(cli, run):
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt", "--format", "tflite")
    assert code == 2
    assert err.strip() == ("imgcls: error: missing package tensorflow: install it with `pip install tensorflow` "
                           "(or `pip install 'imgcls[tflite]'`)")
    assert sorted(p.name for p in (run / "weights").iterdir()) == ["best.pt", "last.pt"]


@pytest.mark.parametrize("fmt, module, package", [
    ("openvino", "openvino", "openvino"),
    ("tflite", "tensorflow", "tensorflow"),
    ("coreml", "coremltools", "coremltools"),
    ("onnx", "onnxruntime", "onnxruntime"),
])
def test_missing_package_error_names_the_package(cli, run, monkeypatch, fmt, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt", "--format", fmt)
    assert code == 2
    assert f"missing package {package}" in err and f"pip install {package}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["--format", "tensorrt"], "--format 'tensorrt': choose one of onnx, torchscript, openvino, tflite, coreml"),
    (["--format", "torchscript", "--int8"], "--int8 is offered for --format onnx, tflite and web, not torchscript"),
    (["--format", "tflite", "--dynamic-batch"], "--dynamic-batch: tflite files are exported for batch 1"),
    (["--format", "coreml", "--dynamic-batch"], "--dynamic-batch: coreml files are exported for batch 1"),
    (["--out", "model.pt"], "a onnx file should end in .onnx"),
])
def test_bad_export_options_are_one_line_errors(cli, run, args, message):
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_compare_logits_is_exact_about_disagreement():
    ref = np.array([[2.0, 0.0], [0.0, 1.0]])
    parity = compare_logits(ref, ref + [[0.0, 0.0], [0.0, -2.0]], "2 images")
    assert parity.max_abs_diff == 2.0 and parity.top1_agreement == 0.5 and not parity.passed()
    assert compare_logits(ref, ref + 5e-4).passed()
    large = ref * 500  # logits in the hundreds, as a network from scratch gives: the bound is relative to them
    assert compare_logits(large, large + 0.05).passed() and not compare_logits(large, large + 2.0).passed()
    with pytest.raises(ImgclsError, match="shape"):
        compare_logits(ref, ref[:1])


def test_imgcls_predict_on_exported_onnx_matches_pt(trained_run, tmp_path, cli):
    """The user's path: export, then `imgcls predict` with only the .onnx gives the .pt's answers."""
    import csv
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt")  # fixed batch 1, the default
    assert code == 0, err
    images = tmp_path / "images"
    from imagegen import make_class_folders

    make_class_folders(images, per_class=3, seed=5)
    answers = {}
    for weights in ("best.pt", "best.onnx"):
        out = tmp_path / f"pred_{weights}"
        code, _, err = cli("predict", "--weights", run / "weights" / weights, "--source", images, "--out", out,
                           "--batch-size", "4")
        assert code == 0, err
        rows = list(csv.DictReader(open(out / "predictions.csv", encoding="utf-8")))
        assert len(rows) == 9
        answers[weights] = {r["path"]: (r["predicted"], float(r["confidence"])) for r in rows}
    for path, (label, confidence) in answers["best.pt"].items():
        assert answers["best.onnx"][path][0] == label
        assert abs(answers["best.onnx"][path][1] - confidence) < 1e-4


def test_a_network_whose_features_barely_differ_exports_with_its_familiarity_score(cli, run, tmp_path):
    """A weak network (random or barely trained) gives every image nearly the same pooled features; its familiarity
    score must still come out of ONNX Runtime as PyTorch computes it, so that export writes the file and
    `predict --reject` on it decides as the checkpoint does."""
    import csv

    weights = run / "weights" / "best.pt"
    checkpoint = torch.load(weights, weights_only=True)
    state = checkpoint["state_dict"]
    last_norm = [k[: -len(".running_mean")] for k in state if k.endswith(".running_mean")][-1]
    state[f"{last_norm}.weight"] *= 0.1   # the last stage's output: a large constant, a little of it varies
    state[f"{last_norm}.bias"].fill_(5.0)
    checkpoint.pop("familiarity")
    torch.save(checkpoint | {"rejection": checkpoint["rejection"]["fallback"]}, weights)
    code, _, err = cli("val", "--weights", weights, "--calibrate", "--workers", "0")  # refits the score on train
    assert code == 0, err
    code, _, err = cli("export", "--weights", weights)
    assert code == 0, err
    _, card = load_exported(run / "weights" / "best.onnx")
    assert card.outputs == ("logits", "familiarity") and card.rejection["score"] == "familiarity"
    answers = {}
    for name in ("best.pt", "best.onnx"):
        out = tmp_path / f"pred_{name}"
        code, _, err = cli("predict", "--weights", run / "weights" / name, "--source", _val_images(run)[0].parents[1],
                           "--reject", "--out", out, "--runtime", "torch" if name == "best.pt" else "auto")
        assert code == 0, err
        with open(out / "predictions.csv", encoding="utf-8") as f:
            answers[name] = {r["path"]: (r["unknown"], float(r["score"])) for r in csv.DictReader(f)}
    scores = {path: score for path, (_, score) in answers["best.pt"].items()}
    tolerance = 1e-3 * np.ptp(list(scores.values()))
    threshold = card.rejection["threshold"]   # a val image's own score: that one may fall either side of it
    for path, (unknown, score) in answers["best.pt"].items():
        assert abs(answers["best.onnx"][path][1] - score) < tolerance
        if abs(score - threshold) > tolerance:
            assert answers["best.onnx"][path][0] == unknown


@pytest.mark.parametrize("fmt, name", [("onnx", "best.onnx"), ("torchscript", "best.torchscript"),
                                       ("openvino", "best.xml")])
def test_a_network_tuned_on_mirrored_activations_exports_as_it_predicts(cli, run, fmt, name):
    """The default plan's tuned network predicts from its activations at the cut and their mirror image; the
    exported file computes exactly that."""
    from mirrored import expected_logits, make_mirrored

    weights = run / "weights" / "best.pt"
    checkpoint = make_mirrored(weights)
    code, _, err = cli("export", "--weights", weights, "--format", fmt, "--out", run / "weights" / name)
    assert code == 0, err
    runner, _ = load_exported(run / "weights" / name)
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    expected, plain = expected_logits(checkpoint, images)
    logits = runner.outputs(images.numpy())[0]
    assert np.allclose(logits, expected.numpy(), atol=1e-4)
    assert not np.allclose(logits, plain.numpy(), atol=1e-3)


@pytest.mark.parametrize("cut", [0, 99, "2"])
def test_a_checkpoint_with_a_bad_mirror_stage_is_refused_in_one_line(cli, run, cut):
    weights = run / "weights" / "best.pt"
    save_checkpoint(weights, torch.load(weights, weights_only=True) | {"mirrored_at": cut})
    code, _, err = cli("export", "--weights", weights, "--format", "onnx")
    assert code == 2 and f"mirrored_at {cut!r} is not a stage of simple_cnn" in err and "Traceback" not in err
    assert not (run / "weights" / "best.onnx").exists()



def test_an_operator_onnx_cannot_write_prints_nothing_but_the_error(capfd):
    """torch's exporter logs the whole Torch IR graph to standard output when an operator fails; the user gets
    imgcls's one line instead (deploy/export.py words it)."""
    import torch.nn.functional as F
    from torch import nn

    from imgcls.runtime.pytorch import export_onnx_bytes

    class SevenBySeven(nn.Module):  # VGG's pre-logits pooling of a small map to 7 x 7, as at 32 px
        def forward(self, x):
            return F.adaptive_avg_pool2d(x, 7)

    with pytest.raises(Exception, match="adaptive_avg_pool2d"):
        export_onnx_bytes(SevenBySeven(), (3, 5, 5))
    assert capfd.readouterr().out == ""
