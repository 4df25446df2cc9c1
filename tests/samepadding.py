"""A checkpoint of the default model's family: timm's tf_efficientnet_lite0, whose TensorFlow "same" padding is
computed from the input's size at run time (the exporters must fix it), at 64 px with random weights."""

from __future__ import annotations

from pathlib import Path


def same_padding_checkpoint(weights: Path) -> Path:
    """Write the checkpoint to ``weights`` (its folder made); returns ``weights``."""
    from imgcls.models.factory import create_model
    from imgcls.record.checkpoint import CHECKPOINT_FORMAT, save_checkpoint

    model, _, _ = create_model("tf_efficientnet_lite0", 2, pretrained=False)
    preprocess = {"input_size": [3, 64, 64], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear",
                  "crop_pct": 0.875}
    checkpoint = {"format": CHECKPOINT_FORMAT, "version": 1, "model_name": "tf_efficientnet_lite0",
                  "model_kwargs": {"se": False}, "class_names": ["a", "b"], "preprocess": preprocess, "args": {},
                  "state_dict": {k: v.clone() for k, v in model.state_dict().items()}}
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(weights, checkpoint)
    return weights
