"""Peak memory of `imgcls predict` as the number of images grows: it should stay flat (streaming).

    python benchmarks/predict_memory.py WEIGHTS [--counts 1000,10000] [--workers 0]

Writes N small generated PNGs (hard links to a few files, so disk use stays tiny) into a temporary
folder, runs `imgcls predict` on it in a fresh process per N, and prints each run's peak RSS and speed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def make_folder(root: Path, count: int) -> None:
    from imagegen import CLASSES, shape_image

    originals = []
    for i, kind in enumerate(CLASSES * 4):
        path = root / f"_src_{i}_{kind}.png"
        shape_image(kind, size=96, seed=i).save(path)
        originals.append(path)
    for n in range(count):  # 1,000 images per sub-folder, as a photo collection might be
        folder = root / f"part{n // 1000:04d}"
        folder.mkdir(exist_ok=True)
        os.link(originals[n % len(originals)], folder / f"img_{n:07d}.png")
    for path in originals:
        path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("weights")
    parser.add_argument("--counts", default="1000,10000")
    parser.add_argument("--workers", default="0")
    parser.add_argument("--batch-size", default="64")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for count in [int(c) for c in args.counts.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "images"
            source.mkdir()
            make_folder(source, count)
            start = time.time()
            run = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "imgcls", "predict",
                                  "--weights", args.weights, "--source", str(source), "--out", str(Path(tmp) / "out"),
                                  "--workers", args.workers, "--batch-size", args.batch_size, "--device", "cpu"],
                                 capture_output=True, text=True, env=env)
            seconds = time.time() - start
            if run.returncode != 0:
                sys.exit(run.stderr[-2000:])
            peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1))
            rate = re.search(r"([\d.]+) img/s", run.stderr).group(1)
            print(f"{count:>8} images  peak RSS {peak_kb / 1024:7.1f} MiB  {rate:>8} img/s (predict loop)  "
                  f"{seconds:6.1f} s wall")


if __name__ == "__main__":
    main()
