"""Runners built with PyTorch. A ``Runner`` (runtime/runner.py, which also holds ONNX Runtime and imports no
torch) maps a float32 batch (N x 3 x H x W images, or cached inputs) to numpy arrays: the network's outputs, of
which the first is the logits (or features) and a classifier with a familiarity score (models/familiarity.Scored)
has that score as its second.

On CPU the candidates are ONNX Runtime and PyTorch (channels_last, inference mode); each must first
agree with eager PyTorch, then the faster one on a probe batch wins, and the winner is remembered
per architecture, input size, thread count and library versions. On a GPU PyTorch runs as is.

``checkpoint_runner`` is what predict, serve, val and benchmark use for a trained checkpoint: its
network is exported to ONNX once, checked against PyTorch, and kept in the cache folder under a key
of its weights, so a changed checkpoint is never served from a stale file. ``remember_export`` leaves the
card that lets a later predict run that export without PyTorch (runtime/cards.py).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import ImgclsError
from .device import autocast
from .runner import (
    ORT,
    PARITY_RTOL,
    RUNTIMES,
    TORCH,
    Runner,
    onnx_runner,
    outputs_error,
)

log = logging.getLogger("imgcls")

ONNX_OPSET = 17
RACE_BATCH = 4       # images per call when runtimes race: enough to rank them, cheap for the slow one
DECISIVE = 1.25      # a race won by less is run again next time: one slow moment must not decide for good


def as_arrays(outputs) -> tuple[np.ndarray, ...]:
    """A module's output (one tensor or a tuple of them) as a tuple of float32 numpy arrays."""
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return tuple(o.float().cpu().numpy() if isinstance(o, torch.Tensor) else np.asarray(o, np.float32)
                 for o in outputs)


def torch_runner(module: nn.Module, device: torch.device | str = "cpu", *, channels_last: bool = False,
                 amp: bool = False, name: str | None = None) -> Runner:
    """Eager PyTorch in inference mode. channels_last lets oneDNN pick its fastest conv kernels on CPU."""
    device = torch.device(device)

    @torch.inference_mode()
    def run(inputs):
        module.eval()
        x = torch.as_tensor(inputs).to(device, non_blocking=True)
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            return as_arrays(module(x))

    return Runner(name or (TORCH if channels_last else "torch"), run)


def export_onnx_bytes(module: nn.Module, input_size, *, dynamic_batch: bool = True, input_name: str = "images",
                      output_name: str | tuple[str, ...] = "logits") -> bytes:
    """ONNX bytes of ``module`` on CPU (TorchScript-based exporter: no onnxscript needed, every timm CNN works).
    A module with several outputs names each (``output_name`` a tuple)."""
    buffer = io.BytesIO()
    example = torch.zeros(1, *input_size)
    names = [output_name] if isinstance(output_name, str) else list(output_name)
    axes = {input_name: {0: "batch"}, **{name: {0: "batch"} for name in names}} if dynamic_batch else None
    with warnings.catch_warnings(), _stdout_discarded(), torch.inference_mode(False), torch.no_grad():
        # torch marks this exporter deprecated in favour of torch.export; these graphs have no data-dependent flow
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval().cpu(), (example,), buffer, input_names=[input_name],
                          output_names=names, dynamic_axes=axes, opset_version=ONNX_OPSET, dynamo=False)
    return buffer.getvalue()


@contextlib.contextmanager
def _stdout_discarded():
    """Standard output discarded at the file-descriptor level: the exporter's C++ log (on by default in torch's
    TorchScript exporter) writes the whole Torch IR graph to it when an operator cannot be exported, and a failed
    export is one line from imgcls (deploy/export.py)."""
    import ctypes

    flush_c = functools.partial(ctypes.CDLL(None).fflush, None)  # C stdio buffers what C++ writes to a pipe
    sys.stdout.flush()
    flush_c()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null, contextlib.redirect_stdout(io.StringIO()):
            os.dup2(null.fileno(), 1)
            yield
    finally:
        flush_c()
        os.dup2(saved, 1)
        os.close(saved)


def parity_error(runner: Runner, module: nn.Module, inputs: torch.Tensor) -> float:
    """Largest difference from eager PyTorch over every output, relative to each output's scale (0: identical)."""
    with torch.inference_mode():
        expected = as_arrays(module.eval()(inputs))
    return outputs_error(runner.outputs(inputs), expected)


