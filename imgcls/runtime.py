"""The fastest way to run a network forward on this machine, chosen by measuring.

On CPU the candidates are ONNX Runtime and PyTorch (channels_last, inference mode); each must
first agree with eager PyTorch (the parity check), then the faster one on a probe batch wins.
On a GPU PyTorch is used as is. A runner maps a float32 image batch (N,3,H,W) to a numpy array.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

log = logging.getLogger("imgcls")

RUNTIMES = ("auto", "torch", "onnxruntime")
PARITY_ATOL = 1e-3
PARITY_RTOL = 1e-3


class PreLogits(nn.Module):
    """The backbone as a module of its own: images in, pooled features (the classifier's input) out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model.forward_head(self.model.forward_features(images), pre_logits=True)


@dataclass
class Runner:
    """A forward pass that takes a float32 batch (torch or numpy) and returns float32 numpy."""

    name: str
    run: callable = field(repr=False)
    images_per_second: float | None = None

    def __call__(self, images) -> np.ndarray:
        return self.run(images)


def torch_runner(module: nn.Module, device: torch.device | str = "cpu", channels_last: bool = True) -> Runner:
    """Eager PyTorch in inference mode; channels_last lets oneDNN pick its fastest conv kernels on CPU."""
    device = torch.device(device)
    module = module.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        module = module.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def run(images):
        images = torch.as_tensor(images).to(device).contiguous(memory_format=memory_format)
        return module(images).float().cpu().numpy()

    return Runner("torch channels_last" if channels_last else "torch", run)


def export_onnx_bytes(module: nn.Module, input_size, input_name: str = "images", output_name: str = "features") -> bytes:
    """ONNX bytes of ``module`` on CPU with a dynamic batch axis (TorchScript exporter: no onnxscript needed)."""
    import warnings

    buffer = io.BytesIO()
    example = torch.zeros(1, *input_size)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval().cpu(), example, buffer, input_names=[input_name], output_names=[output_name],
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                          opset_version=17, dynamo=False)
    return buffer.getvalue()


def onnxruntime_runner(module: nn.Module, input_size, threads: int | None = None) -> Runner:
    """ONNX Runtime on CPU with full graph optimisation; ``module`` must be on CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(export_onnx_bytes(module, input_size), options,
                                   providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(images):
        array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        return session.run(None, {input_name: np.ascontiguousarray(array, dtype=np.float32)})[0]

    return Runner("onnxruntime", run)


def parity_error(runner: Runner, module: nn.Module, images: torch.Tensor) -> float:
    """Largest difference from eager PyTorch, relative to the output's scale (0 means identical)."""
    with torch.inference_mode():
        expected = module.eval()(images).float().cpu().numpy()
    got = runner(images)
    if got.shape != expected.shape:
        return float("inf")
    scale = max(1.0, float(np.abs(expected).max()))
    return float(np.abs(got - expected).max() / scale)


def _measure(runner: Runner, images: torch.Tensor, repeats: int = 2) -> float:
    runner(images)  # warm-up: first calls allocate and pick kernels
    start = time.perf_counter()
    for _ in range(repeats):
        runner(images)
    return repeats * len(images) / (time.perf_counter() - start)


def fastest_runner(module: nn.Module, input_size, *, device: torch.device | str = "cpu", kind: str = "auto",
                   probe_batch: int = 8) -> Runner:
    """The runner to use for ``module`` (features or logits), measured on a random probe batch.

    ``kind`` forces 'torch' or 'onnxruntime'. A candidate that fails to build or to match eager
    PyTorch within tolerance is dropped with a warning, so the worst case is plain PyTorch.
    """
    device = torch.device(device)
    module = module.eval()
    if device.type != "cpu" or kind == "torch":
        return torch_runner(module, device, channels_last=True)
    probe = torch.randn(probe_batch, *input_size, generator=torch.Generator().manual_seed(0))
    eager_module = module
    wanted = ("onnxruntime", "torch channels_last") if kind == "auto" else (kind,)
    remembered = _remembered_choice(module, input_size) if kind == "auto" else None
    if remembered in wanted:  # measured before for this architecture and size: skip the race
        wanted = (remembered,)
    candidates = []
    if "onnxruntime" in wanted:
        try:
            candidates.append(onnxruntime_runner(module, input_size))
        except Exception as e:  # not installed, or an operator the exporter cannot express
            if isinstance(e, ImportError) and kind == "auto":
                log.info("ONNX Runtime is not installed (pip install 'imgcls[fast]'); using PyTorch")
            else:
                reason = "onnxruntime is not installed" if isinstance(e, ImportError) else str(e).splitlines()[0][:160]
                log.warning(f"WARNING: ONNX Runtime unavailable ({reason}); using PyTorch")
            if "torch channels_last" not in wanted:
                wanted = (*wanted, "torch channels_last")
    if "torch channels_last" in wanted:
        import copy

        candidates.append(torch_runner(copy.deepcopy(module), "cpu", channels_last=True))
    usable = []
    for runner in candidates:
        error = parity_error(runner, eager_module, probe)
        if error <= PARITY_RTOL:
            usable.append(runner)
        else:
            log.warning(f"WARNING: {runner.name} differs from eager PyTorch by {error:.2e}; not using it")
    if not usable:
        return torch_runner(module, device, channels_last=False)
    if len(usable) == 1:
        return usable[0]
    for runner in usable:
        runner.images_per_second = _measure(runner, probe)
    best = max(usable, key=lambda r: r.images_per_second)
    _remember_choice(module, input_size, best.name)
    return best


