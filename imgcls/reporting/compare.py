"""``imgcls compare``: one table of several runs, from their run folders, sorted by a chosen metric."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from pathlib import Path

from ..console import setup_logging
from ..errors import ImgclsError
from ..pages import esc, page, table
from ..record.files import atomic_write_text, new_run_dir
from ..record.results import read_run

log = logging.getLogger("imgcls")

# (key, header, lower is better)
COLUMNS = [
    ("run", "run", False),
    ("model", "model", False),
    ("pretrained", "pretrained", False),
    ("frozen", "frozen", False),
    ("imgsz", "image size", False),
    ("epochs", "epochs", False),
    ("params", "parameters", True),
    ("flops", "FLOPs", True),
    ("val_accuracy", "best val acc", False),
    ("val_macro_f1", "val macro-F1", False),
    ("test_accuracy", "test acc", False),
    ("train_seconds", "train s", True),
    ("predict_images_per_s", "torch img/s*", False),
    ("predict_batch", "at batch", False),
]
# shown where a compared run is multi-label (several labels per image), whose runs have no accuracy
MULTI_LABEL_COLUMNS = [
    ("val_mAP", "best val mAP", False),
    ("test_mAP", "test mAP", False),
    ("test_sample_f1", "test sample-F1", False),
]
LOWER_IS_BETTER = {key for key, _, lower in COLUMNS if lower}
FOOTNOTE = ("* torch img/s: `imgcls benchmark` throughput of the PyTorch backend at the largest batch it measured, "
            "from the newest RUN/benchmark*/benchmark.json holding a torch result; - when the run has none")


def _benchmark_number(folder: Path) -> int:
    """benchmark -> 1, benchmark2 -> 2, ... (the order in which imgcls benchmark made them)."""
    return int(folder.name[len("benchmark"):] or 1)


def benchmark_speed(run_dir: Path) -> tuple[float, int] | tuple[None, None]:
    """(images/s, batch) of the torch backend at its largest batch, from the newest benchmark of the run.

    The torch backend is the one every benchmark measures by default and runs wherever imgcls runs, so its
    numbers compare across runs; the largest batch is the throughput a folder of images gets.
    """
    folders = [f for f in run_dir.glob("benchmark*") if re.fullmatch(r"benchmark\d*", f.name)
               and (f / "benchmark.json").is_file()]
    for folder in sorted(folders, key=_benchmark_number, reverse=True):
        try:
            bench = json.loads((folder / "benchmark.json").read_text(encoding="utf-8"))
            torch_rows = [r for r in bench["results"] if r["backend"] == "torch"]
            if torch_rows:
                best = max(torch_rows, key=lambda r: int(r["batch"]))
                return float(best["img_per_s"]), int(best["batch"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning(f"WARNING: {folder / 'benchmark.json'} is damaged ({e!r}); skipped")
    return None, None


def run_summary(run_dir: Path) -> dict:
    """One row of the table from the run's record.

    ``predict_images_per_s`` and ``predict_batch`` come from the run's newest benchmark (see benchmark_speed).
    """
    run = read_run(run_dir)
    params, best, test = run.settings, run.best or {}, run.test or {}
    images_per_s, batch = benchmark_speed(run.run_dir)
    return {
        "run": str(run.run_dir),
        "model": run.model.get("name", params.get("model")),
        "pretrained": params.get("pretrained"),
        "frozen": params.get("freeze"),
        "imgsz": params.get("imgsz"),
        "epochs": f"{run.epochs_run}/{params.get('epochs', run.epochs_run)}",
        "params": run.model.get("total parameters"),
        "flops": run.model.get("FLOPs per image"),
        "val_accuracy": best.get("accuracy"),
        "val_macro_f1": best.get("macro_avg", {}).get("f1"),
        "test_accuracy": test.get("accuracy"),
        "train_seconds": run.train_seconds,
        "predict_images_per_s": images_per_s,
        "predict_batch": batch,
        "val_mAP": best.get("mAP"),
        "test_mAP": test.get("mAP"),
        "test_sample_f1": test.get("sample_f1"),
    }


def columns_of(rows: list[dict]) -> list[tuple[str, str, bool]]:
    """The table's columns: with the multi-label ones where a run has them."""
    return COLUMNS + (MULTI_LABEL_COLUMNS if any(r.get("val_mAP") is not None for r in rows) else [])


