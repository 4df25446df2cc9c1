"""Benchmark 2: full fine-tuning train img/s of imgcls's image path (efficientnet_lite0, 224 px, batch 32).

    python benchmarks/finetune_speed.py --data ../shared/datasets/hymenoptera --batches 6

It times `imgcls.engine.train_one_epoch` with what `imgcls train --no-freeze` sets up: the
decoded-image cache, channels_last, and bf16 autocast only if it measures faster on this CPU.
The first batch is a warm-up and is not counted. Compare with the "Rate" that timm's train.py
logs for the same model, batch and size (command in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import lite0_with_packaged_weights, report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    from imgcls import data as data_mod
    from imgcls.cache import DecodedDataset, DecodedImages
    from imgcls.engine import train_one_epoch
    from imgcls.runtime import cpu_bf16_is_faster
    from imgcls.transforms import train_transform

    source = data_mod.discover(args.data)
    source, _, _ = data_mod.validate_images(source)
    preprocess = {"input_size": [3, 224, 224], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear",
                  "crop_pct": 0.875}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["IMGCLS_CACHE"] = tmp
        torch.manual_seed(0)
        model = lite0_with_packaged_weights(len(source.class_names)).to(memory_format=torch.channels_last)
        amp = "bf16" if cpu_bf16_is_faster(model, preprocess["input_size"]) else False
        images = DecodedImages(source.paths("train"), preprocess, square=True, progress=False)
        dataset = DecodedDataset(images, source.labels("train"), train_transform(preprocess, "light"))
        loader = data_mod.make_loader(dataset, batch_size=args.batch_size, shuffle=True, workers=args.workers)
        optimizer = torch.optim.AdamW([{"params": model.parameters(), "initial_lr": 1e-3}])
        common = dict(optimizer=optimizer, criterion=nn.CrossEntropyLoss(), device=torch.device("cpu"),
                      frozen_backbone=False, step=0, total_steps=100, warmup_steps=0, lrf=0.01, amp=amp,
                      progress=False, channels_last=True)
        train_one_epoch(model, itertools.islice(loader, 1), **common)  # warm-up
        start = time.perf_counter()  # data loading counts, as it does in timm's rate
        out = train_one_epoch(model, itertools.islice(loader, args.batches), **common)
        seconds = time.perf_counter() - start
    count = len(out.targets)
    report("full fine-tuning train img/s (imgcls)", model="efficientnet_lite0", imgsz=224, batch=args.batch_size,
           img_s=count / seconds, bf16=bool(amp))


if __name__ == "__main__":
    main()
