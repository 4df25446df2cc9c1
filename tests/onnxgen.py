"""Test helper: an .onnx file in the imgcls export format, made here so predict/serve can be tested
without depending on imgcls export."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch


def export_onnx(checkpoint_path: Path, out: Path, *, metadata: bool = True) -> Path:
    """Export a checkpoint with input "images", output "logits", a dynamic batch and the "imgcls" metadata."""
    import onnx

    from imgcls.models.factory import model_from_checkpoint
    from imgcls.record.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(checkpoint_path)
    model = model_from_checkpoint(checkpoint)
    dummy = torch.zeros(1, *checkpoint["preprocess"]["input_size"])
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but needs no onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, dummy, str(out), input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    if metadata:
        proto = onnx.load(str(out))
        entry = proto.metadata_props.add()
        entry.key = "imgcls"
        entry.value = json.dumps({
            "format": "imgcls-onnx", "version": 1, "model_name": checkpoint["model_name"],
            "class_names": checkpoint["class_names"], "preprocess": checkpoint["preprocess"],
            "temperature": float(checkpoint.get("temperature", 1.0)),
        })
        onnx.save(proto, str(out))
    return out
