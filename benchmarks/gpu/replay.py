"""The accuracy of an accelerator plan's phases, replayed on the CPU (issue 32): epoch for epoch what a GPU would
train (the probe on one view of each image, then every layer on images decoded once and augmented in batches by
data/device_batches, as on a GPU), at the speed of the CPU. What it measures is the recipe's accuracy after a given
number of epochs, which does not depend on the device; the GPU's speed decides only how many epochs a budget buys
(tests/test_plan.py fits them from recorded GPU timings). A GPU's numbers come from benchmarks/gpu/measure.sh.

    python benchmarks/gpu/replay.py --data ../shared/datasets/flowers5 --epochs 8 [--no-graded] [--no-frozen-norm]

Writes one JSON row (test accuracy, the val curve, the phases) to --out and prints it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, required=True, help="epochs of every layer after the probe")
    p.add_argument("--probe-epochs", type=int, default=None, help="default: the accelerator plan's")
    p.add_argument("--imgsz", type=int, default=None)
    p.add_argument("--augment", default=None, help="none, light or strong (default: the plan's for these epochs)")
    p.add_argument("--lr", type=float, default=None, help="the head's lr (default: the plan's)")
    p.add_argument("--body-lr", type=float, default=None, help="the body's lr (default: the plan's)")
    p.add_argument("--graded", action=argparse.BooleanOptionalAction, default=None,
                   help="the body's lr rising layer by layer from --body-lr to --lr (default: the plan's)")
    p.add_argument("--frozen-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="batch-norm layers keeping their pretrained statistics as every layer trains (default: the "
                        "plan's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--project", default="/tmp/replay-runs")
    p.add_argument("--out", default="benchmarks/results/gpu_recipe_on_cpu.jsonl")
    p.add_argument("--note", default="")
    args = p.parse_args(argv)

    os.environ.setdefault("IMGCLS_CPU_BF16", "1")  # a GPU trains under bf16 autocast
    from imgcls.engine import fit, train
    from imgcls.engine.budget import ACCELERATOR, RECIPE, WHOLE, whole_phases

    fit.uses_device_batches = lambda run: run.cfg.cache  # the GPU's input pipeline, on the CPU
    probe, finetune = whole_phases(args.epochs, pretrained=True, accelerator=True)
    if args.probe_epochs is not None:
        probe = replace(probe, epochs=args.probe_epochs)
    changes = {"augment": args.augment, "lr": args.lr, "body_lr": args.body_lr, "graded": args.graded,
               "frozen_norm": args.frozen_norm}
    finetune = replace(finetune, **{k: v for k, v in changes.items() if v is not None})
    plan = [ph for ph in (probe, finetune) if ph.epochs]

    def replayed(cfg, last, model, preprocess, source, device, main, spent=0.0):
        return plan, 1, None, None

    train._plan = replayed
    from imgcls import train as run_train

    start = time.time()
    result = run_train(data=args.data, seed=args.seed, project=args.project, name="replay", budget="10h",
                       **({"imgsz": str(args.imgsz)} if args.imgsz else {}))
    results = json.loads((result.run_dir / "results.json").read_text())
    val = [results[k]["valid info"]["accuracy"] for k in sorted((k for k in results if k.startswith("epoch:")),
                                                                  key=lambda k: int(k.split(":")[1]))]
    row = {
        "data": Path(args.data).name, "seed": args.seed, "epochs": args.epochs,
        "imgsz": results["train parameters"]["imgsz"],
        "phases": [ph.describe() for ph in plan], "val_curve": [round(v, 4) for v in val],
        "best_val": round(max(val), 4), "best_epoch": results.get("best epoch"),
        "test_accuracy": round(results["test"]["accuracy"], 4) if "test" in results else None,
        "wall_minutes": round((time.time() - start) / 60, 1), "note": args.note,
        "recipe": {"accelerator": ACCELERATOR, "whole": WHOLE, "probe_lr": RECIPE["probe_lr"]},
        "date": datetime.date.today().isoformat(), "machine": f"{os.cpu_count()}-core {platform.machine()} CPU",
        "command": "python benchmarks/gpu/replay.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    print(json.dumps(row))
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


if __name__ == "__main__":
    main()
