"""Core ML: an ML Program (``.mlpackage``, a folder) converted by coremltools, that classifies on its own.

The model takes an RGB image of the checkpoint's input size (``image``; resizing and cropping are the
app's, as Vision's ``VNCoreMLRequest`` does them) and does the rest inside: scaling to [0, 1], the
per-channel mean/std normalisation, the network, softmax with the calibration temperature. It outputs
``classLabel`` (the top class name) and ``classLabel_probs`` (every class's probability), computed in
FP32. The imgcls metadata is in the model's user-defined metadata under "imgcls".

A multi-label model is not a Core ML classifier (whose answer is one class of a softmax): the same image input
and normalisation, then two multi-arrays, ``logits`` and ``probabilities`` (each label's sigmoid, in the order
of the metadata's class names; a label is present when its probability reaches the metadata's threshold for it).

Core ML runs only on macOS. coremltools converts and reads models on any platform, so on Linux and
Windows export checks the written spec (input, outputs, class labels, metadata) and says plainly that
numeric parity was not checked.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ImgclsError
from ..record.card import LOGITS_ONLY, PROBABILITIES, ModelCard
from ..runtime.runner import Runner
from .parity import Parity, check_parity, compare_logits

log = logging.getLogger("imgcls")

INPUT_NAME, LABEL_OUTPUT, PROBS_OUTPUT = "image", "classLabel", "classLabel_probs"
MULTI_LABEL_OUTPUTS = (*LOGITS_ONLY, PROBABILITIES)   # a multi-label model's, as models/familiarity.WithProbabilities
METADATA_KEY = "imgcls"
NOT_CHECKED = ("numeric parity was NOT checked: Core ML models run only on macOS (checked here: the input, "
               "the outputs, the class labels and the metadata)")


def import_coremltools():
    """coremltools, without letting it import TensorFlow: it probes for TF at import, which is slow and,
    with torch's triton loaded afterwards, crashes the process."""
    blocked = "tensorflow" not in sys.modules
    if blocked:
        sys.modules["tensorflow"] = None  # `import tensorflow` raises ImportError inside coremltools
    try:
        with warnings.catch_warnings(), _quiet_logger("coremltools"):
            warnings.simplefilter("ignore")
            import coremltools
    except ImportError:
        raise ImgclsError("missing package coremltools: install it with `pip install coremltools`") from None
    finally:
        if blocked:
            del sys.modules["tensorflow"]
    return coremltools


@contextlib.contextmanager
def _quiet_logger(name: str):
    """coremltools logs that this torch/scikit-learn version is untested; the spec check is what counts."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class Normalised(nn.Module):
    """[0, 1] RGB image -> the network's outputs, normalised inside the graph: Core ML's image input has one scale
    for all channels, so a per-channel std can only be exact here."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return self.model((x - self.mean) / self.std)


class ImageClassifier(Normalised):
    """[0, 1] RGB image -> class probabilities: Core ML's classifier reports its input as the probabilities, so it
    must be softmax (with the temperature), not logits."""

    def __init__(self, model: nn.Module, mean, std, temperature: float = 1.0):
        super().__init__(model, mean, std)
        self.temperature = float(temperature)

    def forward(self, x):
        return torch.softmax(super().forward(x) / self.temperature, dim=1)


def write(model: nn.Module, card: ModelCard, metadata: dict, path: Path) -> None:
    """``metadata`` (deploy/formats.export_metadata of ``card``) goes into the model's user-defined metadata. A
    multi-label ``model`` is models/familiarity.WithProbabilities: its two outputs become the model's."""
    ct = import_coremltools()
    pre = card.preprocess
    channels, height, width = card.input_size
    if card.multi_label:
        net = Normalised(model.eval(), pre["mean"], pre["std"]).eval()
        outputs = {"outputs": [ct.TensorType(name=name) for name in MULTI_LABEL_OUTPUTS]}
    else:
        net = ImageClassifier(model.eval(), pre["mean"], pre["std"], card.temperature).eval()
        outputs = {"classifier_config": ct.ClassifierConfig(list(card.class_names))}
    # its progress bars go to stderr: quiet, like the other exports
    with torch.no_grad(), warnings.catch_warnings(), _quiet_logger("coremltools"), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        example = torch.rand(1, channels, height, width)
        traced = torch.jit.trace(static_padding(net, example), example)
        mlmodel = ct.convert(
            traced, inputs=[ct.ImageType(name=INPUT_NAME, shape=(1, channels, height, width), scale=1 / 255.0,
                                         bias=[0.0] * channels, color_layout=ct.colorlayout.RGB)],
            **outputs, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS15,
            compute_precision=ct.precision.FLOAT32, skip_model_load=sys.platform != "darwin")
    mlmodel.user_defined_metadata[METADATA_KEY] = json.dumps(metadata)
    if card.multi_label:
        _describe_labels(mlmodel, card)
    else:
        mlmodel.short_description = (f"imgcls {card.model_name} classifier: {len(card.class_names)} "
                                     f"classes, RGB input {width}x{height}")
    mlmodel.save(str(path))


