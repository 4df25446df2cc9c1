"""Planted label errors: does `imgcls check --labels` rank them near the top?

A copy of a class-folder data set (in a temporary folder, never in the repository) gets a share of its images
(default 5%, chosen with a fixed seed) moved into a wrong class folder. `imgcls.check(labels=True)` then ranks every
image by how likely its label is wrong. We report recall and precision of the planted errors among the top k% of
that ranking and among cleanlab's own flagged set, and the wall time (with the feature cache state as found).

    python benchmarks/label_errors.py /work/shared/datasets/flowers5
    python benchmarks/label_errors.py /work/shared/datasets/aid30
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Timer, report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CUTOFFS = (0.05, 0.10, 0.20)


def plant_errors(source: Path, dest: Path, fraction: float, seed: int) -> dict[str, str]:
    """Copy source to dest with ``fraction`` of the images moved to another class folder (chosen at random).
    Returns {path in the copy: true class}."""
    shutil.copytree(source, dest)
    classes = sorted(p.name for p in dest.iterdir() if p.is_dir())
    images = sorted(p for c in classes for p in (dest / c).iterdir() if p.is_file())
    rng = random.Random(seed)
    planted = {}
    for path in rng.sample(images, round(fraction * len(images))):
        truth = path.parent.name
        wrong = rng.choice([c for c in classes if c != truth])
        target = dest / wrong / f"moved_{path.name}"
        path.rename(target)
        planted[f"{wrong}/{target.name}"] = truth
    return planted


def scores(ranked: list[str], planted: set[str], cut: int) -> dict:
    hits = sum(1 for p in ranked[:cut] if p in planted)
    return {"cut": cut, "recall": round(hits / len(planted), 4), "precision": round(hits / max(cut, 1), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()

    import imgcls

    work = Path(tempfile.mkdtemp(prefix=f"imgcls-labels-{args.dataset.name}-"))
    assert REPO not in work.parents, "the planted copy must live outside the repository"
    data = work / "data"
    planted = plant_errors(args.dataset, data, args.fraction, args.seed)
    with Timer() as timer:
        result = imgcls.check(data, out=work / "check", labels=True, near=False, model=args.model,
                              export_relabel=work / "relabel.csv")
    section = result.labels
    ranked = [row["path"] for row in section["ranked"]]
    flagged = [row["path"] for row in section["ranked"] if row["flagged"]]
    at = {f"top {int(c * 100)}%": scores(ranked, set(planted), round(c * len(ranked))) for c in CUTOFFS}
    hits = sum(1 for p in flagged if p in planted)
    report("label_errors", dataset=args.dataset.name, images=len(ranked), planted=len(planted),
           seed=args.seed, model=section["model"], folds=section["folds"],
           cross_validated_accuracy=section["cross_validated_accuracy"], **at,
           cleanlab_flagged={"count": len(flagged), "recall": round(hits / len(planted), 4),
                             "precision": round(hits / max(len(flagged), 1), 4)},
           wall_seconds=round(timer.seconds, 1), feature_seconds=section["feature_seconds"],
           review_seconds=round(section["seconds"] - section["feature_seconds"], 1), work=str(work))
    shutil.rmtree(data)  # the planted copy is ours; the report folder and relabel.csv stay for a look


if __name__ == "__main__":
    main()
