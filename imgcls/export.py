"""``imgcls export``: ONNX, TorchScript, OpenVINO and TFLite files that carry their own labels and preprocessing.

Every export is checked against PyTorch on images of the run's validation split before it is put in
place, so a file that gives other answers never lands next to the checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from .errors import ImgclsError
from .runs import atomic_write_bytes, load_checkpoint, run_dir_of

log = logging.getLogger("imgcls")

FORMATS = ("onnx", "torchscript", "openvino", "tflite")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript", "openvino": ".xml", "tflite": ".tflite"}
ONNX_FORMAT = "imgcls-onnx"
METADATA_KEY = "imgcls"
INPUT_NAME, OUTPUT_NAME = "images", "logits"
OPSET = 17
# FP32 exports must match PyTorch this closely (largest absolute logit difference) and agree on every top-1.
MAX_LOGIT_DIFF = 1e-3
PARITY_IMAGES = 32
CALIBRATION_IMAGES = 64
ACCURACY_IMAGES = 1000

LogitsFn = Callable[[np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------------------------- metadata

def export_metadata(checkpoint: dict) -> dict:
    """What an exported file needs to classify on its own: labels, preprocessing, model, temperature."""
    return {
        "format": ONNX_FORMAT, "version": 1, "model_name": checkpoint["model_name"],
        "class_names": list(checkpoint["class_names"]), "preprocess": dict(checkpoint["preprocess"]),
        "temperature": float(checkpoint.get("temperature", 1.0)),
    }


def read_onnx_metadata(path: str | os.PathLike) -> dict:
    """The imgcls metadata of an exported .onnx file."""
    onnx = require("onnx", "onnx")
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ImgclsError(f"{path}: has no imgcls metadata; export it with `imgcls export`")
    return json.loads(props[METADATA_KEY])


def read_torchscript_metadata(path: str | os.PathLike) -> dict:
    extra = {"imgcls.json": ""}
    with _quiet_export():
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if not extra["imgcls.json"]:
        raise ImgclsError(f"{path}: has no imgcls metadata; export it with `imgcls export`")
    return json.loads(extra["imgcls.json"])


def read_openvino_metadata(path: str | os.PathLike) -> dict:
    ov = require("openvino", "openvino")
    model = ov.Core().read_model(str(path))
    if not model.has_rt_info([METADATA_KEY]):
        raise ImgclsError(f"{path}: has no imgcls metadata; export it with `imgcls export`")
    return json.loads(model.get_rt_info([METADATA_KEY]).astype(str))


def require(module: str, package: str):
    """Import an optional dependency, or fail with one line naming the pip package to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImgclsError(f"missing package {package}: install it with `pip install {package}`") from None


# ------------------------------------------------------------------------------------ images from the run

@dataclass
class SplitImages:
    """Paths and labels of one split of the run's data, or nothing (with the reason) when unavailable."""

    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    reason: str = ""


def run_split_images(checkpoint: dict, split: str) -> SplitImages:
    """Images of ``split`` (train/val/test) from the run that produced ``checkpoint``.

    Uses the run's split.csv when imgcls made the split, else the data folder's own split folders.
    """
    from . import data as data_mod

    run_dir = run_dir_of(checkpoint["path"]) if checkpoint.get("path") else None
    args = dict(checkpoint.get("args") or {})
    if run_dir is not None and (run_dir / "args.yaml").exists():
        args.update(yaml.safe_load((run_dir / "args.yaml").read_text(encoding="utf-8")) or {})
    if not args.get("data"):
        return SplitImages(reason="the checkpoint records no data folder")
    try:
        split_csv = run_dir / "split.csv" if run_dir is not None else None
        if split_csv is not None and split_csv.exists():
            source = data_mod.read_split_csv(split_csv, Path(args["data"]), list(checkpoint["class_names"]))
        else:
            source = data_mod.discover(args["data"], args.get("split", "0.7,0.15,0.15"), args.get("seed", 0))
    except ImgclsError as e:
        return SplitImages(reason=str(e))
    if list(source.class_names) != list(checkpoint["class_names"]):
        return SplitImages(reason=f"the classes in {args['data']} no longer match the checkpoint's")
    if not source.items.get(split):
        return SplitImages(reason=f"the data in {args['data']} has no {split} images")
    return SplitImages(source.paths(split), source.labels(split))