def _describe_labels(mlmodel, card: ModelCard) -> None:
    """The label names where Xcode and a reader of the spec see them: the outputs' descriptions (a model that is
    not a classifier has no class labels of its own)."""
    _, height, width = card.input_size
    labels = ", ".join(f"{name} ({threshold:g})" for name, threshold in zip(card.class_names, card.thresholds))
    mlmodel.short_description = (f"imgcls {card.model_name} multi-label model: {len(card.class_names)} labels, "
                                 f"RGB input {width}x{height}")
    mlmodel.output_description[PROBABILITIES] = (f"each label's sigmoid probability, in this order (a label is "
                                                 f"present at or above its threshold): {labels}")
    mlmodel.output_description[LOGITS_ONLY[0]] = "each label's logit, in the order of the probabilities"


def static_padding(net: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of ``net`` whose TensorFlow-style "same" padding is fixed for ``example``'s size. timm's
    ``Conv2dSame`` (the tf_* models, the default among them) works the padding out from the input's shape on every
    call, which coremltools cannot convert; timm's export form of the same layer pads by a constant that its first
    call fixes. Same weights, same numbers, for this one input size (a Core ML model has just one)."""
    import copy

    from timm.layers.conv2d_same import Conv2dSame, Conv2dSameExport

    net = copy.deepcopy(net).eval()
    for module in net.modules():
        if type(module) is Conv2dSame:
            module.__class__ = Conv2dSameExport
            module.pad, module.pad_input_size = None, (0, 0)
    with torch.no_grad():
        net(example)
    return net


def read_spec(path: Path) -> dict:
    """What can be read from a saved model on any platform: input, outputs (their types, the shapes of
    multi-arrays, the operation that computes each), class labels, metadata."""
    ct = import_coremltools()
    try:
        spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    except Exception as e:  # noqa: BLE001 - not a model package, damaged protobuf...
        raise ImgclsError(f"--weights {path}: cannot be read as a Core ML model ({str(e)[:160]})") from None
    desc = spec.description
    inputs = []
    for feature in desc.input:
        kind = feature.type.WhichOneof("Type")
        entry = {"name": feature.name, "type": kind}
        if kind == "imageType":
            image = feature.type.imageType
            entry.update(width=image.width, height=image.height,
                         color=ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace))
        inputs.append(entry)
    return {"type": spec.WhichOneof("Type"), "inputs": inputs,
            "outputs": {f.name: f.type.WhichOneof("Type") for f in desc.output},
            "shapes": {f.name: list(f.type.multiArrayType.shape) for f in desc.output
                       if f.type.WhichOneof("Type") == "multiArrayType"},
            "computed_by": _program_producers(spec),
            "predicted_feature": desc.predictedFeatureName, "probabilities": desc.predictedProbabilitiesName,
            "class_labels": _program_class_labels(spec), "metadata": desc.metadata.userDefined.get(METADATA_KEY)}


def _program_producers(spec) -> dict[str, list[str]]:
    """For each output of an ML Program, the operation that computes it and the tensor it takes as ``x``
    (["sigmoid", "logits"]): what shows, without running the model, that one output is the sigmoid of another."""
    found = {}
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                for out in op.outputs:
                    if out.name in block.outputs:
                        x = op.inputs["x"].arguments[0].name if "x" in op.inputs else ""
                        found[out.name] = [op.type, x]
    return found


def _program_class_labels(spec) -> list[str]:
    """An ML Program keeps its labels as the "classes" argument of its classify operation."""
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                if op.type == "classify":
                    labels = []
                    for item in op.inputs["classes"].arguments[0].value.immediateValue.list.values:
                        tensor = item.immediateValue.tensor
                        labels += list(tensor.strings.values) or [str(v) for v in tensor.longInts.values]
                    return labels
    return []


def check_spec(path: Path, card: ModelCard, metadata: dict) -> dict:
    """Refuse a converted model whose input, outputs, labels or metadata (``metadata``, what was written) are not
    what imgcls wrote."""
    spec = read_spec(path)
    _, height, width = card.input_size
    expected = [{"name": INPUT_NAME, "type": "imageType", "width": width, "height": height, "color": "RGB"}]
    problems = []
    if spec["type"] != "mlProgram":
        problems.append(f"model type {spec['type']}, expected mlProgram")
    if spec["inputs"] != expected:
        problems.append(f"input {spec['inputs']}, expected {expected}")
    problems += _multi_label_problems(spec, card) if card.multi_label else _classifier_problems(spec, card)
    if not spec["metadata"] or json.loads(spec["metadata"]) != metadata:
        problems.append("the imgcls metadata is missing or differs")
    if problems:
        raise ImgclsError(f"--format coreml: the converted model is not what was asked for ({'; '.join(problems)}); "
                          "nothing was written")
    return spec


def _classifier_problems(spec: dict, card: ModelCard) -> list[str]:
    problems = []
    if spec["outputs"] != {LABEL_OUTPUT: "stringType", PROBS_OUTPUT: "dictionaryType"} or \
            (spec["predicted_feature"], spec["probabilities"]) != (LABEL_OUTPUT, PROBS_OUTPUT):
        problems.append(f"outputs {spec['outputs']}")
    if spec["class_labels"] != list(card.class_names):
        problems.append(f"class labels {spec['class_labels'][:5]}..., expected {list(card.class_names[:5])}...")
    return problems


def _multi_label_problems(spec: dict, card: ModelCard) -> list[str]:
    """A multi-label model: two multi-arrays of one row of a value per label, and no classifier (whose softmax
    would make the labels compete); its probabilities computed as the sigmoid of its logits."""
    logits, probabilities = MULTI_LABEL_OUTPUTS
    problems = []
    if spec["outputs"] != {name: "multiArrayType" for name in MULTI_LABEL_OUTPUTS} or spec["predicted_feature"] \
            or spec["class_labels"]:
        problems.append(f"outputs {spec['outputs']}, expected the multi-arrays {logits} and {probabilities}")
    elif any(shape not in ([], [1, len(card.class_names)]) for shape in spec["shapes"].values()):
        problems.append(f"output shapes {spec['shapes']}, expected [1, {len(card.class_names)}] (one per label)")
    if spec["computed_by"].get(probabilities) != ["sigmoid", logits]:
        problems.append(f"{probabilities} computed as {spec['computed_by'].get(probabilities)}, expected the sigmoid "
                        f"of {logits}")
    return problems


# -------------------------------------------------------------------------------------- running (macOS only)

def to_images(batch: np.ndarray, preprocess: dict) -> np.ndarray:
    """Normalised NCHW floats back to the uint8 NHWC RGB images Core ML takes."""
    mean = np.asarray(preprocess["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(preprocess["std"], np.float32).reshape(1, -1, 1, 1)
    pixels = np.clip(np.round((np.asarray(batch, np.float32) * std + mean) * 255), 0, 255).astype(np.uint8)
    return pixels.transpose(0, 2, 3, 1)


def from_images(images: np.ndarray, preprocess: dict) -> np.ndarray:
    mean = np.asarray(preprocess["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(preprocess["std"], np.float32).reshape(1, -1, 1, 1)
    return ((images.transpose(0, 3, 1, 2).astype(np.float32) / 255) - mean) / std


def coreml_runner(path: Path, card: ModelCard) -> Runner:
    """Log-probabilities from Core ML (softmax of them gives its probabilities back); a multi-label model's
    logits, then its probabilities (its outputs, as models/familiarity.WithProbabilities gives them). macOS only."""
    if sys.platform != "darwin":
        raise ImgclsError(f"--weights {path}: Core ML models run only on macOS (Apple's Core ML framework); "
                          "on this machine use the .onnx or .tflite export of the same checkpoint")
    from PIL import Image

    ct = import_coremltools()
    mlmodel = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
    names = list(card.class_names)

    def run(inputs):
        batch = inputs.numpy() if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
        found = [mlmodel.predict({INPUT_NAME: Image.fromarray(image)}) for image in to_images(batch, card.preprocess)]
        if card.multi_label:
            return tuple(np.stack([np.asarray(f[name], np.float32).reshape(-1) for f in found])
                         for name in MULTI_LABEL_OUTPUTS)
        rows = [[f[PROBS_OUTPUT][name] for name in names] for f in found]
        return np.log(np.maximum(np.asarray(rows, np.float32), 1e-30))

    return Runner("coreml", run, fixed_batch=1)


def check_numbers(model: nn.Module, card: ModelCard, path: Path, batch: np.ndarray, source: str) -> Parity | None:
    """On macOS: Core ML's probabilities against PyTorch's on the same 8-bit images (a multi-label model: its logits
    and label sets against PyTorch's, and its probabilities against the sigmoid of its logits, as
    parity.check_parity checks every multi-label file). Elsewhere: None."""
    if sys.platform != "darwin":
        log.warning(f"WARNING: {NOT_CHECKED}")
        return None
    pre = card.preprocess
    exact = from_images(to_images(batch, pre), pre)  # what Core ML sees: the image rounded to 8 bits
    if card.multi_label:
        from ..runtime.pytorch import torch_runner

        return check_parity(torch_runner(model), coreml_runner(path, card), exact, source, MULTI_LABEL_OUTPUTS,
                            card.thresholds)
    with torch.inference_mode():
        expected = torch.softmax(model.eval()(torch.from_numpy(exact)) / card.temperature, 1)
    got = np.exp(coreml_runner(path, card)(exact))
    return compare_logits(expected.numpy(), got, f"{source} (probabilities)")
