"""Benchmark 3: predict img/s on a folder, imgcls's fastest-runtime path vs a plain torchvision loop.

    python benchmarks/predict_speed.py --data ../shared/datasets/hymenoptera/val

Both classify every image under --data with efficientnet_lite0 at 224 px, batch 32, the same
number of DataLoader workers. They run alternately, twice each, and the best pass counts, which
keeps the ratio fair on a machine shared with other jobs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Timer, lite0_with_packaged_weights, report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from torchvision import transforms as T

    from imgcls.images import is_image_path
    from imgcls.runs import CHECKPOINT_FORMAT
    from imgcls.runtime import predict_paths

    paths = sorted(p for p in args.data.rglob("*") if p.is_file() and is_image_path(p))
    model = lite0_with_packaged_weights(2).eval()
    preprocess = {"input_size": [3, 224, 224], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear",
                  "crop_pct": 0.875}
    checkpoint = {"format": CHECKPOINT_FORMAT, "version": 1, "model_name": "efficientnet_lite0", "model_kwargs": {},
                  "class_names": ["a", "b"], "preprocess": preprocess, "state_dict": model.state_dict()}

    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            from PIL import Image

            return tf(Image.open(paths[i]).convert("RGB"))

    def plain() -> np.ndarray:
        out = []
        with torch.no_grad():
            for images in torch.utils.data.DataLoader(Files(), args.batch_size, num_workers=args.workers):
                out.append(torch.softmax(model(images), 1).numpy())
        return np.concatenate(out)

    os.environ["IMGCLS_CACHE"] = tempfile.mkdtemp()  # the first imgcls pass measures the runtimes afresh
    best_plain = best_imgcls = float("inf")
    for _ in range(args.repeats):
        with Timer() as t:
            reference = plain()
        best_plain = min(best_plain, t.seconds)
        with Timer() as t:
            fast = predict_paths(checkpoint, paths, batch_size=args.batch_size, workers=args.workers)
        best_imgcls = min(best_imgcls, t.seconds)
    agree = float(np.mean(reference.argmax(1) == fast.argmax(1)))
    report("predict img/s", images=len(paths), plain_img_s=len(paths) / best_plain,
           imgcls_img_s=len(paths) / best_imgcls, speedup=best_plain / best_imgcls, same_top1=agree)


if __name__ == "__main__":
    main()
