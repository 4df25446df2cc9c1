"""A run that fails in the middle of writing its checkpoint keeps the last whole one, and resumes from it."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch

from conftest import TINY
from imagegen import make_class_folders


def test_a_failure_inside_the_checkpoint_write_keeps_the_last_whole_checkpoint(cli, tmp_path, monkeypatch):
    data = make_class_folders(tmp_path / "data", per_class=10)
    runs, epochs = tmp_path / "runs", 5
    real_save = torch.save
    last_writes = []

    def disk_full_in_the_third_write_of_last_pt(obj, f, *args, **kwargs):
        if "last.pt" not in os.path.basename(str(f)):  # last.pt itself, or a temporary file for it
            return real_save(obj, f, *args, **kwargs)
        last_writes.append(f)
        if len(last_writes) < 3:
            return real_save(obj, f, *args, **kwargs)
        import io

        buffer = io.BytesIO()
        real_save(obj, buffer)
        with open(f, "wb") as half:  # half of the checkpoint reaches the disk, then the disk is full
            half.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full_in_the_third_write_of_last_pt)
    with pytest.raises(OSError, match="No space left on device"):
        cli("train", "--data", data, "--epochs", str(epochs), *TINY, "--project", runs)
    monkeypatch.setattr(torch, "save", real_save)

    weights = runs / "train" / "weights"
    assert len(last_writes) == 3 and sorted(p.name for p in weights.iterdir()) == ["best.pt", "last.pt"]
    last = torch.load(weights / "last.pt", weights_only=True)  # whole, not the half-written third one
    assert last["epoch"] == 2 and "optimizer" in last

    code, _, err = cli("train", "--resume", runs / "train")
    assert code == 0, err
    assert f"Resuming {runs / 'train'} from epoch 3/{epochs}" in err
    results = json.loads((runs / "train" / "results.json").read_text())
    assert [k for k in results if k.startswith("epoch:")] == [f"epoch:{i}" for i in range(1, epochs + 1)]
    rows = list(csv.DictReader(open(runs / "train" / "results.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert torch.load(weights / "last.pt", weights_only=True)["epoch"] == epochs
    assert (runs / "train" / "confusion_matrix_val.png").exists()
    assert not (runs / "train2").exists()  # resuming writes into the same run folder
    code, _, err = cli("train", "--resume", runs / "train")
    assert code == 2 and "already finished" in err  # resuming a finished run is refused clearly


def test_resume_needs_a_run(cli, tmp_path):
    code, _, err = cli("train", "--resume", tmp_path / "nope")
    assert code == 2 and "no weights/last.pt" in err
