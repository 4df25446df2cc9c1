"""INT8, calibrated on the run's training images, and its price list: file size, speed, validation accuracy
and top-1 agreement with PyTorch next to FP32. ONNX: onnxruntime static quantization (here); TFLite:
full-integer conversion (deploy/tflite.py), compared here the same way."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..metrics import labels_present, sigmoid
from ..record.checkpoint import card_of
from ..record.files import atomic_write_bytes, put_in_place
from ..runtime.pytorch import torch_runner
from ..runtime.runner import measure, onnx_runner
from .formats import file_size, onnx_bytes, quantize_onnx, readable, require
from .parity import reference_inputs, split_images

log = logging.getLogger("imgcls")

# INT8 that loses more accuracy than this (in points, i.e. percent) is called out plainly.
MAX_ACCURACY_LOSS_POINTS = 1.0
SPEED_NOISE = 0.05  # speeds within 5% of each other are the same speed: two timings differ that much
ACCURACY_IMAGES = 1000


def int8_path_for(fp32_path: Path) -> Path:
    """best.onnx -> best_int8.onnx"""
    return fp32_path.with_name(f"{fp32_path.stem}_int8.onnx")


def _fix_batch(path: Path, batch: int) -> None:
    """Pin the 'batch' dimension of a dynamic-batch file, for users who asked for a fixed-batch export."""
    import onnx
    from onnxruntime.tools.onnx_model_utils import (
        fix_output_shapes,
        make_dim_param_fixed,
    )

    proto = onnx.load(str(path))
    make_dim_param_fixed(proto.graph, "batch", batch)
    fix_output_shapes(proto)
    atomic_write_bytes(path, proto.SerializeToString())


def validation_accuracy(runners: dict, checkpoint: dict, limit: int = ACCURACY_IMAGES,
                        reference=None) -> tuple[dict, int, dict]:
    """Top-1 accuracy of each runner on up to ``limit`` validation images (through the one inference path),
    the number of images, and each runner's top-1 agreement with ``reference`` (PyTorch) on them. A multi-label
    model's answers are its label sets (metrics.labels_present), compared with the reference's; their accuracy is
    `imgcls val`'s to measure (None here)."""
    from ..data.geometry import draft_size_for
    from ..data.loaders import ImageDataset, make_loader
    from ..data.transforms import eval_transform
    from ..runtime.inference import predict_logits

    paths, labels, _ = split_images(checkpoint, "val")
    if not paths:
        return {name: None for name in runners}, 0, {name: None for name in runners}
    card = card_of(checkpoint)
    labels = [-1] * len(paths) if card.multi_label else labels   # one class index per image: one-label runs
    dataset = ImageDataset(paths[:limit], labels[:limit], eval_transform(card.preprocess),
                           draft_size=draft_size_for(card.preprocess))
    answers, accuracy, seen = {}, {}, 0
    for name, runner in (({"reference": reference} if reference else {}) | runners).items():
        out = predict_logits(runner, make_loader(dataset, batch_size=32, shuffle=False, workers=0))
        seen = len(out)
        answers[name] = _answers(out.logits, card.thresholds) if seen else None
        accuracy[name] = float(np.mean(answers[name] == out.labels)) if seen and not card.multi_label else None
    agreement = {name: _agreement(answers[name], answers["reference"]) if reference and seen else None
                 for name in runners}
    accuracy.pop("reference", None)
    return accuracy, seen, agreement


def _answers(logits: np.ndarray, thresholds: tuple[float, ...] | None) -> np.ndarray:
    """Each image's answer: its top-1 class, or a multi-label model's labels present (N x labels booleans)."""
    return logits.argmax(1) if thresholds is None else labels_present(sigmoid(logits), thresholds)


def _agreement(answers: np.ndarray, reference: np.ndarray) -> float:
    """The share of images whose answer (a class, or a whole set of labels) is the reference's."""
    same = answers == reference
    return float(np.mean(same.all(axis=1) if same.ndim > 1 else same))


def calibration_batch(checkpoint: dict, calibration_images: int) -> tuple[np.ndarray, str]:
    """Preprocessed training images to calibrate INT8 ranges on, and where they came from."""
    calibration, _, source = reference_inputs(checkpoint, "train", limit=calibration_images)
    if source.endswith("random input(s)"):
        log.warning("WARNING: INT8 ranges calibrated on random inputs are poor; keep the run's data folder in place")
    log.info(f"Calibrating INT8 on {source}")
    return calibration, source


def quantize_and_compare(model: torch.nn.Module, checkpoint: dict, fp32_path: Path, *, dynamic_batch: bool,
                         calibration_images: int, bench_seconds: float = 2.0,
                         batches: tuple[int, ...] = (1, 32)) -> tuple[Path, dict]:
    """Write FP32_STEM_int8.onnx next to the FP32 file and print FP32 vs INT8 side by side."""
    onnx = require("onnx", "onnx")
    from ..models.familiarity import outputs_of
    from .formats import export_metadata, set_onnx_metadata

    int8_path = int8_path_for(fp32_path)
    calibration, source = calibration_batch(checkpoint, calibration_images)
    with tempfile.TemporaryDirectory() as tmp:
        # Quantize and time dynamic-batch twins so batch 32 can be measured whatever the user's batch setting.
        fp32_dynamic = Path(tmp) / "fp32.onnx"
        fp32_dynamic.write_bytes(onnx_bytes(model, card_of(checkpoint), dynamic_batch=True))
        int8_dynamic = Path(tmp) / "int8.onnx"
        quantize_onnx(fp32_dynamic, int8_dynamic, calibration)
        proto = onnx.load(str(int8_dynamic))
        set_onnx_metadata(proto, export_metadata(card_of(checkpoint), model))
        int8_dynamic.write_bytes(proto.SerializeToString())
        threads = torch.get_num_threads()
        card = card_of(checkpoint).replace(outputs=outputs_of(model))
        runners = {"FP32": readable(onnx_runner(fp32_dynamic, threads=threads), card)[0],
                   "INT8": readable(onnx_runner(int8_dynamic, threads=threads), card)[0]}
        atomic_write_bytes(int8_path, int8_dynamic.read_bytes())
        if not dynamic_batch:
            _fix_batch(int8_path, 1)
        report = compare_int8(runners, {"FP32": fp32_path, "INT8": int8_path}, checkpoint, model, source,
                              bench_seconds, batches)
    return int8_path, report


