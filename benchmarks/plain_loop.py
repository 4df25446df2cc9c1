"""The seeds' plain loop as a contender in accuracy against wall time: what a user writes without imgcls.

    for s in 0 1 2; do python benchmarks/plain_loop.py --data ../shared/datasets/hymenoptera --seed $s \\
        --out hym.jsonl; done
    python benchmarks/plain_loop.py --data ../shared/datasets/aid30 --split-csv runs/aid30-default-s0/split.csv \\
        --seed 0 --out aid30.jsonl

torchvision ImageFolder-style loading, a frozen pretrained backbone (timm's tf_efficientnet_lite0 with the
packaged ImageNet weights, as imgcls's default starts from) and a linear head trained for --epochs, with a
full forward pass of every training and validation image in every epoch: light augmentation (random resized
crop, flip, small rotation, colour jitter), AdamW at 1e-2 with a cosine schedule, label smoothing 0.1, batch
32, one loader worker. The data is DIR/train and DIR/val (and DIR/test where present), or, for a one-tree
folder, the split a run of imgcls made (--split-csv, so both see the same images). Its number is that of the
epoch with the best val accuracy, on test where there is one, as imgcls reports.

One seed a process; each appends one JSON line to --out in benchmarks/accuracy_budget.py's format (variant "plain"), so
`python benchmarks/accuracy_budget.py --data DIR --out ROWS --plot PNG` draws it with the other contenders.
The wall time is the whole process, imports included.
"""

from __future__ import annotations

import time

START = time.perf_counter()  # before the imports: the whole command is timed, as for every contender

import argparse  # noqa: E402
import copy  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def image_lists(data: Path, split_csv: Path | None) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """(class names, {split: [(path, label)]}) from DIR/<split>/<class>/ folders or from imgcls's split.csv."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if split_csv is None:
        classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
        return classes, {split: [(str(f), classes.index(c.name)) for c in sorted((data / split).iterdir())
                                 if c.is_dir() for f in sorted(c.iterdir()) if f.suffix.lower() in IMG_EXTENSIONS]
                         for split in ("train", "val", "test") if (data / split).is_dir()}
    with open(split_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    classes = sorted({row["class"] for row in rows})
    splits: dict[str, list[tuple[str, int]]] = {}
    for row in rows:
        splits.setdefault(row["split"], []).append((str(data / row["path"]), classes.index(row["class"])))
    return classes, splits


def run(data: Path, split_csv: Path | None, seed: int, epochs: int, batch_size: int, workers: int,
        run_epochs: int | None = None) -> dict:
    """The loop with its learning-rate schedule over ``epochs``; ``run_epochs`` stops it sooner (to time a few
    epochs and scale, as benchmarks/frozen_head.py does)."""
    import torch
    from PIL import Image
    from torch import nn
    from torchvision import transforms as T

    from imgcls.engine.loop import lr_factor
    from imgcls.models.factory import create_model

    torch.manual_seed(seed)
    classes, splits = image_lists(data, split_csv)
    model, cfg, _ = create_model("tf_efficientnet_lite0", len(classes))
    size = cfg["input_size"][-1]
    normalize = T.Normalize(cfg["mean"], cfg["std"])
    train_tf = T.Compose([T.RandomResizedCrop(size, scale=(0.7, 1.0)), T.RandomHorizontalFlip(),
                          T.RandomRotation(10), T.ColorJitter(0.2, 0.2, 0.2), T.ToTensor(), normalize])
    eval_tf = T.Compose([T.Resize(int(size / cfg.get("crop_pct", 0.875))), T.CenterCrop(size), T.ToTensor(),
                         normalize])

    class Listed(torch.utils.data.Dataset):
        def __init__(self, items, tf):
            self.items, self.tf = items, tf

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            path, label = self.items[i]
            return self.tf(Image.open(path).convert("RGB")), label

    def loader(split, tf, shuffle):
        return torch.utils.data.DataLoader(Listed(splits[split], tf), batch_size, shuffle=shuffle,
                                           num_workers=workers, generator=torch.Generator().manual_seed(seed))

    train_loader, val_loader = loader("train", train_tf, True), loader("val", eval_tf, False)
    model.eval()
    for p in model.parameters():
        p.requires_grad = False
    head = model.get_classifier()
    for p in head.parameters():
        p.requires_grad = True
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=0.01)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)

    def accuracy(batches) -> float:
        right = total = 0
        with torch.no_grad():
            for images, labels in batches:
                right += (model(images).argmax(1) == labels).sum().item()
                total += len(labels)
        return right / total

    total_steps, step, curve, best = epochs * math.ceil(len(splits["train"]) / batch_size), 0, [], (-1.0, 0, None)
    for epoch in range(1, (run_epochs or epochs) + 1):
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
        val = accuracy(val_loader)
        curve.append((round(time.perf_counter() - START, 1), val))
        print(f"seed {seed} epoch {epoch}/{epochs}: val accuracy {val:.4f} at {curve[-1][0]:.0f} s", flush=True)
        if val > best[0]:
            best = (val, epoch, copy.deepcopy(head.state_dict()))
    head.load_state_dict(best[2])
    split = "test" if splits.get("test") else "val"
    final = accuracy(loader("test", eval_tf, False)) if split == "test" else best[0]
    return {"data": data.name, "variant": "plain", "flags": f"plain loop, frozen backbone, {epochs} epochs",
            "seed": seed, "wall_seconds": round(time.perf_counter() - START, 1), "split": split, "accuracy": final,
            "best_epoch": best[1], "curve": curve, "load_avg_end": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split-csv", type=Path, help="imgcls's split.csv, for a folder without train/ and val/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, appended to")
    args = parser.parse_args()
    row = run(args.data, args.split_csv, args.seed, args.epochs, args.batch_size, args.workers)
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)


if __name__ == "__main__":
    main()
