"""Several labels per image: mosaics of two AID tiles of different classes side by side (labels = both classes).

Each class's tiles are split 70/15/15 into train/val/test first, and every mosaic pairs two tiles of the same split
(each tile is the left half of one mosaic and the right half of another), so no tile is seen in two splits. The
mosaics and a labels.csv (path, labels joined by ";", split) go to a folder outside the repository; then the
whole `imgcls train` command runs on it at the given budget, and one row (test mAP, sample-based F1, subset
accuracy, times) is appended to benchmarks/results/multilabel.jsonl.

    python benchmarks/multilabel_mosaic.py                  # the default budget (15m)
    python benchmarks/multilabel_mosaic.py --budget 2m      # a quick end-to-end check
    python benchmarks/multilabel_mosaic.py --train-args "--resize squash"   # other flags for imgcls train
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARES = (("train", 0.70), ("val", 0.15), ("test", 0.15))


def split_tiles(source: Path, seed: int) -> dict[str, list[tuple[Path, str]]]:
    """Each class's tiles shuffled and cut 70/15/15: {split: [(tile, class)]}."""
    rng = random.Random(seed)
    tiles: dict[str, list[tuple[Path, str]]] = {split: [] for split, _ in SHARES}
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        rng.shuffle(files)
        start = 0
        for i, (split, share) in enumerate(SHARES):
            end = len(files) if i == len(SHARES) - 1 else start + round(share * len(files))
            tiles[split] += [(f, folder.name) for f in files[start:end]]
            start = end
    return tiles


def pairs(tiles: list[tuple[Path, str]], rng: random.Random) -> list[tuple[int, int]]:
    """(left, right) indices: every tile once on each side, the two of a pair always of different classes, the
    right tile drawn at random (a clash of classes is mended by swapping right tiles with another random pair)."""
    right = list(range(len(tiles)))
    rng.shuffle(right)
    clash = (lambda i, j: tiles[i][1] == tiles[right[j]][1])
    for i in range(len(tiles)):
        while clash(i, i):
            j = rng.randrange(len(tiles))
            right[i], right[j] = right[j], right[i]
            if clash(j, j):
                right[i], right[j] = right[j], right[i]
    return list(enumerate(right))


def build(source: Path, out: Path, seed: int) -> Path:
    from PIL import Image

    if (out / "labels.csv").exists():
        return out / "labels.csv"
    rng = random.Random(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for split, tiles in split_tiles(source, seed).items():
        for n, (a, b) in enumerate(pairs(tiles, rng)):
            left, right = (Image.open(tiles[i][0]).convert("RGB") for i in (a, b))
            side = min(left.height, right.height)
            left, right = left.resize((side, side)), right.resize((side, side))
            mosaic = Image.new("RGB", (2 * side, side))
            mosaic.paste(left, (0, 0))
            mosaic.paste(right, (side, 0))
            name = f"images/{split}_{n:04d}.jpg"
            mosaic.save(out / name, quality=92)
            rows.append([name, ";".join(sorted({tiles[a][1], tiles[b][1]})), split])
    with open(out / "labels.csv.tmp", "w", newline="") as f:
        csv.writer(f).writerows([["path", "labels", "split"], *rows])
    (out / "labels.csv.tmp").rename(out / "labels.csv")
    return out / "labels.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/work/shared/datasets/aid30"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/mosaic"))
    parser.add_argument("--budget", default=None, help="imgcls train --budget (default: its own, 15m)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-args", default="--imgsz 224,448",
                        help="more imgcls train flags (default --imgsz 224,448: the 2:1 mosaic whole, each tile at the "
                             "model's 224 px, where a square input would crop away the outer half of each tile or, "
                             "with --resize squash, halve its width)")
    args = parser.parse_args()

    labels = build(args.source, args.out, args.seed)
    runs = args.out.parent / f"{args.out.name}-runs"
    flags = [*shlex.split(args.train_args), *(["--budget", args.budget] if args.budget else [])]
    command = [sys.executable, "-m", "imgcls", "train", "--data", str(labels), "--project", str(runs), "--name",
               "mosaic", *flags]
    started = time.time()
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.time() - started
    if finished.returncode != 0:
        sys.exit(f"imgcls train failed:\n{finished.stderr[-3000:]}")
    run_dir = Path(next(line.split("Results saved to ", 1)[1].strip() for line in finished.stderr.splitlines()
                        if "Results saved to " in line))
    results = json.loads((run_dir / "results.json").read_text())
    test = results["test"]
    row = {"benchmark": "multilabel_mosaic", "date": time.strftime("%Y-%m-%d"), "machine": machine(),
           "command": shlex.join(["imgcls", "train", "--data", str(labels), *flags]),
           "model": results["train parameters"]["model"], "labels": len(results["dataset"]["class_names"]),
           "imgsz": results["train parameters"]["imgsz"], "phases": [p["name"] for p in results["phases"]],
           "train_images": results["dataset"]["train"]["total"],
           "test_images": test["images"],
           "test_mAP": test["mAP"], "test_sample_f1": test["sample_f1"],
           "test_subset_accuracy": test["subset_accuracy"], "test_hamming_loss": test["hamming_loss"],
           "train_seconds": results["train seconds"], "wall_seconds": round(wall, 1), "run": str(run_dir)}
    print(json.dumps(row), flush=True)
    with open(REPO / "benchmarks" / "results" / "multilabel.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