def quantize_file_and_compare(fmt, model: torch.nn.Module, checkpoint: dict, fp32_path: Path, *,
                              calibration_images: int, bench_seconds: float = 2.0,
                              batches: tuple[int, ...] = (1, 32)) -> tuple[Path, dict]:
    """INT8 for the other formats that offer it (TFLite, web): FP32_STEM_int8 written by the format next to the
    FP32 file (or folder), then both loaded back and compared side by side."""
    int8_path = fmt.int8_path(fp32_path)
    calibration, source = calibration_batch(checkpoint, calibration_images)
    with tempfile.TemporaryDirectory(prefix=".imgcls-int8-", dir=fp32_path.parent) as tmp:
        staged = Path(tmp) / int8_path.name
        fmt.write_int8(model, card_of(checkpoint), fp32_path, staged, calibration)
        put_in_place(staged, int8_path)
    runners = {"FP32": readable(*fmt.load(fp32_path, None))[0], "INT8": readable(*fmt.load(int8_path, None))[0]}
    report = compare_int8(runners, {"FP32": fp32_path, "INT8": int8_path}, checkpoint, model, source,
                          bench_seconds, batches)
    return int8_path, report


def compare_int8(runners: dict, paths: dict, checkpoint: dict, model, source: str, bench_seconds: float,
                 batches) -> dict:
    """Size, speed, validation accuracy and top-1 agreement with PyTorch of the FP32 and INT8 runners, printed (a
    multi-label model: agreement on the set of labels present, and no accuracy)."""
    shape = card_of(checkpoint).input_size
    speed = {(name, b): measure(runner, np.random.default_rng(0).standard_normal((b, *shape), np.float32),
                                seconds=bench_seconds) for name, runner in runners.items() for b in batches}
    accuracy, n_val, agreement = validation_accuracy(runners, checkpoint, reference=torch_runner(model))
    report = {"val_images": n_val, "calibration": source}
    agrees = "label_set_agreement_with_pytorch" if card_of(checkpoint).multi_label else "top1_agreement_with_pytorch"
    for name in ("FP32", "INT8"):
        report[name.lower()] = {"path": str(paths[name]), "size_bytes": file_size(paths[name]),
                                "val_accuracy": accuracy[name], agrees: agreement[name],
                                "speed": {str(b): speed[(name, b)] for b in batches}}
    report["verdicts"] = int8_verdicts(report, batches)
    print(format_int8_report(report, batches))
    return report


def int8_verdicts(report: dict, batches) -> list[str]:
    """Plain sentences for what a user must know: INT8 slower (by more than timing noise), or INT8 less accurate
    by more than a point."""
    lines = []
    for b in batches:
        fp32, int8 = report["fp32"]["speed"][str(b)]["img_per_s"], report["int8"]["speed"][str(b)]["img_per_s"]
        if int8 < fp32 * (1 - SPEED_NOISE):
            lines.append(f"INT8 is SLOWER than FP32 at batch {b} on this machine ({int8:.1f} vs {fp32:.1f} img/s); "
                         "keep FP32 here unless the smaller file matters")
    acc32, acc8 = report["fp32"]["val_accuracy"], report["int8"]["val_accuracy"]
    if acc32 is not None and acc8 is not None and (acc32 - acc8) * 100 > MAX_ACCURACY_LOSS_POINTS:
        lines.append(f"INT8 LOSES {(acc32 - acc8) * 100:.1f} points of validation accuracy "
                     f"({acc32 * 100:.1f}% -> {acc8 * 100:.1f}%); calibrate on more images or keep FP32")
    return lines


def format_int8_report(report: dict, batches) -> str:
    def acc(x):
        return "n/a" if x is None else f"{x * 100:.1f}%"

    def size(x):
        return f"{x['size_bytes'] / 1e6:.2f} MB"

    rows = [("", "FP32", "INT8"), ("file size", size(report["fp32"]), size(report["int8"]))]
    for b in batches:
        rows.append((f"img/s, batch {b}", f"{report['fp32']['speed'][str(b)]['img_per_s']:.1f}",
                     f"{report['int8']['speed'][str(b)]['img_per_s']:.1f}"))
    rows.append((f"val accuracy ({report['val_images']} images)", acc(report["fp32"]["val_accuracy"]),
                 acc(report["int8"]["val_accuracy"])))
    for key, what in (("top1_agreement_with_pytorch", "top-1"), ("label_set_agreement_with_pytorch", "label-set")):
        if report["fp32"].get(key) is not None:
            rows.append((f"{what} agreement with PyTorch", acc(report["fp32"][key]), acc(report["int8"][key])))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width[i]) if i == 0 else cell.rjust(width[i]) for i, cell in enumerate(r))
             for r in rows]
    lines += report["verdicts"] or ["INT8 is at least as fast as FP32 here and within "
                                    f"{MAX_ACCURACY_LOSS_POINTS:g} point of its accuracy"]
    return "\n".join(lines)
