"""The one table of deployment formats. Each format knows how to write a checkpoint's network with its model
card inside (record/card.ModelCard: class names, preprocessing, model name, temperature, rejection), and how to
load a written file back as a Runner plus that card; ONNX, TFLite and web also write INT8 files. export,
benchmark, predict and serve all use it. TFLite's and Core ML's converters live in tflite.py and coreml.py, the web
page in web.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..errors import ImgclsError
from ..record.card import PROBABILITIES, ModelCard
from ..record.files import atomic_write_bytes
from ..runtime.runner import Runner, onnx_runner, runtime_threads

if TYPE_CHECKING:
    import torch

log = logging.getLogger("imgcls")

METADATA_FORMAT = "imgcls-onnx"   # the tag every export carries, whatever its format (files out there carry it)
METADATA_KEY = "imgcls"
INPUT_NAME, OUTPUT_NAME = "images", "logits"


def export_metadata(card: ModelCard, model: torch.nn.Module | None = None) -> dict:
    """What an exported file carries to classify on its own: the model card, its outputs those of ``model``, the
    network written (logits, the familiarity score when it is models/familiarity.Scored, and each label's sigmoid
    probability when it is a multi-label models/familiarity.WithProbabilities)."""
    from ..models.familiarity import outputs_of

    return {"format": METADATA_FORMAT, "version": 1, **card.replace(outputs=outputs_of(model)).to_dict()}


def check_metadata(text: str | None, path: Path) -> ModelCard:
    """The model card in the metadata found in an exported file, with one clear error for each way it can fail."""
    if not text:
        raise ImgclsError(f"--weights {path}: this file carries no imgcls metadata (class names, preprocessing); "
                          "export it with `imgcls export`")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        raise ImgclsError(f"--weights {path}: its imgcls metadata is not valid JSON; export it again") from None
    if not isinstance(meta, dict) or meta.get("format") != METADATA_FORMAT:
        raise ImgclsError(f"--weights {path}: its imgcls metadata is not in the {METADATA_FORMAT} format; export it "
                          "again with `imgcls export`")
    return ModelCard.read(meta, f"--weights {path}")


def require(module: str, package: str):
    """Import an optional dependency, or fail with one line naming the pip package to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImgclsError(f"missing package {package}: install it with `pip install {package}`") from None


@contextlib.contextmanager
def quiet():
    # torch.jit and the TorchScript-based ONNX exporter warn that they are deprecated in favour of torch.export;
    # these classifiers have no data-dependent control flow, which is what the warnings are about.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def sample_input(card: ModelCard, batch: int = 1) -> torch.Tensor:
    import torch

    return torch.randn(batch, *card.input_size, generator=torch.Generator().manual_seed(0))


def onnx_bytes(model: torch.nn.Module, card: ModelCard, dynamic_batch: bool) -> bytes:
    """The network as ONNX with its model card inside."""
    from ..models.familiarity import outputs_of
    from ..runtime.pytorch import export_onnx_bytes

    onnx = require("onnx", "onnx")
    proto = onnx.load_from_string(export_onnx_bytes(model, card.input_size, dynamic_batch=dynamic_batch,
                                                    output_name=outputs_of(model)))
    set_onnx_metadata(proto, export_metadata(card, model))
    return proto.SerializeToString()


def set_onnx_metadata(proto, metadata: dict) -> None:
    for prop in list(proto.metadata_props):
        if prop.key == METADATA_KEY:
            proto.metadata_props.remove(prop)
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
    proto.producer_name = "imgcls"


# ------------------------------------------------------------------------------------------- the formats

def _write_onnx(model, card: ModelCard, path: Path, dynamic_batch: bool) -> None:
    atomic_write_bytes(path, onnx_bytes(model, card, dynamic_batch))


def _load_onnx(path: Path, threads: int | None) -> tuple[Runner, ModelCard]:
    require("onnxruntime", "onnxruntime")
    try:
        runner = onnx_runner(path, threads=threads or runtime_threads())
    except Exception as e:  # noqa: BLE001 - protobuf parse errors, unsupported opsets...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ImgclsError(f"--weights {path}: cannot be loaded as an ONNX model ({first[:160]})") from None
    return runner, check_metadata(runner.metadata.get(METADATA_KEY), path)


def _write_torchscript(model, card: ModelCard, path: Path, dynamic_batch: bool) -> None:
    import torch

    with quiet(), torch.no_grad():
        traced = torch.jit.trace(model, sample_input(card))
        torch.jit.save(traced, str(path), _extra_files={"imgcls.json": json.dumps(export_metadata(card, model))})