def load_batch(paths: list[Path], preprocess: dict) -> tuple[np.ndarray, list[int]]:
    """Decode and preprocess images exactly as predict does; returns the batch and the indices used."""
    from .images import ImageReadError, load_image
    from .transforms import eval_transform

    transform = eval_transform(preprocess)
    tensors, used = [], []
    for i, path in enumerate(paths):
        try:
            tensors.append(transform(load_image(path)))
            used.append(i)
        except ImageReadError as e:
            log.warning(f"WARNING: skipped {path}: {e}")
    if not tensors:
        return np.zeros((0, *preprocess["input_size"]), dtype=np.float32), used
    return torch.stack(tensors).numpy().astype(np.float32), used


def _evenly(items: list, limit: int) -> list[int]:
    """Indices of up to ``limit`` items spread over the whole list, so every class is represented."""
    if len(items) <= limit:
        return list(range(len(items)))
    return sorted({int(i) for i in np.linspace(0, len(items) - 1, limit)})


def reference_inputs(checkpoint: dict, split: str = "val", limit: int = PARITY_IMAGES,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Preprocessed images of ``split`` (up to ``limit``), their labels, and where they came from.

    Falls back to random inputs, with a warning, when the run's data folder is gone.
    """
    images = run_split_images(checkpoint, split)
    if images.paths:
        chosen = _evenly(images.paths, limit)
        batch, used = load_batch([images.paths[i] for i in chosen], checkpoint["preprocess"])
        if len(batch):
            labels = np.asarray([images.labels[chosen[i]] for i in used])
            return batch, labels, f"{len(batch)} {split} image(s)"
        images.reason = "none of its images could be read"
    log.warning(f"WARNING: no {split} images for this check ({images.reason}); using {min(limit, 8)} random inputs "
                "instead, which proves the file computes the same function but not on real photos")
    rng = np.random.default_rng(seed)
    batch = rng.standard_normal((min(limit, 8), *checkpoint["preprocess"]["input_size"])).astype(np.float32)
    return batch, None, f"{len(batch)} random input(s)"


# ----------------------------------------------------------------------------------------------- runners

def in_chunks(fn: LogitsFn, batch: np.ndarray, size: int) -> np.ndarray:
    """Apply ``fn`` to ``batch`` ``size`` images at a time (fixed-batch files take exactly their size)."""
    outputs = [fn(batch[i:i + size]) for i in range(0, len(batch), size)]
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32)


def torch_runner(model: torch.nn.Module) -> LogitsFn:
    model = model.eval()

    @torch.inference_mode()
    def run(batch: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(np.ascontiguousarray(batch))).float().numpy()

    return run


def _fixed_batch(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def onnx_runner(path: str | os.PathLike, threads: int | None = None) -> tuple[LogitsFn, int | None]:
    """A CPU onnxruntime session as a function of a batch, and the file's fixed batch size (None if dynamic)."""
    ort = require("onnxruntime", "onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    fixed = _fixed_batch(session.get_inputs()[0].shape[0])

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    return run, fixed


def openvino_runner(path: str | os.PathLike, threads: int | None = None) -> tuple[LogitsFn, int | None]:
    ov = require("openvino", "openvino")
    core = ov.Core()
    model = core.read_model(str(path))
    # CPUs with bf16/AMX would otherwise run in bf16 by default and lose FP32 parity.
    config = {"INFERENCE_PRECISION_HINT": "f32"} | ({"INFERENCE_NUM_THREADS": threads} if threads else {})
    compiled = core.compile_model(model, "CPU", config)
    dim = compiled.inputs[0].get_partial_shape()[0]
    fixed = dim.get_length() if dim.is_static else None

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(compiled(np.ascontiguousarray(batch, dtype=np.float32))[0])

    return run, fixed


def torchscript_runner(path: str | os.PathLike) -> tuple[LogitsFn, int | None]:
    with _quiet_export():
        return torch_runner(torch.jit.load(str(path), map_location="cpu")), None


# ------------------------------------------------------------------------------------------------ parity

@dataclass
class Parity:
    """How closely an exported file reproduces PyTorch's logits."""

    images: int
    max_abs_diff: float
    top1_agreement: float   # fraction of images with the same top-1 class
    source: str = ""

    def passed(self, max_diff: float = MAX_LOGIT_DIFF) -> bool:
        return self.top1_agreement == 1.0 and self.max_abs_diff <= max_diff

    def line(self) -> str:
        return (f"parity on {self.source}: max |logit diff| {self.max_abs_diff:.2e}, "
                f"top-1 agreement {self.top1_agreement * 100:.1f}% ({round(self.top1_agreement * self.images)}/"
                f"{self.images})")


def compare_logits(reference: np.ndarray, candidate: np.ndarray, source: str = "") -> Parity:
    """Largest absolute logit difference and top-1 agreement between two (N, classes) arrays."""
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ImgclsError(f"exported model returns shape {candidate.shape}, PyTorch {reference.shape}")
    if len(reference) == 0:
        return Parity(0, 0.0, 1.0, source)
    diff = float(np.max(np.abs(reference - candidate)))
    agree = float(np.mean(reference.argmax(1) == candidate.argmax(1)))
    return Parity(len(reference), diff, agree, source)


def check_parity(reference_fn: LogitsFn, candidate_fn: LogitsFn, batch: np.ndarray, fixed_batch: int | None,
                 source: str) -> Parity:
    reference = in_chunks(reference_fn, batch, 32)
    candidate = in_chunks(candidate_fn, batch, fixed_batch or 32)
    return compare_logits(reference, candidate, source)


# --------------------------------------------------------------------------------------------- exporters

def _sample_input(checkpoint: dict, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, *checkpoint["preprocess"]["input_size"], generator=torch.Generator().manual_seed(0))


@contextlib.contextmanager
def _quiet_export():
    # The legacy ONNX exporter and torch.jit warn that they are deprecated in favour of torch.export; the
    # classifiers exported here have no data-dependent control flow, which is what those warnings are about.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def write_onnx(model: torch.nn.Module, checkpoint: dict, path: Path, dynamic_batch: bool) -> None:
    """Export to ONNX with the imgcls metadata, written atomically."""
    onnx = require("onnx", "onnx")
    buffer = _export_onnx_bytes(model, checkpoint, dynamic_batch)
    proto = onnx.load_from_string(buffer)
    set_onnx_metadata(proto, export_metadata(checkpoint))
    atomic_write_bytes(path, proto.SerializeToString())


def _export_onnx_bytes(model: torch.nn.Module, checkpoint: dict, dynamic_batch: bool) -> bytes:
    import io

    buffer = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with _quiet_export(), torch.inference_mode(False), torch.no_grad():
        # The TorchScript-based exporter needs no onnxscript and handles every timm classifier.
        torch.onnx.export(model, (_sample_input(checkpoint),), buffer, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return buffer.getvalue()


def set_onnx_metadata(proto, metadata: dict) -> None:
    for prop in list(proto.metadata_props):
        if prop.key == METADATA_KEY:
            proto.metadata_props.remove(prop)
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
    proto.producer_name = "imgcls"


def write_torchscript(model: torch.nn.Module, checkpoint: dict, path: Path) -> None:
    with _quiet_export(), torch.no_grad():
        traced = torch.jit.trace(model, _sample_input(checkpoint))
        torch.jit.save(traced, str(path), _extra_files={"imgcls.json": json.dumps(export_metadata(checkpoint))})


def write_openvino(model: torch.nn.Module, checkpoint: dict, path: Path, dynamic_batch: bool) -> None:
    """OpenVINO IR (path.xml + path.bin), converted from the ONNX graph, FP32 weights kept.

    Writes in place: ``export`` stages it in a temporary folder and moves it when parity passes.
    """
    ov = require("openvino", "openvino")
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        onnx_path.write_bytes(_export_onnx_bytes(model, checkpoint, dynamic_batch))
        ov_model = ov.convert_model(str(onnx_path))
        ov_model.set_rt_info(json.dumps(export_metadata(checkpoint)), [METADATA_KEY])
        ov.save_model(ov_model, str(path), compress_to_fp16=False)


def write_tflite(model: torch.nn.Module, checkpoint: dict, path: Path) -> LogitsFn:
    """TFLite through litert-torch; the metadata goes to a side file PATH.json (TFLite has no simple slot)."""
    litert_torch = require("litert_torch", "litert-torch")
    edge_model = litert_torch.convert(model.eval(), (_sample_input(checkpoint),))
    edge_model.export(str(path))
    Path(str(path) + ".json").write_text(json.dumps(export_metadata(checkpoint), indent=2), encoding="utf-8")
    return lambda batch: np.asarray(edge_model(torch.from_numpy(batch)))


# ----------------------------------------------------------------------------------------------- export

@dataclass
class ExportResult:
    path: Path
    format: str
    parity: Parity
    int8_path: Path | None = None
    int8_report: dict | None = None


def default_output(checkpoint_path: Path, fmt: str) -> Path:
    """RUN/weights/best.pt -> RUN/weights/best.onnx (next to the checkpoint, never over it)."""
    return checkpoint_path.with_suffix(SUFFIXES[fmt])


def export(weights: str | os.PathLike, format: str = "onnx", *, int8: bool = False, dynamic_batch: bool = False,
           out: str | os.PathLike | None = None, calibration_images: int = CALIBRATION_IMAGES,
           bench_seconds: float = 2.0) -> ExportResult:
    """Export a checkpoint, check parity with PyTorch on validation images, and (``int8``) quantize it.

    Raises ImgclsError when the FP32 file disagrees with PyTorch; the file is then not kept.
    """
    from .models import model_from_checkpoint
    from .trainer import setup_logging

    setup_logging()
    if format not in FORMATS:
        raise ImgclsError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    if int8 and format != "onnx":
        raise ImgclsError(f"--int8 is offered for --format onnx (onnxruntime static quantization), not {format}")
    if str(weights).endswith((".onnx", ".torchscript", ".xml", ".tflite")):
        raise ImgclsError(f"--weights {weights}: export starts from an imgcls checkpoint (.pt), not an exported file")
    # Name a missing package before any work is done.
    for module, package in {"onnx": [("onnx", "onnx"), ("onnxruntime", "onnxruntime")],
                            "openvino": [("openvino", "openvino")],
                            "tflite": [("litert_torch", "litert-torch")]}.get(format, []):
        require(module, package)
    checkpoint = load_checkpoint(weights)
    checkpoint_path = Path(checkpoint["path"])
    path = Path(out) if out else default_output(checkpoint_path, format)
    if path.suffix != SUFFIXES[format]:
        raise ImgclsError(f"--out {path}: a {format} file should end in {SUFFIXES[format]}")
    if path.resolve() == checkpoint_path.resolve():
        raise ImgclsError(f"--out {path}: is the checkpoint itself; choose another file name")
    model = model_from_checkpoint(checkpoint)
    batch, _, source = reference_inputs(checkpoint, "val")

    with tempfile.TemporaryDirectory(prefix=".imgcls-export-", dir=_writable_parent(path)) as tmp:
        staged = Path(tmp) / path.name
        fixed = None if dynamic_batch else 1
        if format == "onnx":
            write_onnx(model, checkpoint, staged, dynamic_batch)
            candidate, fixed = onnx_runner(staged)
        elif format == "torchscript":
            write_torchscript(model, checkpoint, staged)
            candidate, _ = torchscript_runner(staged)
        elif format == "openvino":
            write_openvino(model, checkpoint, staged, dynamic_batch)
            candidate, fixed = openvino_runner(staged)
        else:
            candidate = write_tflite(model, checkpoint, staged)
        parity = check_parity(torch_runner(model), candidate, batch, fixed, source)
        log.info(parity.line())
        if not parity.passed():
            raise ImgclsError(
                f"--format {format}: the exported model disagrees with PyTorch (max |logit diff| "
                f"{parity.max_abs_diff:.2e}, allowed {MAX_LOGIT_DIFF:g}; top-1 agreement "
                f"{parity.top1_agreement * 100:.1f}%, required 100%); nothing was written"
            )
        # Sorted, so best.bin lands before best.xml: a reader never finds an .xml without its weights.
        for produced in sorted(Path(tmp).iterdir()):
            os.replace(produced, path.with_name(path.stem + produced.name[len(staged.stem):]))
    size = sum(p.stat().st_size for p in _files_of(path, format))
    log.info(f"Exported {format} ({size / 1e6:.2f} MB) to {path}")
    result = ExportResult(path=path, format=format, parity=parity)
    if int8:
        from .quantize import quantize_and_compare

        result.int8_path, result.int8_report = quantize_and_compare(
            model, checkpoint, path, dynamic_batch=dynamic_batch, calibration_images=calibration_images,
            bench_seconds=bench_seconds)
    return result


def _writable_parent(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path.parent)


def _files_of(path: Path, fmt: str) -> list[Path]:
    return [path, path.with_suffix(".bin")] if fmt == "openvino" else [path]
