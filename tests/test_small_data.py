"""Training from scratch on a few images: validation shows what the network learned."""

from __future__ import annotations

import json

from imagegen import make_class_folders


def test_a_from_scratch_network_on_36_images_validates_what_it_learned(cli, tmp_path):
    """36 training images at batch 32 are 2 optimizer steps an epoch: too few for batch-norm's running averages to
    describe the network, which in eval mode would then predict one class while it fits the training images."""
    data = make_class_folders(tmp_path / "shapes", per_class=16, size=48)
    code, _, err = cli("train", "--data", data, "--model", "simple_cnn", "--no-pretrained", "--imgsz", "32",
                       "--batch-size", "32", "--workers", "0", "--epochs", "3", "--project", tmp_path / "runs")
    assert code == 0, err
    run = tmp_path / "runs" / "train"
    results = json.loads((run / "results.json").read_text())
    assert results["dataset"]["train"]["total"] == 36
    assert results[f"epoch:{results['best epoch']}"]["valid info"]["accuracy"] > 0.6   # chance: 1/3
    # the statistics are those last.pt saves: `imgcls val` on it sees the same network
    code, _, err = cli("val", "--weights", run / "weights" / "last.pt", "--split", "train", "--workers", "0")
    assert code == 0, err
    metrics = json.loads((run / "val" / "metrics.json").read_text())
    assert metrics["split"] == "train" and metrics["accuracy"] > 0.8