def _load_torchscript(path: Path, threads: int | None) -> tuple[Runner, ModelCard]:
    import torch

    from ..runtime.pytorch import torch_runner

    extra = {"imgcls.json": ""}
    with quiet():
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return torch_runner(module, name="torchscript"), check_metadata(extra["imgcls.json"], path)


def _write_openvino(model, card: ModelCard, path: Path, dynamic_batch: bool) -> None:
    """OpenVINO IR (path.xml + path.bin) converted from the ONNX graph, FP32 weights kept."""
    from ..models.familiarity import outputs_of
    from ..runtime.pytorch import export_onnx_bytes

    ov = require("openvino", "openvino")
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        onnx_path.write_bytes(export_onnx_bytes(model, card.input_size, dynamic_batch=dynamic_batch,
                                                output_name=outputs_of(model)))
        ov_model = ov.convert_model(str(onnx_path))
        ov_model.set_rt_info(json.dumps(export_metadata(card, model)), [METADATA_KEY])
        ov.save_model(ov_model, str(path), compress_to_fp16=False)


def _load_openvino(path: Path, threads: int | None) -> tuple[Runner, ModelCard]:
    ov = require("openvino", "openvino")
    core = ov.Core()
    model = core.read_model(str(path))
    card = check_metadata(model.get_rt_info([METADATA_KEY]).astype(str) if model.has_rt_info([METADATA_KEY])
                          else None, path)
    # CPUs with bf16/AMX would otherwise run in bf16 by default and lose FP32 parity.
    config = {"INFERENCE_PRECISION_HINT": "f32"} | ({"INFERENCE_NUM_THREADS": threads} if threads else {})
    compiled = core.compile_model(model, "CPU", config)
    dim = compiled.inputs[0].get_partial_shape()[0]

    def run(batch):
        results = compiled(np.ascontiguousarray(batch, dtype=np.float32))  # numpy, or a CPU torch tensor
        return tuple(np.asarray(results[output]) for output in compiled.outputs)

    return Runner("openvino", run, fixed_batch=dim.get_length() if dim.is_static else None), card


def _write_tflite(model, card: ModelCard, path: Path, dynamic_batch: bool) -> None:
    """TFLite through ONNX and onnx2tf (deploy/tflite.py); the metadata goes inside the flatbuffer."""
    from . import tflite

    tflite.convert(model, card, export_metadata(card, model), fp32_path=path)


def _write_tflite_int8(model, card: ModelCard, fp32_path: Path, int8_path: Path, calibration: np.ndarray) -> None:
    """Full-integer TFLite (int8 weights, activations, input and output), calibrated on ``calibration``."""
    from . import tflite

    tflite.convert(model, card, export_metadata(card, model), int8_path=int8_path, calibration=calibration)


def _load_tflite(path: Path, threads: int | None) -> tuple[Runner, ModelCard]:
    from . import tflite

    require("ai_edge_litert", "ai-edge-litert")  # LiteRT alone runs the file: no TensorFlow needed
    card = check_metadata(tflite.file_metadata(path), path)
    try:
        runner = tflite.litert_runner(path, threads, card.outputs)
    except (RuntimeError, ValueError) as e:
        raise ImgclsError(f"--weights {path}: LiteRT cannot load it ({str(e).strip()[:160]})") from None
    return runner, card


