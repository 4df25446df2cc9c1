"""Benchmark 1: frozen efficientnet_lite0, head training on a folder data set; imgcls vs a plain loop.

    python benchmarks/frozen_head.py --data ../shared/datasets/hymenoptera --epochs 30
    python benchmarks/frozen_head.py --data ../shared/datasets/hymenoptera --epochs 30 --plain-epochs 3

The plain loop is what a seed project does: torchvision ImageFolder, the same light augmentation,
and a full forward pass through the backbone for every image in every epoch (train and val).
With --plain-epochs N < --epochs it runs N epochs and extrapolates its time linearly (each epoch
costs the same), reporting the accuracy it reached after N epochs.
imgcls runs twice: with an empty feature cache (cold) and again with the cache filled (warm).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Timer, lite0_with_packaged_weights, report  # noqa: E402


def plain_loop(data: Path, epochs: int, total_epochs: int, batch_size: int, workers: int) -> dict:
    from torchvision import datasets
    from torchvision import transforms as T

    from imgcls.engine.loop import lr_factor

    normalize = T.Normalize([0.5] * 3, [0.5] * 3)  # the packaged lite0 weights expect [-1, 1] inputs
    train_tf = T.Compose([T.RandomResizedCrop(224, scale=(0.7, 1.0)), T.RandomHorizontalFlip(),
                          T.RandomRotation(10), T.ColorJitter(0.2, 0.2, 0.2), T.ToTensor(), normalize])
    val_tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), normalize])
    loader_rgb = lambda path: __import__("PIL.Image").Image.open(path).convert("RGB")  # noqa: E731
    train_set = datasets.ImageFolder(data / "train", train_tf, loader=loader_rgb)
    val_set = datasets.ImageFolder(data / "val", val_tf, loader=loader_rgb)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size, shuffle=True, num_workers=workers)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size, num_workers=workers)
    torch.manual_seed(0)
    model = lite0_with_packaged_weights(len(train_set.classes))
    for p in model.parameters():
        p.requires_grad = False
    head = model.get_classifier()
    for p in head.parameters():
        p.requires_grad = True
    # Same optimiser, schedule and loss as imgcls, so only the compute differs.
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=0.01)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    total_steps, step, accuracy = total_epochs * math.ceil(len(train_set) / batch_size), 0, 0.0
    with Timer() as timer:
        for _ in range(epochs):
            model.eval()
            for images, labels in train_loader:
                for group in optimizer.param_groups:
                    group["lr"] = 1e-2 * lr_factor(step, total_steps, len(train_loader), 0.01)
                with torch.no_grad():
                    features = model.forward_head(model.forward_features(images), pre_logits=True)
                loss = criterion(head(features), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
            correct = 0
            with torch.no_grad():
                for images, labels in val_loader:
                    correct += (model(images).argmax(1) == labels).sum().item()
            accuracy = correct / len(val_set)
    return {"seconds": timer.seconds, "epochs_run": epochs, "val_accuracy_last": accuracy,
            "seconds_for_all_epochs": timer.seconds * total_epochs / epochs}


def imgcls_run(data: Path, epochs: int, batch_size: int, project: Path, name: str) -> dict:
    from imgcls.engine.train import train

    with Timer() as timer:
        result = train(data=str(data), model="efficientnet_lite0", epochs=epochs, batch_size=batch_size,
                       project=str(project), name=name, patience=0, progress=False)
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
