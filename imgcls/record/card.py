"""The model card: what a trained classifier says about itself, wherever it is stored.

A checkpoint, the card that lets predict run a cached export without PyTorch, and every exported file (ONNX,
OpenVINO, TorchScript, TFLite, Core ML) describe their model with the same ``ModelCard``. ``to_dict`` is the one
writer of that description and ``ModelCard.read`` the one reader, so a field added here travels everywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import ImgclsError

LOGITS_ONLY = ("logits",)
WITH_FAMILIARITY = ("logits", "familiarity")   # models/familiarity.Scored: the score --reject uses, second
PROBABILITIES = "probabilities"   # last output of a multi-label export: each label's sigmoid (models/familiarity)


@dataclass(frozen=True)
class ModelCard:
    """A trained classifier's description: enough to build its network again (with the weights), to feed it
    images, and to turn its outputs into answers."""

    model_name: str                               # timm name or simple_cnn
    class_names: tuple[str, ...]                  # output index -> class
    preprocess: dict                              # input_size, mean, std, interpolation, crop_pct, resize
    model_kwargs: dict = field(default_factory=dict)   # build_model's keyword arguments (simple_cnn's se)
    temperature: float = 1.0                      # softmax temperature fitted by `imgcls val --calibrate`
    rejection: dict | None = None                 # metrics.rejection_spec: --reject's score and threshold
    mirrored_at: int | None = None                # predicts from the activations at this cut and their mirror
    weights_source: str | None = None             # where training started from (pretrained weights, a file...)
    outputs: tuple[str, ...] = LOGITS_ONLY        # the network's outputs, logits first
    metrics: dict = field(default_factory=dict)   # the validation numbers of the epoch these weights are from
    thresholds: tuple[float, ...] | None = None   # multi-label: each label's probability threshold (None: one label)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.preprocess["input_size"])

    @property
    def multi_label(self) -> bool:
        """Whether each output is a label of its own (a sigmoid and a threshold each) rather than one class of a
        softmax: such a model answers with every label whose probability reaches its threshold."""
        return self.thresholds is not None

    @property
    def scored(self) -> bool:
        """Whether the network gives the familiarity score as a second output."""
        return "familiarity" in self.outputs

    def replace(self, **changes) -> ModelCard:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The card as plain JSON types (also what torch.load(weights_only=True) reads back)."""
        return {"model_name": self.model_name, "class_names": list(self.class_names),
                "preprocess": dict(self.preprocess), "model_kwargs": dict(self.model_kwargs),
                "temperature": float(self.temperature),
                "rejection": dict(self.rejection) if self.rejection else None, "mirrored_at": self.mirrored_at,
                "weights_source": self.weights_source, "outputs": list(self.outputs), "metrics": dict(self.metrics),
                "thresholds": [float(t) for t in self.thresholds] if self.thresholds is not None else None}

    @classmethod
    def read(cls, data: dict, source: str) -> ModelCard:
        """The card in ``data`` (a checkpoint, a cached card or an export's metadata); one ImgclsError naming
        ``source`` when a required field is missing or of the wrong kind.

        A description without outputs has the logits alone (a checkpoint's come from record/checkpoint.card_of)."""
        missing = [k for k in ("model_name", "class_names", "preprocess") if k not in data]
        if missing:
            raise ImgclsError(f"{source}: its model description lacks {', '.join(missing)}; use a file written by "
                              "`imgcls train` or `imgcls export`")
        outputs = data.get("outputs") or LOGITS_ONLY
        try:
            card = cls(str(data["model_name"]), tuple(str(c) for c in data["class_names"]), dict(data["preprocess"]),
                       dict(data.get("model_kwargs") or {}), float(data.get("temperature", 1.0)),
                       dict(data["rejection"]) if data.get("rejection") else None, data.get("mirrored_at"),
                       data.get("weights_source"), tuple(str(o) for o in outputs), dict(data.get("metrics") or {}),
                       tuple(float(t) for t in data["thresholds"]) if data.get("thresholds") is not None else None)
            size = card.input_size
        except (TypeError, ValueError, KeyError) as e:
            raise ImgclsError(f"{source}: its model description is damaged ({type(e).__name__}: {e}); export or "
                              "train it again") from None
        if len(size) != 3 or not card.class_names or card.outputs[0] != "logits" or (
                card.multi_label and len(card.thresholds) != len(card.class_names)):
            raise ImgclsError(f"{source}: its model description is damaged (input size {list(size)}, "
                              f"{len(card.class_names)} classes, outputs {list(card.outputs)}, thresholds "
                              f"{None if card.thresholds is None else len(card.thresholds)}); export or train it again")
        return card