def collect_runs(paths: list[str | os.PathLike]) -> list[dict]:
    rows, skipped = [], []
    for path in paths:
        run_dir = Path(path)
        if not (run_dir / "results.json").is_file():
            skipped.append(str(run_dir))
            continue
        try:
            rows.append(run_summary(run_dir))
        except (ImgclsError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning(f"WARNING: {run_dir}/results.json is damaged ({e}); left out")
    if skipped:
        log.warning(f"WARNING: not run folders (no results.json), left out: {', '.join(skipped)}")
    if not rows:
        raise ImgclsError(f"no run folder among {[str(p) for p in paths]}; pass folders such as runs/train runs/train2")
    return rows


def sort_rows(rows: list[dict], key: str) -> list[dict]:
    """Best first: descending, or ascending for costs (parameters, FLOPs, time); missing values last."""
    if key not in dict((k, h) for k, h, _ in COLUMNS + MULTI_LABEL_COLUMNS):
        raise ImgclsError(f"--sort {key!r}: choose one of {', '.join(k for k, _, _ in COLUMNS + MULTI_LABEL_COLUMNS)}")
    present = [r for r in rows if r[key] is not None]
    absent = [r for r in rows if r[key] is None]
    present.sort(key=lambda r: r[key], reverse=key not in LOWER_IS_BETTER)
    return present + absent


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key in ("val_accuracy", "val_macro_f1", "test_accuracy", "val_mAP", "test_mAP", "test_sample_f1"):
        return f"{value:.4f}"
    if key in ("params", "flops"):
        for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if value >= size:
                return f"{value / size:.2f}{unit}"
        return str(value)
    if key == "train_seconds":
        return f"{value:.1f}"
    if key == "predict_images_per_s":
        return f"{value:.1f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def format_table(rows: list[dict]) -> str:
    """Plain fixed-width text for the console."""
    header = [h for _, h, _ in columns_of(rows)]
    body = [[_cell(k, r[k]) for k, _, _ in columns_of(rows)] for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in [header, *body]]
    return "\n".join(lines)


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([k for k, _, _ in columns_of(rows)])
    for r in rows:
        writer.writerow(["" if r[k] is None else r[k] for k, _, _ in columns_of(rows)])
    return buffer.getvalue()


def to_html(rows: list[dict], sort: str) -> str:
    keys = [k for k, _, _ in columns_of(rows)]
    body = (f"<h1>imgcls compare</h1><p class='sub'>{len(rows)} run(s), best {esc(sort)} first.</p>"
            + table([h for _, h, _ in columns_of(rows)], [[_cell(k, r[k]) for k in keys] for r in rows],
                    sorted_column=keys.index(sort) if sort in keys else None)
            + f"<p class='note'>{esc(FOOTNOTE)}</p>")
    return page("imgcls compare", body)


def compare_runs(runs: list[str | os.PathLike], sort: str = "val_accuracy", out_dir: str | os.PathLike | None = None,
                 echo: bool = True) -> tuple[list[dict], Path]:
    """Table the runs, print it, and write compare.csv and compare.html.

    ``out_dir`` defaults to a new folder next to the first run (runs/compare, runs/compare2, ...).
    Returns the sorted rows and the folder written.
    """
    setup_logging()
    rows = sort_rows(collect_runs(runs), sort)
    if out_dir is None:
        out = new_run_dir(Path(rows[0]["run"]).parent, "compare")
    else:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compare.csv", to_csv(rows))
    atomic_write_text(out / "compare.html", to_html(rows, sort))
    if echo:
        print(format_table(rows))
        print(FOOTNOTE)
        print(f"Saved {out / 'compare.csv'} and {out / 'compare.html'}")
    return rows, out
