"""``imgcls export``: ONNX, TorchScript, OpenVINO, TFLite and Core ML files, and web pages, that carry their own
labels and preprocessing.

Every export is checked against PyTorch on images of the run's validation split before it is put in
place, so a file that gives other answers never lands next to the checkpoint. (Core ML can only run on
macOS: elsewhere its spec is checked, and export says that the numbers were not.)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..console import setup_logging
from ..errors import ImgclsError
from ..record.card import ModelCard
from ..record.checkpoint import card_of, load_checkpoint
from ..record.files import new_staging_dir, put_in_place, remove_staging_dir
from ..runtime.pytorch import torch_runner
from .formats import FORMATS, Format, file_size, format_of
from .parity import (
    MAX_LOGIT_DIFF,
    MAX_SIGMOID_DIFF,
    Parity,
    check_parity,
    reference_inputs,
)

log = logging.getLogger("imgcls")

CALIBRATION_IMAGES = 64


@dataclass
class ExportResult:
    path: Path
    format: str
    parity: Parity | None          # None: not checked numerically (Core ML off macOS; the spec was checked)
    int8_path: Path | None = None
    int8_report: dict | None = None


def default_output(checkpoint_path: Path, fmt: str) -> Path:
    """RUN/weights/best.pt -> RUN/weights/best.onnx, best_web (next to the checkpoint, never over it)."""
    return FORMATS[fmt].next_to(checkpoint_path)


def _check_targets(fmt: Format, paths: list[Path], force: bool, given: bool) -> None:
    """Refuse, before any work, to replace an existing file unless ``force``; never replace a folder other than
    an earlier export in a format written as a folder (Core ML, web)."""
    for p in paths:
        if p.is_dir() and fmt.earlier_export is None:
            raise ImgclsError(f"--out {p}: is a folder; give a file name")
        if p.is_dir() and not fmt.earlier_export(p):
            raise ImgclsError(f"--out {p}: is a folder that is not an earlier {fmt.name} export; choose another --out")
    taken = [p for p in paths if p.exists() or p.is_symlink()]
    if taken and not force:
        where = f"--out {taken[0]}: already exists" if given else f"{taken[0]} already exists (an earlier export?)"
        raise ImgclsError(f"{where}; pass --force to replace it, or choose another --out FILE")


def export(weights: str | os.PathLike, format: str = "onnx", *, int8: bool = False, dynamic_batch: bool = False,
           out: str | os.PathLike | None = None, calibration_images: int = CALIBRATION_IMAGES,
           bench_seconds: float = 2.0, force: bool = False) -> ExportResult:
    """Export a checkpoint, check it against PyTorch on validation images, and (``int8``) quantize it.

    Raises ImgclsError when the FP32 file's logits disagree with PyTorch; the file is then not kept (one whose
    familiarity score alone disagrees is written without it). An existing file at the output path is replaced only
    with ``force``.
    """
    setup_logging()
    fmt = _checked_format(weights, format, int8, dynamic_batch, calibration_images)
    fmt.require()  # name a missing package before any work is done
    checkpoint = load_checkpoint(weights)
    checkpoint_path = Path(checkpoint["path"])
    path = Path(out) if out else default_output(checkpoint_path, format)
    if not fmt.owns(path):
        kind = "folder" if fmt.earlier_export else "file"
        raise ImgclsError(f"--out {path}: a {format} {kind} should end in {fmt.suffix}")
    if path.resolve() == checkpoint_path.resolve():
        raise ImgclsError(f"--out {path}: is the checkpoint itself; choose another file name")
    _check_targets(fmt, fmt.files(path) + ([fmt.int8_path(path)] if int8 else []), force, given=out is not None)
    model = _network(checkpoint, scored=fmt.familiarity)
    batch, _, source = reference_inputs(checkpoint, "val")
    staging = new_staging_dir(path)
    try:
        staged = staging / path.name
        model, parity = _written(fmt, model, checkpoint, staged, dynamic_batch, batch, source)
        # Side files first (OpenVINO's .bin before its .xml): a reader never finds the main file without them.
        for staged_file, target in reversed(list(zip(fmt.files(staged), fmt.files(path)))):
            put_in_place(staged_file, target)
    finally:
        remove_staging_dir(staging)
    log.info(f"Exported {format} ({sum(file_size(p) for p in fmt.files(path)) / 1e6:.2f} MB) to {path}")
    if fmt.next_step:
        log.info(fmt.next_step.format(path=path))
    result = ExportResult(path=path, format=format, parity=parity)
    if int8:
        from .quantize import quantize_and_compare, quantize_file_and_compare

        if format == "onnx":  # timed on dynamic-batch twins (batch 32 measured batched)
            result.int8_path, result.int8_report = quantize_and_compare(
                model, checkpoint, path, dynamic_batch=dynamic_batch, calibration_images=calibration_images,
                bench_seconds=bench_seconds)
        else:
            result.int8_path, result.int8_report = quantize_file_and_compare(
                fmt, model, checkpoint, path, calibration_images=calibration_images, bench_seconds=bench_seconds)
    return result


def _network(checkpoint: dict, scored: bool):
    """The network an export writes: with the familiarity score as a second output (``scored``) or the logits
    alone; a multi-label model's also gives each label's sigmoid probability, last (familiarity.WithProbabilities)."""
    from ..models.factory import model_from_checkpoint, network_from_checkpoint
    from ..models.familiarity import WithProbabilities

    model = (network_from_checkpoint if scored else model_from_checkpoint)(checkpoint)
    return WithProbabilities(model).eval() if card_of(checkpoint).multi_label else model


def _checked_format(weights, format: str, int8: bool, dynamic_batch: bool, calibration_images: int) -> Format:
    """The format asked for, after every check of the options that needs no work."""
    fmt = FORMATS.get(format)
    if fmt is None:
        raise ImgclsError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    if int8 and fmt.write_int8 is None:
        *others, last = [f.name for f in FORMATS.values() if f.write_int8]
        offered = f"{', '.join(others)} and {last}"
        raise ImgclsError(f"--int8 is offered for --format {offered}, not {format}")
    if dynamic_batch and fmt.batch_one:
        raise ImgclsError(f"--dynamic-batch: {format} files are exported for batch 1 (what apps and pages run); "
                          "drop --dynamic-batch")
    if calibration_images < 1:
        raise ImgclsError(f"--calib-images {calibration_images}: must be 1 or more")
    if format_of(weights) is not None and not Path(weights, "weights", "best.pt").is_file():  # not a run folder
        raise ImgclsError(f"--weights {weights}: export starts from an imgcls checkpoint (.pt), not an exported file")
    return fmt


def _written(fmt: Format, model, checkpoint: dict, staged: Path, dynamic_batch: bool, batch,
             source: str) -> tuple[object, Parity | None]:
    """(the network written, its parity): the file is written and checked; one whose logits agree with PyTorch
    but whose familiarity score does not is written again without the score, in one line: a threshold placed on a
    score the file does not reproduce would reject other images than the checkpoint does, while --reject on a file
    of logits alone uses their energy, whose threshold the checkpoint stores beside (metrics.usable_spec)."""
    card = card_of(checkpoint)
    _write(fmt, model, card, staged, dynamic_batch)
    parity = _checked(fmt, model, card, staged, batch, source)
    if parity is None or parity.score_agrees():
        return model, parity
    log.warning(f"WARNING: the file's familiarity score differs from PyTorch's by {parity.score_diff:.2e} of its "
                f"scale (allowed {parity.score_allowed:g}), as when a network gives every image nearly the same "
                "features; written without it: --reject on this file uses the logits' energy score")
    model = _network(checkpoint, scored=False)
    _write(fmt, model, card, staged, dynamic_batch)
    return model, _checked(fmt, model, card, staged, batch, source)


def _write(fmt: Format, model, card: ModelCard, staged: Path, dynamic_batch: bool) -> None:
    """The format's writer; a converter that cannot express this network (an operator at this input size that
    PyTorch's ONNX exporter has no rule for, say) is one line that names the model, the size and the cause."""
    try:
        fmt.write(model, card, staged, dynamic_batch)
    except ImgclsError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the converter raises, the user gets one line and no file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        size = "x".join(str(n) for n in card.input_size[1:])
        raise ImgclsError(f"--format {fmt.name}: {card.model_name} at {size} cannot be written as {fmt.name} "
                          f"({type(e).__name__}: {first}); nothing was written. Another input size (--imgsz when "
                          "training) or another --format may work") from None


def _checked(fmt: Format, model, card: ModelCard, staged: Path, batch, source: str) -> Parity | None:
    """Parity with PyTorch on ``batch``, or the format's own check (Core ML off macOS: the spec only, None)."""
    from ..models.familiarity import outputs_of

    if fmt.verify is not None:
        parity = fmt.verify(model, card, staged, batch, source)
    else:
        candidate, _ = fmt.load(staged, None)
        parity = check_parity(torch_runner(model), candidate, batch, source, outputs_of(model), card.thresholds)
    if parity is None:
        return None
    log.info(parity.line())
    if not parity.passed():
        raise ImgclsError(
            f"--format {fmt.name}: the exported model disagrees with PyTorch (max |logit diff| "
            f"{parity.max_abs_diff:.2e}, {parity.relative_diff:.2e} of the logits' scale, allowed {MAX_LOGIT_DIFF:g}; "
            f"{parity.answer} agreement {parity.top1_agreement * 100:.1f}%, required 100%"
            + (f"; sigmoid output diff {parity.sigmoid_diff:.2e}, allowed {MAX_SIGMOID_DIFF:g}"
               if parity.sigmoid_diff is not None else "") + "); nothing was written")
    return parity
