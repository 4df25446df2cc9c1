"""Peak memory with the caches on: 10,000 synthetic 224 px JPEGs, frozen epochs then image epochs.

    python benchmarks/memory_10k.py            # about 10-20 minutes on 2 cores

It writes the images to a temporary folder, trains a small random-weight timm backbone
(mobilenetv3_small_050: the model is not what is measured) with the feature cache for 2 epochs,
then unfreezes it for 1 epoch, which fills the decoded-image cache (a memory-mapped file at
256x256, about 2 GB for 10,000 images). Peak RSS of this process and of its DataLoader workers
comes from getrusage.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import report  # noqa: E402


def write_images(root: Path, count: int, size: int = 224) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(size // 8, size // 8, 3), dtype=np.uint8)
    for i in range(count):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        tile = np.roll(base, i % 17, axis=0) // (1 + i % 2)
        Image.fromarray(tile).resize((size, size), Image.BILINEAR).save(folder / f"{i:05d}.jpg", quality=85)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--imgsz", type=int, default=224)
    args = parser.parse_args()
    from imgcls.engine.train import train

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["IMGCLS_CACHE"] = str(Path(tmp) / "cache")
        start = time.time()
        write_images(Path(tmp) / "data", args.images, args.imgsz)
        written = time.time() - start
        train(data=str(Path(tmp) / "data"), model="mobilenetv3_small_050", pretrained=False, freeze=True,
              unfreeze_at=3, epochs=3, imgsz=args.imgsz, batch_size=64, project=str(Path(tmp) / "runs"),
              split="0.8,0.2", progress=False)
        self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        report("peak RSS with caches on", images=args.images, imgsz=args.imgsz, peak_rss_gib=round(self_peak, 3),
               worker_peak_rss_gib=round(child_peak, 3), write_seconds=round(written, 1),
               train_seconds=round(time.time() - start - written, 1))


if __name__ == "__main__":
    main()
