"""Open set: train on four flower classes, then ask how well `--reject` tells the fifth (near out-of-distribution)
and aerial scenes (far out-of-distribution) from the four it knows.

The model is `imgcls train --fast` (a linear head on cached tf_efficientnet_lite0 features), or with `--plan default`
the default budgeted plan (top stages fine-tuned); the rejection score and threshold are the ones training fitted
and calibrated (keeping 95% of the validation split). In-distribution scores come from the
test split, which neither training nor calibration saw; nothing is tuned on the OOD images.

    python benchmarks/open_set.py /work/shared/datasets/flowers5 --hold-out tulip --far /work/shared/datasets/aid30
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Timer, report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--hold-out", default="tulip")
    parser.add_argument("--far", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plan", choices=("fast", "default"), default="fast",
                        help="fast: `imgcls train --fast` (about 3 min); default: the budgeted default plan (15 min)")
    parser.add_argument("--model", default=None, help="the backbone (default: imgcls's default model)")
    args = parser.parse_args()

    import imgcls

    work = Path(tempfile.mkdtemp(prefix="imgcls-open-set-"))
    assert REPO not in work.parents, "the copy must live outside the repository"
    known = work / "known"
    for folder in sorted(p for p in args.dataset.iterdir() if p.is_dir() and p.name != args.hold_out):
        shutil.copytree(folder, known / folder.name)
    with Timer() as train_timer:
        trained = imgcls.train(data=str(known), fast=args.plan == "fast", seed=args.seed, project=str(work / "runs"),
                               progress=False, **({"model": args.model} if args.model else {}))
    weights = trained.run_dir / "weights" / "best.pt"
    results = {}
    for name, ood in (("near", args.dataset / args.hold_out), ("far", args.far)):
        if ood is None:
            continue
        with Timer() as timer:
            block = imgcls.evaluate(weights, split="test", ood=ood, progress=False).metrics["open_set"]
        results[name] = {"ood": str(ood), "ood_images": block["ood_images"], "auroc": block["auroc"],
                         "false_accept_rate": block["false_accept_rate"],
                         "test_rejected": block["rejected"], "seconds": round(timer.seconds, 1)}
    report("open_set", dataset=args.dataset.name, plan=args.plan, model=args.model or "default",
           known=sorted(p.name for p in known.iterdir()),
           held_out=args.hold_out, score=block["score"], threshold=block["threshold"],
           keep_on_val=block["keep_on_val"], test_accuracy=trained.test["accuracy"],
           train_seconds=round(train_timer.seconds, 1), **results, work=str(work))
    shutil.rmtree(known)


if __name__ == "__main__":
    main()
