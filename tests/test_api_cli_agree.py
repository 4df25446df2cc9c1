"""Every check lives in the Python API: the CLI and the API refuse the same input with the same one line."""

from __future__ import annotations

import pytest

import imgcls
from imgcls.errors import ImgclsError


def _cases(tmp, run):
    """(CLI arguments, the API call that must refuse the same thing)."""
    best = run / "weights" / "best.pt"
    missing = tmp / "missing"
    return [
        (["train", "--data", missing], lambda: imgcls.train(data=str(missing))),
        (["train", "--data", tmp, "--epochs", "0"], lambda: imgcls.train(data=str(tmp), epochs=0)),
        (["train", "--data", tmp, "--optim", "Adamm"], lambda: imgcls.train(data=str(tmp), optim="Adamm")),
        (["train", "--data", tmp, "--logger", "wandb"], lambda: imgcls.train(data=str(tmp), logger="wandb")),
        (["train", "--resume", run, "--epochs", "9"], lambda: imgcls.train(resume=run, epochs=9)),
        (["train", "--resume", missing], lambda: imgcls.train(resume=missing)),
        (["distill", "--data", tmp], lambda: imgcls.distill(data=str(tmp))),
        (["demo", "--epochs", "0", "--data", tmp / "digits"], lambda: imgcls.demo(tmp / "digits", epochs=0)),
        (["val", "--weights", missing], lambda: imgcls.evaluate(missing)),
        (["val", "--weights", best, "--split", "test", "--calibrate"],
         lambda: imgcls.evaluate(best, split="test", calibrate=True)),
        (["val", "--weights", best, "--runtime", "tpu"], lambda: imgcls.evaluate(best, runtime="tpu")),
        (["val", "--weights", best, "--data", tmp, "--columns", "a,b"],
         lambda: imgcls.evaluate(best, str(tmp), columns="a,b")),
        (["predict", "--weights", best, "--source", missing], lambda: imgcls.predict(best, missing)),
        (["predict", "--weights", best, "--source", tmp, "--topk", "0"], lambda: imgcls.predict(best, tmp, topk=0)),
        (["predict", "--weights", best, "--source", tmp, "--workers", "-1"],
         lambda: imgcls.predict(best, tmp, workers=-1)),
        (["export", "--weights", best, "--format", "pdf"], lambda: imgcls.export(best, "pdf")),
        (["export", "--weights", best, "--calib-images", "0"], lambda: imgcls.export(best, calibration_images=0)),
        (["export", "--weights", best, "--format", "tflite", "--dynamic-batch"],
         lambda: imgcls.export(best, "tflite", dynamic_batch=True)),
        (["benchmark", "--weights", best, "--backends", "gpu"], lambda: imgcls.benchmark(best, "gpu")),
        (["benchmark", "--weights", best, "--batch", "0"], lambda: imgcls.benchmark(best, batches="0")),
        (["tune", "--model", "simple_cnn"], lambda: imgcls.tune(None, "simple_cnn")),
        (["check", "--data", missing], lambda: imgcls.check(missing)),
        (["check", "--data", tmp, "--out", tmp / "report"], lambda: imgcls.check(tmp, out=tmp / "report")),
        (["check", "--data", tmp, "--export-clean", tmp / "clean"],
         lambda: imgcls.check(tmp, export_clean=tmp / "clean")),
        (["train", "--data", tmp, "--project", tmp / "runs"],
         lambda: imgcls.train(data=str(tmp), project=str(tmp / "runs"))),
        (["report", missing], lambda: imgcls.report(missing)),
        (["compare", tmp], lambda: imgcls.compare([tmp])),
        (["serve", "--weights", best, "--max-files", "0"], lambda: imgcls.serve(best, max_files=0)),
        (["serve", "--weights", best, "--workers", "0"], lambda: imgcls.serve(best, workers=0)),
        (["serve", "--weights", best, "--api-key", ""], lambda: imgcls.serve(best, api_key="")),
        (["serve", "--weights", best, "--api-key", "too-short"], lambda: imgcls.serve(best, api_key="too-short")),
        (["serve", "--weights", best, "--workers", "2", "--max-upload-mb", "0"],
         lambda: imgcls.serve(best, workers=2, max_upload_mb=0)),
        (["serve", "--weights", best, "--ray", "--replicas", "0"], lambda: imgcls.serve(best, ray="local", replicas=0)),
        (["serve", "--weights", best, "--replicas", "2"], lambda: imgcls.serve(best, replicas=2)),
        (["predict", "--weights", best, "--source", tmp, "--ray", "--workers", "0"],
         lambda: imgcls.predict(best, tmp, ray="local", workers=0)),
        (["models", "no_such_model_xyz"], lambda: imgcls.list_model_names("no_such_model_xyz")),
    ]


def test_cli_and_api_refuse_the_same_things(cli, trained_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output folders (runs/...) would land here
    for args, call in _cases(tmp_path, trained_run):
        with pytest.raises(ImgclsError) as refused:
            call()
        code, out, err = cli(*args)
        assert code == 2, (args, err)
        assert err.strip().splitlines()[-1] == f"imgcls: error: {refused.value}", args
        assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # refusing wrote nothing
