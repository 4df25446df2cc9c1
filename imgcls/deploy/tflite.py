"""TFLite: written through ONNX and onnx2tf (TensorFlow, in a child process), run with LiteRT.

The route: the network as ONNX (batch 1), constant-folded by onnxruntime (timm's "same" padding and
other shape arithmetic become constants, which onnx2tf needs), converted by ``tflite_child.py`` in its
own process, then the imgcls metadata is put into the flatbuffer's own ``metadata`` list (entry
``imgcls``) and the file is run with the LiteRT interpreter (``ai-edge-litert``, no TensorFlow).

The input is NHWC (1 x H x W x 3, float32; int8 for INT8 files), the native TFLite layout: the runner
here transposes imgcls's NCHW batches, and apps feed camera frames as they come.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch

from ..errors import ImgclsError
from ..record.card import LOGITS_ONLY, ModelCard
from ..record.files import atomic_write_bytes
from ..runtime.pytorch import export_onnx_bytes
from ..runtime.runner import Runner

METADATA_KEY = "imgcls"
INPUT_LAYOUT = "NHWC"
# onnx2tf fetches this sample file unless it is in the working folder (its name fixes the shape it wants).
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def tflite_metadata(metadata: dict, int8: bool = False) -> dict:
    return metadata | {"input_layout": INPUT_LAYOUT, "input_dtype": "int8" if int8 else "float32"}


# ------------------------------------------------------------------------------------------------- writing

def convert(model: torch.nn.Module, card: ModelCard, metadata: dict, fp32_path: Path | None = None,
            int8_path: Path | None = None, calibration: np.ndarray | None = None) -> None:
    """Write ``fp32_path`` and/or ``int8_path`` (full-integer, calibrated on ``calibration``: N x C x H x W
    images, preprocessed as for the model)."""
    with tempfile.TemporaryDirectory(prefix="imgcls-tflite-") as tmp:
        tmp = Path(tmp)
        raw, folded = tmp / "model.onnx", tmp / "folded.onnx"
        outputs = list(metadata["outputs"])
        raw.write_bytes(export_onnx_bytes(model, card.input_size, dynamic_batch=False, output_name=tuple(outputs)))
        _fold_constants(raw, folded)
        np.save(tmp / ONNX2TF_SAMPLE, np.zeros((20, 128, 128, 3), np.float32))
        args = {"onnx": str(folded), "workdir": str(tmp), "outputs": outputs}
        if fp32_path is not None:
            args["fp32"] = str(tmp / "fp32.tflite")
        if int8_path is not None:
            np.save(tmp / "calibration.npy", np.ascontiguousarray(calibration.transpose(0, 2, 3, 1), np.float32))
            args.update(int8=str(tmp / "int8.tflite"), calibration=str(tmp / "calibration.npy"))
        _run_child(args, tmp / "onnx2tf.log")
        for key, path, int8 in (("fp32", fp32_path, False), ("int8", int8_path, True)):
            if path is not None:
                data = Path(args[key]).read_bytes()
                atomic_write_bytes(path, embed_metadata(data, tflite_metadata(metadata, int8)))


def _fold_constants(source: Path, target: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def _run_child(args: dict, log_path: Path) -> None:
    script = Path(__file__).with_name("tflite_child.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    with open(log_path, "wb") as out:
        code = subprocess.run([sys.executable, str(script), json.dumps(args)], stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, env=env).returncode
    if code != 0:
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        reason = lines[-1].strip()[:200] if lines else f"exit status {code}"
        raise ImgclsError(f"--format tflite: onnx2tf/TensorFlow could not convert this model ({reason})")


# ------------------------------------------------------------------------------------------------ metadata

def embed_metadata(data: bytes, metadata: dict) -> bytes:
    """The .tflite bytes with ``metadata`` as JSON in the flatbuffer's Model.metadata entry "imgcls"."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_KEY, METADATA_KEY.encode())]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_metadata(data: bytes) -> str | None:
    """The "imgcls" metadata entry of a .tflite file as text, or None (LiteRT's interpreter has no getter)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() and entry.Name().decode("utf-8", "replace") == METADATA_KEY:
            buffer = model.Buffers(entry.Buffer())
            if buffer.Offset():  # data stored after the flatbuffer (files over 2 GB)
                return data[buffer.Offset():buffer.Offset() + buffer.Size()].decode("utf-8")
            return buffer.DataAsNumpy().tobytes().decode("utf-8")
    return None


# ------------------------------------------------------------------------------------------------- running

def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float input -> the integer input of a full-integer model, with the interpreter's scale and zero point."""
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(detail["dtype"])


def dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)


def litert_runner(path: Path, threads: int | None = None, outputs: tuple[str, ...] = LOGITS_ONLY) -> Runner:
    """A Runner over a .tflite file: NCHW float batches in (as everywhere in imgcls), the outputs named ``outputs``
    out, in that order (the ONNX order: logits first), a tuple when there are several. A full-integer file's outputs
    are dequantized each with its own scale and zero point."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads or torch.get_num_threads())
    interpreter.allocate_tensors()
    inp, outs = interpreter.get_input_details()[0], output_details(interpreter, outputs, path)
    shape = [int(d) for d in inp["shape"]]
    nhwc = shape[-1] in (1, 3) and shape[1] not in (1, 3)
    fixed = None if int(inp["shape_signature"][0]) == -1 else shape[0]
    integer = np.issubdtype(inp["dtype"], np.integer)
    lock = threading.Lock()  # one interpreter, and serve may call from several threads
    current = {"shape": shape}

    def run(inputs):
        x = inputs.numpy() if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1) if nhwc else x, dtype=np.float32)
        x = quantize(x, inp) if integer else x
        with lock:
            if list(x.shape) != current["shape"]:
                interpreter.resize_tensor_input(inp["index"], list(x.shape))
                interpreter.allocate_tensors()
                current["shape"] = list(x.shape)
            interpreter.set_tensor(inp["index"], x)
            interpreter.invoke()
            ys = [interpreter.get_tensor(out["index"]) for out in outs]
        ys = tuple(dequantize(y, out) if np.issubdtype(out["dtype"], np.integer) else np.array(y, dtype=np.float32)
                   for y, out in zip(ys, outs))
        return ys if len(ys) > 1 else ys[0]

    return Runner("litert int8" if integer else "litert", run, fixed_batch=fixed)


def output_details(interpreter, names: tuple[str, ...], path: Path) -> list[dict]:
    """The interpreter's details of the outputs named ``names``, in that order, found by name in the file's
    signature (the converter's tensor order is not the network's); a file with a single output needs no name."""
    details = interpreter.get_output_details()
    if len(details) == 1 and len(names) == 1:
        return details
    signatures = interpreter.get_signature_list()
    if len(signatures) == 1:
        named = interpreter.get_signature_runner(next(iter(signatures))).get_output_details()
        if all(name in named for name in names):
            return [named[name] for name in names]
    raise ImgclsError(f"--weights {path}: its outputs are not named {', '.join(names)} in a signature, as imgcls "
                      "writes them; export it again with `imgcls export --format tflite`")


def file_metadata(path: Path) -> str | None:
    """The "imgcls" metadata text of a .tflite file; refuses files that are not TFLite flatbuffers."""
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ImgclsError(f"--weights {path}: not a TFLite file")
    return read_metadata(data)