def _probe(input_size, batch: int = 8) -> torch.Tensor:
    return torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(0))


def _faster(runners: list[Runner], probe: torch.Tensor, choice: str, warm: tuple[Runner, ...] = (),
            timed_calls: int = 2) -> Runner:
    """The runner with the higher throughput on the probe batch. The choice is remembered under ``choice`` when
    it is clear (``decisive``), so that later calls skip the race. Runners in ``warm`` have already run once on
    ``probe`` (their first call, which allocates and picks kernels)."""
    if len(runners) == 1:
        return runners[0]
    for runner in runners:
        if not any(runner is w for w in warm):
            runner(probe)  # warm-up
        start = time.perf_counter()
        for _ in range(timed_calls):
            runner(probe)
        runner.images_per_second = timed_calls * len(probe) / (time.perf_counter() - start)
    best, *others = sorted(runners, key=lambda r: r.images_per_second, reverse=True)
    clear = decisive([r.images_per_second for r in (best, *others)])
    if clear:
        _remember(choice, best.name)
    log.debug(f"Runtime race: {best.name} {best.images_per_second:.0f} images/s, "
              + ", ".join(f"{r.name} {r.images_per_second:.0f}" for r in others)
              + ("" if clear else " (too close to remember: raced again next time)"))
    return best


def decisive(speeds: list[float]) -> bool:
    """Whether the fastest of ``speeds`` (images/s, fastest first) beat the next by at least ``DECISIVE``."""
    return len(speeds) < 2 or speeds[0] >= DECISIVE * speeds[1]


def _falls_back(runner: Runner, module: Callable[[], nn.Module]) -> Runner:
    """``runner`` (ONNX Runtime) that goes on in PyTorch for good, with one warning, should a later batch fail in it:
    passing the parity probe does not prove every batch runs (an ONNX Runtime kernel can fail on one shape
    only), and a long job should not end there. ``module`` builds the PyTorch network when it is needed."""
    fallback: list[Runner] = []

    def run(inputs):
        if not fallback:
            try:
                return runner.run(inputs)
            except Exception as e:  # noqa: BLE001 - whatever the runtime raises, PyTorch computes the same network
                log.warning(f"WARNING: {runner.name} failed on a batch of {len(inputs)} ({_reason(e)}); going on with "
                            "PyTorch")
                fallback.append(fast_torch_runner(module(), tuple(inputs.shape[1:])))
        return fallback[0].run(inputs)

    return Runner(runner.name, run, fixed_batch=runner.fixed_batch, images_per_second=runner.images_per_second,
                  metadata=runner.metadata)


def fastest_runner(module: nn.Module, input_size, *, device: torch.device | str = "cpu", kind: str = "auto") -> Runner:
    """The runner to use for ``module`` (features or logits), measured on a random probe batch.

    ``kind`` forces 'torch' or 'onnxruntime'. A candidate that fails to build or to match eager
    PyTorch is dropped with a warning, so the worst case is plain PyTorch.
    """
    device = torch.device(device)
    module = module.eval()
    if device.type != "cpu" or kind == "torch":
        return fast_torch_runner(module, input_size, device, copy=False)
    probe = _probe(input_size)
    choice = _choice_key(type(module).__name__ + ",".join(f"{k}:{tuple(v.shape)}" for k, v in
                                                           module.state_dict().items()), input_size)
    wanted = {kind} if kind != "auto" else {remembered(choice)} & {ORT, TORCH} or {ORT, TORCH}
    candidates = []
    if ORT in wanted:
        try:
            data = export_onnx_bytes(module, input_size, output_name="outputs")
            runner = onnx_runner(data, threads=torch.get_num_threads()) if ort_survives(
                data, probe, choice, type(module).__name__) else None
            if runner is not None and _agrees(runner, module, probe):
                candidates.append(runner)
        except Exception as e:  # noqa: BLE001 - not installed, or an operator the exporter cannot express
            _explain_ort_failure(e, kind)
    if TORCH in wanted or not candidates:
        candidates.append(fast_torch_runner(module, input_size))
    chosen = _faster(candidates, probe, choice)
    return _falls_back(chosen, lambda: module) if chosen.name == ORT and kind == "auto" else chosen


