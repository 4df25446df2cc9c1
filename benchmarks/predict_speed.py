"""Predict speed as a user gets it: `imgcls predict --weights best.pt` against a plain torchvision loop.

    python benchmarks/predict_speed.py --weights runs/train/weights/best.pt --data ../shared/datasets/aid30

Both are whole processes timed from start to exit (Python start-up, imports, model loading included),
on every image under --data, with the same checkpoint. The plain loop is what a user would write:
ImageFolder-style PIL decoding, torchvision Resize + CenterCrop + Normalize with the checkpoint's
preprocessing, a DataLoader with 1 worker, batch 32, eager `model(images)` under torch.no_grad().

imgcls runs "cold", each time with a new empty cache folder, as on another machine, and "warm" (what every
later call gets). A best.pt that `imgcls train` wrote carries its checked ONNX export inside, so even its cold
call runs on it; a checkpoint without it (written by torch.save elsewhere, or by an older imgcls) is exported
to ONNX, checked and the runtimes measured first: when --weights carries the export, that case is timed too,
on a copy re-saved without it ("cold, no export inside"). The contenders alternate, best of --repeats each.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import report  # noqa: E402

PLAIN = r'''
import sys, json, torch, timm
from pathlib import Path
from PIL import Image
from torchvision import transforms as T
weights, listing, out = sys.argv[1:4]
ckpt = torch.load(weights, map_location="cpu", weights_only=True)
pre = ckpt["preprocess"]
model = timm.create_model(ckpt["model_name"], num_classes=len(ckpt["class_names"]))
model.load_state_dict(ckpt["state_dict"])
model.eval()
size = pre["input_size"][1:]
tf = T.Compose([T.Resize(int(min(size) / pre["crop_pct"]),
                         interpolation=T.InterpolationMode(pre["interpolation"])),
                T.CenterCrop(size), T.ToTensor(), T.Normalize(pre["mean"], pre["std"])])
paths = Path(listing).read_text().splitlines()
class Files(torch.utils.data.Dataset):
    def __len__(self): return len(paths)
    def __getitem__(self, i): return tf(Image.open(paths[i]).convert("RGB"))
labels = []
with torch.no_grad():
    for images in torch.utils.data.DataLoader(Files(), batch_size=32, num_workers=1):
        labels += model(images).argmax(1).tolist()
Path(out).write_text(json.dumps([ckpt["class_names"][i] for i in labels]))
'''


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from imgcls.data.images import is_image_path

    paths = sorted(str(p) for p in args.data.rglob("*") if p.is_file() and is_image_path(p))
    work = Path(tempfile.mkdtemp(prefix="imgcls-predict-speed-"))
    listing = work / "paths.txt"
    listing.write_text("\n".join(paths))
    env = dict(os.environ, IMGCLS_CACHE=str(work / "cache"))
    imgcls = [sys.executable, "-m", "imgcls", "predict", "--weights", str(args.weights), "--source", str(listing),
              "--topk", "1"]
    plain = [sys.executable, "-c", PLAIN, str(args.weights), str(listing), str(work / "plain.json")]
    best = {"plain": float("inf"), "imgcls": float("inf"), "cold": float("inf")}
    foreign = _without_export_inside(args.weights, work / "foreign.pt")
    if foreign is not None:
        best["cold_foreign"] = float("inf")
    for repeat in range(args.repeats):
        cold_env = dict(env, IMGCLS_CACHE=str(work / f"cache-cold-{repeat}"))  # empty, as on another machine
        best["cold"] = min(best["cold"], timed([*imgcls, "--out", str(work / "cold")], cold_env))
        if foreign is not None:  # empty too: export, check, race
            foreign_env = dict(env, IMGCLS_CACHE=str(work / f"cache-foreign-{repeat}"))
            command = [*imgcls[:5], str(foreign), *imgcls[6:], "--out", str(work / "foreign")]
            best["cold_foreign"] = min(best["cold_foreign"], timed(command, foreign_env))
        best["plain"] = min(best["plain"], timed(plain, env))
        best["imgcls"] = min(best["imgcls"], timed([*imgcls, "--out", str(work / "warm")], env))
    with open(work / "warm" / "predictions.csv", newline="") as f:
        ours = [row["predicted"] for row in csv.DictReader(f)]
    theirs = json.loads((work / "plain.json").read_text())
    report("predict, whole command incl. start-up", images=len(paths), weights=str(args.weights),
           plain_img_s=round(len(paths) / best["plain"], 1), imgcls_warm_img_s=round(len(paths) / best["imgcls"], 1),
           imgcls_cold_img_s=round(len(paths) / best["cold"], 1), speedup_warm=round(best["plain"] / best["imgcls"], 2),
           speedup_cold=round(best["plain"] / best["cold"], 2),
           **({"imgcls_cold_no_export_inside_img_s": round(len(paths) / best["cold_foreign"], 1),
               "speedup_cold_no_export_inside": round(best["plain"] / best["cold_foreign"], 2)} if foreign else {}),
           same_top1=round(sum(a == b for a, b in zip(ours, theirs)) / len(paths), 4))


def _without_export_inside(weights: Path, copy: Path) -> Path | None:
    """A copy of ``weights`` as torch.save writes it, when ``weights`` carries its export inside; else None."""
    from imgcls.runtime.cards import embedded_card
    from imgcls.record.checkpoint import load_checkpoint, save_checkpoint

    if embedded_card(weights) is None:
        return None
    save_checkpoint(copy, {k: v for k, v in load_checkpoint(weights).items() if k != "path"})
    return copy


if __name__ == "__main__":
    main()
