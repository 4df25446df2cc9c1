"""Accuracy against wall time, as a user gets it: whole `imgcls train` commands, timed from start to exit.

    python benchmarks/accuracy_budget.py --data ../shared/datasets/aid30 --seeds 0 1 2 \\
        --variant default= --variant fast=--fast --variant "nofreeze=--no-freeze --epochs 3" \\
        --out /tmp/acc/aid30.jsonl --plot /tmp/acc/aid30.png

Each --variant is NAME=FLAGS: the flags given to `imgcls train --data DATA --seed S` (``default=`` is the plain
command). Each run is a fresh process with the default cache folder shared between runs, as on a user's
machine: the first run of a data set pays for decoding and features, later ones may reuse them (see
docs/cache.md). Run the seeds in the order given to see that cost where a user would.

For every run one JSON line is written to --out: data, variant, seed, wall seconds of the whole command,
the split the final accuracy is from ("test" where the data has one, else "val"), that accuracy, the plan's
phases, and the per-epoch (elapsed seconds, val accuracy) curve. --plot draws val accuracy against wall time
per variant (the mean over seeds at each epoch), the final accuracy of each run as a point and, with several
seeds, their mean as a star. Rows of other tools in the same format (variant, seed, wall_seconds, split,
accuracy, and curve where there is one) may be appended to --out by hand; with no --variant the script only
draws them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.common import machine  # noqa: E402


def run_once(data: Path, name: str, flags: str, seed: int, project: Path) -> dict:
    """One `imgcls train` command, timed as a whole; its results.json read back."""
    run_name = f"{data.name}-{name}-s{seed}"
    command = [sys.executable, "-m", "imgcls", "train", "--data", str(data), "--seed", str(seed),
               "--project", str(project), "--name", run_name, *shlex.split(flags)]
    log = project / f"{run_name}.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ)).returncode
    wall = time.perf_counter() - start
    if code != 0:
        return {"data": data.name, "variant": name, "seed": seed, "error": f"exit {code}, see {log}"}
    from imgcls.record.results import read_run

    run = read_run(project / run_name)
    final = run.results.get("test") or {}
    split = "test" if final else "val"
    accuracy = final.get("accuracy") if final else (run.best or {}).get("accuracy")
    curve = [(e.get("elapsed"), e["val"]["accuracy"]) for e in run.epochs]
    return {"data": data.name, "variant": name, "flags": flags, "seed": seed, "wall_seconds": round(wall, 1),
            "split": split, "accuracy": accuracy, "phases": run.results.get("phases"),
            "best_epoch": run.best_epoch, "curve": curve, "load_avg_end": os.getloadavg()[0]}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(10, 5))
    named = {v: i for i, v in enumerate(["default", "fast", "nofreeze", "timm", "plain"])}  # one colour everywhere
    variants = sorted({r["variant"] for r in rows if "error" not in r}, key=lambda v: (named.get(v, len(named)), v))
    for number, variant in enumerate(variants):
        color = f"C{named.get(variant, len(named) + number)}"
        runs = [r for r in rows if r["variant"] == variant and "error" not in r]
        curves = [r["curve"] for r in runs if r.get("curve")]  # rows written by hand may have none
        if curves:
            length = min(len(c) for c in curves)
            t = np.mean([[c[0] or 0 for c in curve[:length]] for curve in curves], axis=0)
            acc = np.mean([[c[1] for c in curve[:length]] for curve in curves], axis=0)
            ax.plot(t / 60, acc, color=color, alpha=0.5)
        ax.scatter([r["wall_seconds"] / 60 for r in runs], [r["accuracy"] for r in runs], color=color,
                   marker="o", edgecolor="black", alpha=0.7, zorder=3)
        ax.scatter([np.mean([r["wall_seconds"] for r in runs]) / 60], [np.mean([r["accuracy"] for r in runs])],
                   color=color, marker="*", s=220, edgecolor="black", zorder=4,
                   label=f"{variant}: {np.mean([r['accuracy'] for r in runs]):.3f}, mean of {len(runs)} "
                         f"{'seeds' if len(runs) > 1 else 'seed'}")
    ax.text(0, -0.16, f"dots: each run's final {rows[0].get('split', 'test')} accuracy and the wall time of its whole "
            "command; lines: val accuracy per epoch, the mean over the seeds with a recorded curve",
            transform=ax.transAxes, fontsize=7, alpha=0.8)
    data = ", ".join(sorted({r["data"] for r in rows}))
    ax.set(xlabel="wall time (minutes)", ylabel="accuracy", title=f"{data}: accuracy against wall time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=FLAGS (repeatable); none: only draw --plot from the rows already in --out")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, appended to")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--project", type=Path, help="where the runs go (default: a new temporary folder)")
    args = parser.parse_args()

    if not args.variant and not args.plot:
        parser.error("give --variant NAME=FLAGS to run, or --plot PNG to draw the rows already in --out")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.variant:
        project = args.project or Path(tempfile.mkdtemp(prefix="imgcls-accuracy-"))
        project.mkdir(parents=True, exist_ok=True)
        print(f"machine: {machine()}; runs in {project}", flush=True)
    for seed in args.seeds:
        for spec in args.variant:
            name, _, flags = spec.partition("=")
            row = run_once(args.data.resolve(), name, flags, seed, project)
            print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    if args.plot:
        name = args.data.resolve().name
        rows = [r for r in map(json.loads, filter(str.strip, args.out.read_text().splitlines())) if r["data"] == name]
        if not any("error" not in r for r in rows):
            parser.error(f"{args.out} has no finished run of the data set {name!r} to plot; check --data and --out")
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