def checkpoint_runner(checkpoint: dict, *, device: torch.device | str = "cpu", kind: str = "auto") -> Runner:
    """The fastest runner of a trained checkpoint's network (images in, logits out); see the module notes.

    A checkpoint new to this machine is exported to ONNX here; the export's first call on the probe batch is
    also its parity check against PyTorch, and PyTorch's first call is also its warm-up for the race, so a cold
    start runs the network no more often than the race needs."""
    from ..models.factory import network_from_checkpoint
    from ..record.checkpoint import card_of

    if kind not in RUNTIMES:
        raise ImgclsError(f"--runtime {kind!r}: choose {', '.join(RUNTIMES)}")
    device = torch.device(device)
    input_size = card_of(checkpoint).input_size
    if device.type != "cpu" or kind == "torch":
        return fast_torch_runner(network_from_checkpoint(checkpoint), input_size, device, copy=False)
    choice = checkpoint_choice(checkpoint)
    known = remembered(choice) if kind == "auto" else None
    network = functools.cache(lambda: network_from_checkpoint(checkpoint))  # built once, and only when needed
    fast = functools.cache(lambda: fast_torch_runner(network(), input_size))
    probe = _probe(input_size, RACE_BATCH)
    onnx, new_export = None, None
    if known != TORCH:
        try:
            onnx, new_export = _cached_onnx_runner(checkpoint, network, probe)
        except Exception as e:  # noqa: BLE001 - as in fastest_runner
            if kind == "onnxruntime":
                raise ImgclsError(f"--runtime onnxruntime: {e}") from None
            _explain_ort_failure(e, kind)
        if onnx is None and kind == "onnxruntime":
            raise ImgclsError("--runtime onnxruntime: ONNX Runtime crashes on this network on this machine; use "
                              "--runtime auto or torch")
    race = kind == "auto" and known != ORT
    if new_export is not None and not _keep_export(onnx, fast() if race else torch_runner(network()), probe,
                                                   *new_export):
        if kind == "onnxruntime":
            raise ImgclsError("--runtime onnxruntime: the ONNX export differs from PyTorch")
        onnx = None
    candidates = [onnx] if onnx is not None else []
    if race or not candidates:
        candidates.append(fast())
    chosen = _faster(candidates, probe, choice, warm=candidates if new_export is not None else (), timed_calls=1)
    return _falls_back(chosen, network) if chosen is onnx and kind == "auto" else chosen


def checkpoint_choice(checkpoint: dict) -> str:
    """The key the runtime race's outcome for a checkpoint's network is remembered under."""
    from ..record.checkpoint import card_of

    card = card_of(checkpoint)
    return _choice_key(f"{card.model_name}|{card.model_kwargs}|{len(card.class_names)}", card.input_size)


def cached_export_path(checkpoint: dict) -> Path:
    """Where the checked ONNX export of a checkpoint's network is kept: under a key of what it computes."""
    from ..record.cache import cache_root
    from ..record.checkpoint import network_key

    return cache_root() / "onnx" / f"{network_key(checkpoint)}.onnx"


def _cached_onnx_runner(checkpoint: dict, network: Callable[[], nn.Module], probe: torch.Tensor
                        ) -> tuple[Runner | None, tuple | None]:
    """(ONNX Runtime on the checkpoint's network, None) from the export an earlier call left in the cache, else
    (that runner on a new export, (its cache path, its bytes)): ``_keep_export`` writes them once they agree with
    PyTorch. The key is the checkpoint's weights, so a changed checkpoint is never served from a stale file; a
    cached file that no longer loads (damaged on disk) is exported again and replaced. (None, None) where ONNX
    Runtime crashes on the network here (``ort_survives`` on ``probe``)."""
    import onnxruntime  # noqa: F401 - fail early, before exporting, when it is missing

    from ..record.checkpoint import card_of

    path = cached_export_path(checkpoint)
    run = functools.partial(onnx_runner, threads=torch.get_num_threads(), name=f"{ORT} (cached ONNX)")
    card = card_of(checkpoint)
    survives = functools.partial(ort_survives, probe=probe, subject=card.model_name,
                                 key=f"{checkpoint_choice(checkpoint)}|{card.mirrored_at}|{card.outputs}")
    if path.exists():
        if not survives(path):
            return None, None
        try:
            return run(path), None
        except Exception:  # noqa: BLE001 - whatever ONNX Runtime says about a file it cannot load
            log.warning(f"WARNING: the cached export {path} is damaged (ONNX Runtime cannot load it); exporting again")
    data = export_onnx_bytes(network(), card.input_size, output_name=card.outputs)
    return (run(data), (path, data)) if survives(data) else (None, None)