def _choice_key(module: nn.Module, input_size) -> str:
    """Same architecture, input size, thread count and library versions: the same winner."""
    import hashlib

    shapes = ",".join(f"{k}:{tuple(v.shape)}" for k, v in module.state_dict().items())
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "none"
    spec = f"{type(module).__name__}|{shapes}|{list(input_size)}|{torch.get_num_threads()}|{torch.__version__}|{ort_version}"
    return hashlib.sha256(spec.encode()).hexdigest()[:24]


def _choices_file():
    from .cache import cache_root

    return cache_root() / "runtime-choices.json"


def _remembered_choice(module: nn.Module, input_size) -> str | None:
    import json

    try:
        return json.loads(_choices_file().read_text()).get(_choice_key(module, input_size))
    except (OSError, ValueError):
        return None


def _remember_choice(module: nn.Module, input_size, name: str) -> None:
    import json

    from .runs import write_json

    path = _choices_file()
    try:
        choices = json.loads(path.read_text()) if path.exists() else {}
        write_json(path, choices | {_choice_key(module, input_size): name})
    except (OSError, ValueError):
        pass  # a read-only cache folder only means measuring again next time


def cpu_bf16_is_faster(model: nn.Module, input_size, batch: int = 4) -> bool:
    """Time one training step in float32 and in bf16 autocast on CPU; True only when bf16 wins clearly.

    CPUs without native bf16 (AVX512-BF16/AMX) emulate it and are slower, so this is measured, not assumed.
    """
    import copy

    probe = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(0))
    trial = copy.deepcopy(model).train()

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = trial(probe).float().mean()
        loss.backward()
        return time.perf_counter() - start

    try:
        step(False), step(True)  # warm-up
        fp32 = min(step(False) for _ in range(3))
        bf16 = min(step(True) for _ in range(3))
    except RuntimeError:
        return False
    return bf16 < 0.85 * fp32


def predict_paths(checkpoint: dict, paths: list, *, batch_size: int = 32, workers: int = 1, kind: str = "auto",
                  device: torch.device | str = "cpu") -> np.ndarray:
    """Class probabilities (N, C) for image files, with the fastest runtime and draft-mode JPEG decoding.

    A small building block for predict/serve: the checkpoint's preprocessing and temperature
    apply; an unreadable file gets a row of NaN instead of stopping the batch.
    """
    from .cache import draft_size_for
    from .data import ImageDataset, make_loader
    from .models import model_from_checkpoint
    from .transforms import eval_transform

    preprocess = checkpoint["preprocess"]
    model = model_from_checkpoint(checkpoint)
    runner = fastest_runner(model, preprocess["input_size"], device=device, kind=kind)
    temperature = float(checkpoint.get("temperature", 1.0))
    dataset = ImageDataset(paths, [0] * len(paths), eval_transform(preprocess), draft_size=draft_size_for(preprocess))
    probs = np.full((len(paths), len(checkpoint["class_names"])), np.nan, dtype=np.float32)
    for batch in make_loader(dataset, batch_size=batch_size, shuffle=False, workers=workers):
        if batch is None:
            continue
        images, _, index = batch
        logits = torch.from_numpy(runner(images)) / temperature
        probs[index.numpy()] = torch.softmax(logits, dim=1).numpy()
    return probs
