"""``imgcls benchmark``: img/s and p50/p95 latency of a checkpoint on each available runtime."""

from __future__ import annotations

import csv
import io
import logging
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..console import setup_logging
from ..errors import ImgclsError
from ..record.checkpoint import card_of, load_checkpoint, run_dir_of
from ..record.files import atomic_write_text, new_run_dir, write_json
from ..runtime.inference import predict_logits
from ..runtime.pytorch import torch_runner
from ..runtime.runner import Runner, measure

log = logging.getLogger("imgcls")

BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "torchscript", "tflite", "tflite-int8")
DEFAULT_BACKENDS = ("torch", "onnx", "onnx-int8", "openvino")
CSV_COLUMNS = ["backend", "batch", "img_per_s", "p50_ms", "p95_ms", "runs"]


def parse_list(spec: str | list, allowed=None, name: str = "--backends") -> list:
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    items = [s for s in items if s != ""]
    if not items:
        raise ImgclsError(f"{name}: give at least one value")
    if allowed is not None:
        bad = [s for s in items if s not in allowed]
        if bad:
            raise ImgclsError(f"{name} {','.join(bad)}: unknown; choose from {','.join(allowed)}")
    return items


def parse_batches(spec: str | list) -> list[int]:
    try:
        batches = [int(b) for b in parse_list(spec, name="--batch")]
    except ValueError:
        raise ImgclsError(f"--batch {spec!r}: expected whole numbers such as 1,32") from None
    if any(b < 1 for b in batches):
        raise ImgclsError(f"--batch {spec!r}: batch sizes must be 1 or more")
    return batches


def _build_runner(name: str, checkpoint: dict, model, workdir: Path, threads: int | None) -> Runner:
    """The backend as a Runner: eager PyTorch, or the network written in that format (from the table of
    formats) and loaded back; NAME-int8 is that format's INT8 file calibrated on the run's training images.
    Files are written for any batch size where the format allows it (TFLite: batch 1, fed one image at a time)."""
    from .formats import FORMATS

    if name == "torch":
        return torch_runner(model)
    fmt = FORMATS[name.removesuffix("-int8")]
    fmt.require()
    path = workdir / f"model{fmt.suffix}"
    if not path.exists():
        fmt.write(model, card_of(checkpoint), path, not fmt.batch_one)
    if name.endswith("-int8"):
        from .parity import reference_inputs

        calibration, _, _ = reference_inputs(checkpoint, "train", limit=32)
        fmt.write_int8(model, card_of(checkpoint), path, fmt.int8_path(path), calibration)
        path = fmt.int8_path(path)
    return fmt.load(path, threads)[0]


def _build_backends(names: list[str], checkpoint: dict, model, workdir: Path,
                    threads: int | None = None) -> tuple[dict, dict]:
    """A runner for each backend that can run here, and the reason for each that cannot."""
    runners, skipped = {}, {}
    for name in names:
        try:
            runners[name] = _build_runner(name, checkpoint, model, workdir, threads)
        except ImgclsError as e:  # a missing optional package: say so and go on with the others
            skipped[name] = str(e)
            log.warning(f"WARNING: backend {name} skipped: {e}")
    return runners, skipped


def timed_predict(runner: Runner, batch: np.ndarray, seconds: float) -> dict:
    """img/s and latency of the one inference path (runtime.inference.predict_logits) on ``batch``."""
    inputs = torch.from_numpy(batch)
    labels = indices = torch.zeros(len(batch), dtype=torch.long)
    return measure(lambda x: predict_logits(runner, [(x, labels, indices)]), inputs, seconds=seconds)


def benchmark(weights: str | os.PathLike, backends: str | list = DEFAULT_BACKENDS, batches: str | list = (1, 32), *,
              seconds: float = 3.0, threads: int | None = None, out: str | os.PathLike | None = None) -> dict:
    """Time every requested backend at every batch size on this machine's CPU.

    ``threads`` sets the intra-op threads of every runtime alike (default: each runtime's own choice,
    usually one per core); on a busy machine 1 gives far steadier numbers.

    Writes benchmark.csv and benchmark.json into a new RUN/benchmark folder (or ``out``) and returns the table.
    """
    from ..models.factory import model_from_checkpoint

    setup_logging()
    names = parse_list(backends, BACKENDS)
    batch_sizes = parse_batches(batches)
    if seconds <= 0:
        raise ImgclsError(f"--seconds {seconds}: must be positive")
    if threads is not None and threads < 1:
        raise ImgclsError(f"--threads {threads}: must be 1 or more")
    checkpoint = load_checkpoint(weights)
    card = card_of(checkpoint)
    model = model_from_checkpoint(checkpoint)
    shape = card.input_size
    rows = []
    torch_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="imgcls-benchmark-") as tmp:
        runners, skipped = _build_backends(names, checkpoint, model, Path(tmp), threads)
        if not runners:
            raise ImgclsError(f"--backends {','.join(names)}: none can run here ({'; '.join(skipped.values())})")
        for name, fn in runners.items():
            for b in batch_sizes:
                inputs = np.random.default_rng(0).standard_normal((b, *shape), dtype=np.float32)
                rows.append({"backend": name, "batch": b, **timed_predict(fn, inputs, seconds)})
                r = rows[-1]
                log.info(f"  {name:<11} batch {b:>3}: {r['img_per_s']:9.1f} img/s  p50 {r['p50_ms']:8.2f} ms  "
                         f"p95 {r['p95_ms']:8.2f} ms")
    measured_threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    folder = Path(out) if out else new_run_dir(run_dir_of(checkpoint["path"]), "benchmark")
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "threads": threads or "runtime default", "torch_threads": measured_threads,
               "python": platform.python_version(),
               "torch": torch.__version__}
    table = {"weights": str(checkpoint["path"]), "model": card.model_name,
             "input_size": list(shape), "seconds_per_measurement": seconds, "machine": machine,
             "results": rows, "skipped": skipped}
    write_json(folder / "benchmark.json", table)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(folder / "benchmark.csv", buffer.getvalue())
    print(format_table(rows))
    log.info(f"Benchmark saved to {folder}")
    table["folder"] = str(folder)
    return table


def format_table(rows: list[dict]) -> str:
    header = f"{'backend':<11} {'batch':>5} {'img/s':>10} {'p50 ms':>9} {'p95 ms':>9}"
    lines = [header] + [f"{r['backend']:<11} {r['batch']:>5} {r['img_per_s']:>10.1f} {r['p50_ms']:>9.2f} "
                        f"{r['p95_ms']:>9.2f}" for r in rows]
    return "\n".join(lines)
