"""The rows that benchmarks/gpu/measure.sh brought back, as the markdown table of docs/benchmarks.md's GPU section and
the issue's targets met or not; the rows are appended to benchmarks/results/gpu.jsonl.

    python benchmarks/gpu/summarize.py FILES_AT/rows_imgcls.jsonl FILES_AT/rows_timm.jsonl

Rows of a dry run (GPU_BENCH_DRY=1, on the CPU) are shown but never appended.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results" / "gpu.jsonl"
TEST_TARGET = {"flowers5": 0.85, "aid30": 0.95}
SECONDS_TARGET = 60.0   # to the CPU plan's validation accuracy
BUSY_TARGET = 0.80      # the GPU's busy share while fine-tuning


def _num(value, digits: int = 3, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def table(rows: list[dict]) -> str:
    lines = [("| program | data | device | whole command | test accuracy | to the CPU plan's val accuracy | busy "
              "(its own record) | busy (nvidia-smi) | train img/s | epochs (best) | step |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        epochs = f"{r.get('epochs', '-')} ({r.get('best_epoch', '-')})"
        if r.get("cut_by_timeout"):
            epochs += f" of {r.get('epochs_planned')} planned, cut"
        lines.append(f"| {r['what']} | {r['data']} | {r['device']} | {_num(r['seconds'], 1, ' s')} | "
                     f"{_num(r.get('test_accuracy'))} | {_num(r.get('seconds_to_cpu_accuracy'), 1, ' s')} "
                     f"({r.get('cpu_accuracy')}) | {_num(r.get('busy_results'), 2)} | {_num(r.get('busy_smi'), 2)} | "
                     f"{_num(r.get('images_per_second'), 0)} | {epochs} | {step_text(r.get('training_step'))} |")
    return "\n".join(lines)


def step_text(step: dict | None) -> str:
    """imgcls's training step as its plan chose it (results.json "training step"): autocast, layout, compiled or
    not; "-" for timm's rows and runs without a timed step."""
    if not step:
        return "-"
    amp = {False: "float32", "bf16": "bf16", True: "float16"}.get(step["amp"], str(step["amp"]))
    return (f"{amp}, {'channels_last' if step['channels_last'] else 'contiguous'}"
            f"{', compiled' if step['compile'] else ''}")


def targets(rows: list[dict]) -> list[str]:
    """Each target of the issue, per data set, with the number behind it and whether it is met."""
    out = []
    for data, goal in TEST_TARGET.items():
        ours = next((r for r in rows if r["what"] == "imgcls train" and r["data"] == data), None)
        peer = next((r for r in rows if r["what"] == "timm train.py" and r["data"] == data), None)
        if ours is None:
            out.append(f"- {data}: no imgcls row")
            continue
        acc, secs = ours.get("test_accuracy"), ours.get("seconds_to_cpu_accuracy")
        out.append(f"- {data} test accuracy >= {goal}: {_num(acc)} ({_met(acc is not None and acc >= goal)})")
        out.append(f"- {data} time to the CPU plan's {ours.get('cpu_accuracy')} <= {SECONDS_TARGET:.0f} s: "
                   f"{_num(secs, 1, ' s')} ({_met(secs is not None and secs <= SECONDS_TARGET)})")
        for way in ("busy_results", "busy_smi"):
            busy = ours.get(way)
            out.append(f"- {data} GPU busy >= {BUSY_TARGET:.0%} ({way[5:]}): {_num(busy, 2)} "
                       f"({_met(busy is not None and busy >= BUSY_TARGET)})")
        theirs = peer.get("test_accuracy") if peer else None
        out.append(f"- {data} imgcls ahead of timm train.py: {_num(acc)} against {_num(theirs)} "
                   f"({_met(acc is not None and theirs is not None and acc > theirs)})")
    return out


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="rows_*.jsonl from measure.sh")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"where rows are appended (default {RESULTS})")
    a = parser.parse_args(argv)
    rows = [json.loads(line) for f in a.files for line in f.read_text().splitlines() if line.strip()]
    print(table(rows))
    print()
    print("\n".join(targets(rows)))
    real = [r for r in rows if not r.get("dry_run")]
    if real:
        with open(a.results, "a", encoding="utf-8") as f:
            f.writelines(json.dumps({**r, "source": "benchmarks/gpu/measure.sh"}) + "\n" for r in real)
    print(f"\n{len(real)} row(s) appended to {a.results}; {len(rows) - len(real)} dry-run row(s) not appended")


if __name__ == "__main__":
    main()
