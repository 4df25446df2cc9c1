"""A run killed with SIGKILL mid-training resumes and ends with the full number of epochs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import torch

from conftest import REPO, TINY, run_cli
from imagegen import make_class_folders


def test_resume_after_kill(tmp_path):
    data = make_class_folders(tmp_path / "data", per_class=30, size=64)
    runs = tmp_path / "runs"
    epochs = 8
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "imgcls", "train", "--data", str(data), "--epochs", str(epochs),
                             *TINY, "--project", str(runs)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    last = runs / "train" / "weights" / "last.pt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # now inside epoch 2 or later
    assert proc.poll() is None, "training finished before it could be killed; make the data set larger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(last, weights_only=True)["epoch"]  # the atomic write left a whole checkpoint
    assert 1 <= killed_at < epochs

    done = run_cli("train", "--resume", runs / "train", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"Resuming {runs / 'train'} from epoch {killed_at + 1}/{epochs}" in done.stderr
    results = json.loads((runs / "train" / "results.json").read_text())
    assert [k for k in results if k.startswith("epoch:")] == [f"epoch:{i}" for i in range(1, epochs + 1)]
    rows = list(csv.DictReader(open(runs / "train" / "results.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert torch.load(last, weights_only=True)["epoch"] == epochs
    assert (runs / "train" / "confusion_matrix_val.png").exists()
    assert not (runs / "train2").exists()  # resuming writes into the same run folder
    # Resuming a finished run is refused clearly.
    again = run_cli("train", "--resume", runs / "train", cwd=tmp_path)
    assert again.returncode == 2 and "already finished" in again.stderr


def test_resume_needs_a_run(cli, tmp_path):
    code, _, err = cli("train", "--resume", tmp_path / "nope")
    assert code == 2 and "no weights/last.pt" in err
