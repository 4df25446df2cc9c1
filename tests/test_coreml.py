"""imgcls export --format coreml: an ML Program with the class labels and the preprocessing inside.

Core ML runs only on macOS; on Linux (CI) export checks the converted spec and says that it did not
check the numbers. These tests read the written spec back with coremltools.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys

import pytest

from imgcls.errors import ImgclsError

MISSING = importlib.util.find_spec("coremltools") is None

pytestmark = pytest.mark.skipif(MISSING and os.environ.get("CI") != "true",
                                reason="coremltools is not installed (the coreml extra)")


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """A copy of the tiny run with best.mlpackage, exported through the CLI, and what the CLI said."""
    import subprocess

    from conftest import run_cli

    if MISSING:
        pytest.fail("CI=true but coremltools (in the dev extra) is not installed")
    run = shutil.copytree(trained_run, tmp_path_factory.mktemp("coreml") / "run")
    proc = run_cli("export", "--weights", run / "weights" / "best.pt", "--format", "coreml")
    assert isinstance(proc, subprocess.CompletedProcess) and proc.returncode == 0, proc.stderr
    return run, proc.stderr


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS the numbers are checked instead")
def test_coreml_export_checks_the_spec_and_says_numbers_were_not_checked(exported):
    from imgcls.deploy.coreml import import_coremltools, read_spec

    run, err = exported
    package = run / "weights" / "best.mlpackage"
    assert package.is_dir() and (package / "Manifest.json").exists()
    assert "WARNING: numeric parity was NOT checked: Core ML models run only on macOS" in err
    assert "Exported coreml" in err and "Traceback" not in err
    spec = read_spec(package)
    assert spec["type"] == "mlProgram"
    assert spec["inputs"] == [{"name": "image", "type": "imageType", "width": 32, "height": 32, "color": "RGB"}]
    assert spec["outputs"] == {"classLabel": "stringType", "classLabel_probs": "dictionaryType"}
    assert spec["class_labels"] == ["circle", "square", "triangle"]
    meta = json.loads(spec["metadata"])
    assert meta["class_names"] == ["circle", "square", "triangle"] and meta["preprocess"]["input_size"] == [3, 32, 32]
    # the preprocessing is in the model: image scaling in the input, mean/std and softmax in the program, FP32
    ct = import_coremltools()
    program = ct.models.MLModel(str(package), skip_model_load=True).get_spec().mlProgram
    ops = [op.type for f in program.functions.values() for b in f.block_specializations.values()
           for op in b.operations]
    assert "softmax" in ops and "classify" in ops and "sub" in ops


def test_export_again_replaces_the_package_whole(exported, cli):
    run, _ = exported
    package = run / "weights" / "best.mlpackage"
    (package / "stale.txt").write_text("from an older export")
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt", "--format", "coreml")
    assert code == 2 and "already exists" in err and (package / "stale.txt").exists()  # kept without --force
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt", "--format", "coreml", "--force")
    assert code == 0, err
    assert package.is_dir() and not (package / "stale.txt").exists()
    assert sorted(p.name for p in (run / "weights").iterdir()) == ["best.mlpackage", "best.pt", "last.pt"]


def test_a_spec_that_does_not_match_is_refused(exported):
    from imgcls.deploy.coreml import check_spec, read_spec
    from imgcls.record.card import ModelCard

    run, _ = exported
    package = run / "weights" / "best.mlpackage"
    meta = json.loads(read_spec(package)["metadata"])
    card = ModelCard.read(meta, "test")
    check_spec(package, card, meta)  # as written: accepted
    with pytest.raises(ImgclsError, match="class labels"):
        check_spec(package, card.replace(class_names=("a", "b", "c")), meta)
    with pytest.raises(ImgclsError, match="input"):
        check_spec(package, card.replace(preprocess=card.preprocess | {"input_size": [3, 64, 64]}), meta)
    with pytest.raises(ImgclsError, match="metadata"):
        check_spec(package, card, meta | {"temperature": 2.0})


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML runs on macOS")
def test_predict_with_coreml_off_macos_says_why(exported, cli, tmp_path):
    from imagegen import make_class_folders

    run, _ = exported
    images = make_class_folders(tmp_path / "images", per_class=1)
    code, _, err = cli("predict", "--weights", run / "weights" / "best.mlpackage", "--source", images,
                       "--out", tmp_path / "out")
    assert code == 2
    assert "Core ML models run only on macOS" in err and len(err.strip().splitlines()) == 1


def test_the_default_models_family_converts_with_its_padding_fixed(cli, tmp_path):
    """tf_efficientnet_lite0, the default backbone, pads TensorFlow's way, from the input's shape at run time,
    which coremltools could not convert (a TypeError deep in its torch frontend). The export fixes the padding
    for the model's one input size, computing the same numbers, and converts."""
    import torch
    from samepadding import same_padding_checkpoint

    from imgcls.deploy.coreml import ImageClassifier, read_spec, static_padding
    from imgcls.models.factory import model_from_checkpoint
    from imgcls.record.checkpoint import load_checkpoint

    weights = same_padding_checkpoint(tmp_path / "run" / "weights" / "best.pt")
    code, _, err = cli("export", "--weights", weights, "--format", "coreml")
    assert code == 0, err
    spec = read_spec(weights.with_suffix(".mlpackage"))
    assert spec["class_labels"] == ["a", "b"] and spec["inputs"][0]["width"] == 64

    net = ImageClassifier(model_from_checkpoint(load_checkpoint(weights)), [0.5] * 3, [0.5] * 3).eval()
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    fixed = static_padding(net, images[:1])
    with torch.no_grad():
        torch.testing.assert_close(fixed(images), net(images), rtol=1e-5, atol=1e-6)
    assert not any(type(m).__name__ == "Conv2dSame" for m in fixed.modules())
    assert any(type(m).__name__ == "Conv2dSame" for m in net.modules())  # the network given is left as it was