def ort_survives(model: bytes | Path, probe: torch.Tensor, key: str, subject: str) -> bool:
    """Whether an ONNX Runtime session on ``model`` (an export's bytes or file) builds and runs ``probe`` without
    the process crashing (a segmentation fault in one of its kernels for one graph on one CPU), tried once in a
    child process and remembered under ``key`` (runtime/device.survives), with one warning when it does not: the
    caller goes on in PyTorch."""
    from .device import survives, warn_once

    fine = survives(ORT, key, lambda: onnx_runner(model, threads=1)(probe))
    if not fine:
        warn_once(ORT, subject)
    return fine


def _keep_export(onnx: Runner, reference: Runner, probe: torch.Tensor, path: Path, data: bytes) -> bool:
    """Parity of a new export against PyTorch on ``probe`` (both runners' first call); kept in the cache if
    it agrees."""
    from ..record.files import atomic_write_bytes

    error = outputs_error(onnx.outputs(probe), reference.outputs(probe))
    if error > PARITY_RTOL:
        log.warning(f"WARNING: {onnx.name} differs from eager PyTorch by {error:.2e}; not using it")
        return False
    atomic_write_bytes(path, data)
    log.info(f"Exported the network to ONNX once for fast inference ({path})")
    return True


def _agrees(runner: Runner, module: nn.Module, probe: torch.Tensor) -> bool:
    error = parity_error(runner, module, probe)
    if error > PARITY_RTOL:
        log.warning(f"WARNING: {runner.name} differs from eager PyTorch by {error:.2e}; not using it")
    return error <= PARITY_RTOL


def _explain_ort_failure(error: Exception, kind: str) -> None:
    if isinstance(error, (ImportError, ImgclsError)) and "onnxruntime" in str(error) and kind == "auto":
        log.info("ONNX Runtime is not installed (pip install 'imgcls[fast]'); using PyTorch")
    else:
        log.warning(f"WARNING: ONNX Runtime unavailable ({_reason(error)}); using PyTorch")


def _reason(error: Exception) -> str:
    """The first line of an error's message (at most 160 characters), or its type when it has none."""
    return str(error).splitlines()[0][:160] if str(error) else type(error).__name__


def fast_torch_runner(module: nn.Module, input_size, device: torch.device | str = "cpu", *,
                      copy: bool = True) -> Runner:
    """Eager PyTorch in channels_last (oneDNN's fastest convolution kernels) where that runs here without crashing
    (runtime/device.channels_last_survives), else in the default memory format. ``copy``: leave ``module`` as it
    is (the runner gets its own copy)."""
    from .device import channels_last_survives

    device = torch.device(device)
    if device.type == "cpu" and not channels_last_survives(module, input_size, train=False,
                                                           subject=type(module).__name__):
        return torch_runner(module.eval(), device)
    module = _channels_last_copy(module) if copy else module.eval().to(memory_format=torch.channels_last)
    return torch_runner(module.to(device), device, channels_last=True)


def _channels_last_copy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).eval().to(memory_format=torch.channels_last)


def _choice_key(network: str, input_size) -> str:
    """Same network, input size, thread count and library versions: the same winner."""
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "none"
    spec = f"{network}|{list(input_size)}|{torch.get_num_threads()}|{torch.__version__}|{ort_version}"
    return hashlib.sha256(spec.encode()).hexdigest()[:24]


CHOICES_FILE = "runtime-choices.json"


def remembered(choice: str) -> str | None:
    """The runtime a clear race chose for ``choice`` here, or None."""
    from ..record.cache import recalled

    return recalled(CHOICES_FILE, choice)


def _remember(choice: str, name: str) -> None:
    from ..record.cache import remember

    remember(CHOICES_FILE, choice, name.split(" (")[0])
