"""Benchmark 1: frozen tf_efficientnet_lite0, head training on a folder data set; imgcls vs a plain loop.

    python benchmarks/frozen_head.py --data ../shared/datasets/hymenoptera --epochs 30
    python benchmarks/frozen_head.py --data ../shared/datasets/hymenoptera --epochs 30 --plain-epochs 3

The plain loop is what a seed project does (benchmarks/plain_loop.py): torchvision ImageFolder-style loading,
light augmentation, and a full forward pass through the backbone for every image in every epoch (train and val).
With --plain-epochs N < --epochs it runs N epochs and extrapolates its time linearly (each epoch
costs the same), reporting the accuracy it reached after N epochs.
imgcls runs twice: with an empty feature cache (cold) and again with the cache filled (warm).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Timer, report  # noqa: E402


def plain_loop(data: Path, epochs: int, total_epochs: int, batch_size: int, workers: int) -> dict:
    """benchmarks/plain_loop.py for ``epochs`` of its ``total_epochs``, its time scaled to all of them."""
    from benchmarks.plain_loop import run

    with Timer() as timer:
        row = run(data, None, 0, total_epochs, batch_size, workers, run_epochs=epochs)
    return {"seconds": timer.seconds, "epochs_run": epochs, "val_accuracy_last": row["curve"][-1][1],
            "seconds_for_all_epochs": timer.seconds * total_epochs / epochs}


def imgcls_run(data: Path, epochs: int, batch_size: int, project: Path, name: str) -> dict:
    from imgcls.engine.train import train

    with Timer() as timer:
        result = train(data=str(data), model="tf_efficientnet_lite0", fast=True, epochs=epochs,
                       batch_size=batch_size, project=str(project), name=name, patience=0, progress=False)
    results = json.loads((result.run_dir / "results.json").read_text())
    last = results[f"epoch:{result.epochs_run}"]["valid info"]["accuracy"]
    return {"seconds": timer.seconds, "val_accuracy_best": result.best["accuracy"], "val_accuracy_last": last}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--plain-epochs", type=int, default=None, help="epochs the plain loop really runs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--skip", choices=["imgcls", "plain"], action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["IMGCLS_CACHE"] = str(Path(tmp) / "cache")  # start cold, then reuse it
        if "imgcls" not in args.skip:
            cold = imgcls_run(args.data, args.epochs, args.batch_size, Path(tmp) / "runs", "cold")
            report("frozen_head imgcls (empty cache)", epochs=args.epochs, **cold)
            warm = imgcls_run(args.data, args.epochs, args.batch_size, Path(tmp) / "runs", "warm")
            report("frozen_head imgcls (cache filled)", epochs=args.epochs, **warm)
        if "plain" not in args.skip:
            plain = plain_loop(args.data, args.plain_epochs or args.epochs, args.epochs, args.batch_size, args.workers)
            report("frozen_head plain torchvision loop", epochs=args.epochs, **plain)


if __name__ == "__main__":
    main()
