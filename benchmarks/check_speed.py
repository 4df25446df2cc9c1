"""How fast `imgcls check` reads a data set of 512x384 JPEGs (target: >= 300 images/s on 2 cores).

    python benchmarks/check_speed.py [--images 1000] [--workers N] [--repeat 3]

It writes its own photo-like JPEGs (smooth colour fields, shapes and sensor-like noise, ~40 KB each)
into a temporary folder of 2 classes, then times the full check (read, SHA-256, draft decode,
256-bit perceptual hash, duplicate search, findings) without and with writing the report, and the
fast part alone (what `imgcls train` runs: no perceptual hash). The best of --repeat runs is shown,
after one untimed warm-up run that fills the OS file cache and imports the libraries. CPU ms/image
(process CPU time over all threads) does not depend on what else runs on the machine: 2 idle cores
give at most 2000 / that many images/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imgcls.data.check import run_check  # noqa: E402


def photo_like(rng: np.random.Generator, size=(512, 384)) -> Image.Image:
    low = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(low, "RGB").resize(size, Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.integers(0, size[0]), rng.integers(0, size[1])
        r = int(rng.integers(10, 80))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    image = image.filter(ImageFilter.GaussianBlur(1.5))
    noisy = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, size=(size[1], size[0], 3), dtype=np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def make_dataset(root: Path, n: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    total = 0
    for i in range(n):
        folder = root / ("cats" if i % 2 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{i:05d}.jpg"
        photo_like(rng).save(path, "JPEG", quality=90)
        total += path.stat().st_size
    return total


def best_of(repeat: int, fn) -> tuple[float, float]:
    """Best wall-clock seconds and best process CPU seconds (all threads) over ``repeat`` runs."""
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=None, help="reading threads (default: cores + 1)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {cpus} cores usable, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        t0 = time.perf_counter()
        size = make_dataset(data, args.images)
        print(f"generated {args.images} JPEGs 512x384, {size / args.images / 1024:.0f} KB each, "
              f"in {time.perf_counter() - t0:.1f}s")
        run_check(data, near=True, workers=args.workers, write=False)  # warm-up
        cases = [
            ("check (near duplicates), no report", dict(near=True, write=False)),
            ("check (near duplicates) + check.json/html", dict(near=True, write=True, out=Path(tmp) / "out")),
            ("fast part only (as in train)", dict(near=False, write=False)),
        ]
        for label, kwargs in cases:
            seconds, cpu = best_of(args.repeat, lambda: run_check(data, workers=args.workers, **kwargs))
            print(f"{label:45s} {seconds:6.2f}s  {args.images / seconds:7.0f} images/s   "
                  f"CPU {cpu / args.images * 1000:.2f} ms/image")
        print(f"load average after the runs: {os.getloadavg()[0]:.1f} (other processes share these cores)")


if __name__ == "__main__":
    main()