def quantize_onnx(fp32_path: Path, int8_path: Path, calibration: np.ndarray) -> None:
    """Static QDQ quantization: int8 weights (per channel), uint8 activations, ranges from ``calibration``.

    uint8 activations with int8 weights is the combination onnxruntime's x86 and ARM kernels are fastest on.
    """
    require("onnxruntime", "onnxruntime")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Images(CalibrationDataReader):
        def __init__(self):
            self.rows = iter(range(len(calibration)))

        def get_next(self):
            i = next(self.rows, None)
            return None if i is None else {INPUT_NAME: calibration[i:i + 1]}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            # Shape inference and graph folding first, as onnxruntime recommends; optional for odd graphs.
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        except Exception as e:  # noqa: BLE001 - any failure here only costs some speed
            log.warning(f"WARNING: quantization pre-processing skipped ({type(e).__name__}: {str(e)[:120]})")
            prepared = fp32_path
        staged = Path(tmp) / "int8.onnx"
        quantize_static(str(prepared), str(staged), Images(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=_float_nodes(prepared))
        atomic_write_bytes(int8_path, staged.read_bytes())


def _float_nodes(path: Path) -> list[str]:
    """The nodes INT8 leaves in float: those of the familiarity score (models/familiarity.Familiarity), whose
    distances are small differences of large terms, which 8 bits would swamp; and a multi-label network's final
    sigmoid, so that its probabilities output stays the sigmoid of the logits output rather than steps of 1/256."""
    onnx = require("onnx", "onnx")
    return [node.name for node in onnx.load(str(path)).graph.node
            if node.name.startswith("/familiarity/") or PROBABILITIES in node.output]


def _write_onnx_int8(model, card: ModelCard, fp32_path: Path, int8_path: Path, calibration: np.ndarray) -> None:
    quantize_onnx(fp32_path, int8_path, calibration)


def _write_coreml(model, card: ModelCard, path: Path, dynamic_batch: bool) -> None:
    from . import coreml

    coreml.write(model, card, export_metadata(card, model), path)


def _load_coreml(path: Path, threads: int | None) -> tuple[Runner, ModelCard]:
    from . import coreml

    card = check_metadata(coreml.read_spec(path)["metadata"], path)
    if card.multi_label:  # logits and their sigmoid, as every multi-label export
        return coreml.coreml_runner(path, card), card
    # the classifier applies the temperature itself and returns probabilities; the runner gives their logarithm
    return coreml.coreml_runner(path, card), card.replace(temperature=1.0)


def _verify_coreml(model, card: ModelCard, path: Path, batch: np.ndarray, source: str):
    """The spec everywhere; the numbers on macOS only (None elsewhere: not checked, and said so)."""
    from . import coreml

    coreml.check_spec(path, card, export_metadata(card, model))
    return coreml.check_numbers(model, card, path, batch, source)


def _write_web(model, card: ModelCard, path: Path, dynamic_batch: bool) -> None:
    """A folder with a page that runs the ONNX network in the browser (web.py); batch 1, as the page feeds it."""
    from . import web

    web.write(path, onnx_bytes(model, card, dynamic_batch=False), export_metadata(card, model))


def _write_web_int8(model, card: ModelCard, fp32_path: Path, int8_path: Path, calibration: np.ndarray) -> None:
    """The FP32 web folder again, with its network quantized as ``--format onnx --int8`` quantizes."""
    from . import web

    onnx = require("onnx", "onnx")
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "int8.onnx"
        quantize_onnx(web.model_file(fp32_path), staged, calibration)
        proto = onnx.load(str(staged))
        set_onnx_metadata(proto, export_metadata(card, model))  # the quantizer drops the metadata
        web.copy_as(fp32_path, int8_path, proto.SerializeToString(), export_metadata(card, model), "INT8")


def _load_web(path: Path, threads: int | None) -> tuple[Runner, ModelCard]:
    """The web folder's network on ONNX Runtime (the same file the page runs on onnxruntime-web)."""
    from . import web

    return _load_onnx(web.model_file(path), threads)


def _web_ready() -> None:
    from . import web

    web.ort_web_files()


def _is_coreml_package(path: Path) -> bool:
    return path.suffix == ".mlpackage" and (path / "Manifest.json").is_file()


def _is_web_export(path: Path) -> bool:
    from . import web

    return web.is_web_export(path)


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str                               # how the written file's (or folder's) name ends: .onnx, _web
    packages: tuple[tuple[str, str], ...]     # (module, pip package) that writing needs
    write: Callable                           # (model, card, path, dynamic_batch) -> None
    load: Callable                            # (path, threads) -> (Runner, ModelCard)
    side_suffixes: tuple[str, ...] = ()       # files written next to the main one (OpenVINO's .bin)
    write_int8: Callable | None = None        # (model, card, fp32_path, int8_path, calibration) -> None
    verify: Callable | None = None            # (model, card, path, batch, source) -> Parity | None,
                                              # for files that cannot be loaded here (default: load + parity)
    batch_one: bool = False                   # always exported for batch 1 (--dynamic-batch is refused)
    familiarity: bool = True                  # carries the familiarity output (else logits only: --reject then
                                              # falls back to the energy score)
    notes: str = ""                           # added to the missing-package error (e.g. the extra to install)
    ready: Callable | None = None             # () -> None: checks what writing needs besides Python packages
                                              # (web: onnxruntime-web's files), raising one ImgclsError
    earlier_export: Callable | None = None    # (folder) -> bool, for formats written as folders: whether a folder
                                              # is an earlier export, which --force may replace
    next_step: str = ""                       # said after writing; {path} is the written file or folder

    def files(self, path: Path) -> list[Path]:
        return [path, *[path.with_suffix(s) for s in self.side_suffixes]]

    def owns(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` is named as this format's files are (any case)."""
        return Path(path).name.lower().endswith(self.suffix) and len(Path(path).name) > len(self.suffix)

    def next_to(self, path: Path) -> Path:
        """best.pt -> best.onnx, best_web (beside ``path``)."""
        return path.with_name(path.stem + self.suffix)

    def require(self) -> None:
        """Name the first missing package before any work is done (found, not imported: TFLite's TensorFlow
        must never be imported into this process)."""
        for module, package in self.packages:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                raise ImgclsError(f"missing package {package}: install it with `pip install {package}`"
                                  + (f" ({self.notes})" if self.notes else ""))
        if self.ready is not None:
            self.ready()

    def int8_path(self, fp32_path: Path) -> Path:
        """best.onnx -> best_int8.onnx, best_web -> best_int8_web"""
        name = fp32_path.name
        base = name[:len(name) - len(self.suffix)] if self.owns(fp32_path) else fp32_path.stem
        return fp32_path.with_name(f"{base}_int8{self.suffix}")


TFLITE_PACKAGES = (("tensorflow", "tensorflow"), ("tf_keras", "tf-keras"), ("onnx2tf", "onnx2tf"),
                   ("onnx_graphsurgeon", "onnx-graphsurgeon"), ("sng4onnx", "sng4onnx"), ("psutil", "psutil"),
                   ("ai_edge_litert", "ai-edge-litert"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime"))

FORMATS = {f.name: f for f in (
    Format("onnx", ".onnx", (("onnx", "onnx"), ("onnxruntime", "onnxruntime")), _write_onnx, _load_onnx,
           write_int8=_write_onnx_int8),
    Format("torchscript", ".torchscript", (), _write_torchscript, _load_torchscript),
    Format("openvino", ".xml", (("openvino", "openvino"),), _write_openvino, _load_openvino, (".bin",)),
    Format("tflite", ".tflite", TFLITE_PACKAGES, _write_tflite, _load_tflite, write_int8=_write_tflite_int8,
           batch_one=True, familiarity=False, notes="or `pip install 'imgcls[tflite]'`"),
    Format("coreml", ".mlpackage", (("coremltools", "coremltools"),), _write_coreml, _load_coreml,
           verify=_verify_coreml, batch_one=True, familiarity=False, earlier_export=_is_coreml_package),
    Format("web", "_web", (("onnx", "onnx"), ("onnxruntime", "onnxruntime")), _write_web, _load_web,
           write_int8=_write_web_int8, batch_one=True, familiarity=False, ready=_web_ready,
           earlier_export=_is_web_export,
           next_step="Open it in a browser: python -m http.server 8000 --directory {path}, then http://localhost:8000 "
                     "(or copy the folder to any static host)"),
)}


def file_size(path: Path) -> int:
    """Bytes of a file, or of everything in a folder (a Core ML .mlpackage)."""
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def format_of(path: str | os.PathLike) -> Format | None:
    """The format of an exported file, by its suffix; None for anything else (e.g. a .pt checkpoint)."""
    return next((f for f in FORMATS.values() if f.owns(path)), None)


def load_exported(path: str | os.PathLike, threads: int | None = None) -> tuple[Runner, ModelCard]:
    """A Runner and the model card of an exported file."""
    path = Path(path)
    fmt = format_of(path)
    if fmt is None:
        raise ImgclsError(f"--weights {path}: not an exported model ({', '.join(f.suffix for f in FORMATS.values())})")
    if not path.exists():  # a Core ML .mlpackage and a web export are folders
        raise ImgclsError(f"--weights {path}: file not found")
    return readable(*fmt.load(path, threads))


def readable(runner: Runner, card: ModelCard) -> tuple[Runner, ModelCard]:
    """The runner and card imgcls reads a file with: a multi-label file's last output, the sigmoid it carries for
    users of the bare file, is left out, so that predict, serve and val apply metrics.sigmoid to the logits once,
    as they do for a checkpoint; the card's outputs then name what the runner gives."""
    if PROBABILITIES not in card.outputs:
        return runner, card
    keep = [i for i, name in enumerate(card.outputs) if name != PROBABILITIES]
    run = runner.run

    def logits_first(inputs):
        out = run(inputs)
        out = out if isinstance(out, tuple) else (out,)
        return tuple(out[i] for i in keep)

    return dataclasses.replace(runner, run=logits_first), card.replace(outputs=tuple(card.outputs[i] for i in keep))
