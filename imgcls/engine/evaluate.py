"""``imgcls val``: evaluate a checkpoint on a split, analyse its mistakes and calibrate its confidence.

``evaluate_checkpoint_on`` is the one evaluation: ``imgcls val`` and train's final val/test evaluation
both call it, so results.json's "test" and ``imgcls val --split test``'s metrics.json are the same record.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..console import setup_logging
from ..errors import ImgclsError
from ..metrics import (
    best_f1_thresholds,
    binary_cross_entropy,
    evaluation_report,
    expected_calibration_error,
    fit_temperature,
    log_loss,
    mistake_rows,
    multilabel_report,
    open_set_report,
    open_set_score,
    rejection_spec,
    sigmoid,
    softmax,
    threshold_for,
    usable_spec,
)
from ..record.card import ModelCard
from ..record.checkpoint import attached_export, card_of, load_checkpoint, run_dir_of, update_card
from ..record.files import new_run_dir

log = logging.getLogger("imgcls")

GALLERY_SIZE = 16
REJECT_KEEP = 0.95  # the open-set threshold keeps this share of the validation images
FAMILIARITY_IMAGES = 1000  # training images the familiarity score is fitted on (at most; spread over the split)
FEW_IMAGES = 200           # up to this many, features are computed in PyTorch without an ONNX export first


@dataclass
class EvalResult:
    """What an evaluation measured; ``metrics`` is exactly the content of metrics.json."""

    metrics: dict
    class_names: list[str]
    paths: list[str]              # image paths relative to the data root, in prediction order
    y_true: np.ndarray            # class indices, or (N, labels) 0/1 for a multi-label model
    probs: np.ndarray             # softmax(logits / temperature) (multi-label: sigmoid(logits)), logits averaged
                                  # over the flip with tta
    logits: np.ndarray | None = None
    familiarity: np.ndarray | None = None   # the network's familiarity score per image, when it gives one
    out_dir: Path | None = None   # RUN/val, RUN/val2, ... (None when nothing was saved)
    files: list[Path] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.metrics["accuracy"]

    @property
    def temperature(self) -> float:
        return self.metrics["temperature"]


def eval_items(checkpoint: dict, data: str | os.PathLike | None, split: str, *, images=None,
               columns: str | None = None) -> tuple[Path, list[tuple[str, int]], str]:
    """The images to evaluate: (data root, [(relative path, label)], split name).

    Without ``data``: the run's own split. With ``data``: its ``split`` folder when it has split
    folders, otherwise the whole tree of class folders (split name "all"); or a label file's rows (under
    ``images``, its columns named by ``columns`` where its header does not tell). Every class must be one of the
    checkpoint's classes.
    """
    from ..data.folders import refuse_listing_flags, run_source, scan_layout
    from ..data.labelfile import is_label_file

    card = card_of(checkpoint)
    class_names = list(card.class_names)
    if data is not None and is_label_file(data):
        return _listed_items(Path(data), class_names, split, card.multi_label, images=images, columns=columns)
    refuse_listing_flags(data, images, columns)
    if data is not None and card.multi_label:
        raise ImgclsError(f"--data {data}: this model gives several labels per image; evaluate it on a label file "
                          "(a CSV with the labels of each image)")
    if data is None:
        run_dir = run_dir_of(checkpoint["path"])
        source = run_source(run_dir, class_names)
        if not source.items.get(split):
            raise ImgclsError(f"{run_dir}: the run has no {split} images; choose another --split")
        return source.root, source.items[split], split
    root = Path(data).expanduser()
    if not root.is_dir():
        raise ImgclsError(f"--data {root}: {'is a file' if root.exists() else 'folder not found'}; "
                          "expected a folder of class folders (or with train/val/test folders)")
    layout = scan_layout(root)
    split_dirs = layout.split_dirs
    if split_dirs and split not in split_dirs:
        raise ImgclsError(f"--data {root}: has {sorted(split_dirs)} folder(s) but no {split} folder; "
                          f"choose --split {' or '.join(sorted(split_dirs))}")
    where = str(root) if not split_dirs else f"{root} ({layout.where(split)})"
    per_class = layout.trees[split if split_dirs else None]
    unknown = sorted(set(per_class) - set(class_names))
    if unknown:
        raise ImgclsError(f"--data {where}: class folder(s) {unknown} are not classes of this model "
                          f"({', '.join(class_names)}); evaluate on a folder with the same class names")
    index = {name: i for i, name in enumerate(class_names)}
    items = [(str(p.relative_to(root)), index[c]) for c, files in sorted(per_class.items()) for p in files]
    if not items:
        raise ImgclsError(f"--data {where}: no images found in class folders")
    return root, items, split if split_dirs else "all"


def _listed_items(path: Path, class_names: list[str], split: str, multi_label: bool = False, *, images=None,
                  columns: str | None = None) -> tuple[Path, list[tuple[str, int]], str]:
    """A label file's images (relative to ``images``, default its folder): the rows of ``split`` where it has a split
    column, else all. For a multi-label model each label is the tuple of the image's label indices
    (``dataset_labels`` makes the loaders' multi-hot vectors of them)."""
    from ..data.folders import listed_rows

    root, _, listed = listed_rows(path, images=images, columns=columns, multi_label=multi_label or None)
    rows = [(rel, label, split) for _, rel, label, split in listed]
    named = {name for _, label, _ in rows for name in (label if multi_label else (label,))}
    unknown = sorted(named - set(class_names))
    if unknown:
        kind = "labels" if multi_label else "classes"
        raise ImgclsError(f"--data {path}: label(s) {unknown} are not {kind} of this model ({', '.join(class_names)})")
    splits = {s for _, _, s in rows}
    if splits != {None} and split not in splits:
        raise ImgclsError(f"--data {path}: its split column has no {split} rows; choose --split "
                          f"{' or '.join(sorted(s for s in splits if s))}")
    index = {name: i for i, name in enumerate(class_names)}
    chosen = [(rel, tuple(index[n] for n in label) if multi_label else index[label])
              for rel, label, s in rows if s is None or s == split]
    return root, chosen, split if splits != {None} else "all"


def dataset_labels(checkpoint: dict, labels: list) -> list:
    """Labels as the loaders take them: class indices, or a multi-label model's multi-hot vectors (from each
    image's tuple of label indices)."""
    from ..data.folders import multi_hot

    card = card_of(checkpoint)
    if card.multi_label and labels and isinstance(labels[0], (tuple, list)):
        return list(multi_hot(labels, len(card.class_names)))
    return labels


def evaluate_checkpoint_on(checkpoint: dict, root: Path, items: list[tuple[str, int]], split: str, *,
                           tta: bool = False, device: torch.device | str = "cpu", runtime: str = "auto",
                           batch_size: int = 32, workers: int = 0, progress: bool = False) -> EvalResult:
    """Logits of every image through the one inference path, and the evaluation record (with the open-set block:
    the share --reject rejects here)."""
    out = checkpoint_logits(checkpoint, [Path(root) / rel for rel, _ in items], [label for _, label in items],
                            tta=tta, device=device, runtime=runtime, batch_size=batch_size, workers=workers,
                            progress=progress, desc=split)
    if not len(out):
        raise ImgclsError("none of the images could be read; see the warnings above")
    paths = [items[i][0] for i in out.indices]
    card = card_of(checkpoint)
    if card.multi_label:
        metrics = multi_label_record(checkpoint, root, split, tta, out.labels, out.logits,
                                     skipped=sorted(set(rel for rel, _ in items) - set(paths)))
        metrics["open_set"] = open_set_block(checkpoint, out)
        return EvalResult(metrics, list(card.class_names), paths, out.labels, sigmoid(out.logits), logits=out.logits,
                          familiarity=out.familiarity)
    probs = softmax(out.logits, card.temperature)
    metrics = evaluation_record(checkpoint, root, split, tta, card.temperature, paths, out.labels, probs,
                                skipped=sorted(set(rel for rel, _ in items) - set(paths)))
    metrics["open_set"] = open_set_block(checkpoint, out)
    return EvalResult(metrics, list(card.class_names), paths, out.labels, probs, logits=out.logits,
                      familiarity=out.familiarity)


def checkpoint_logits(checkpoint: dict, paths: list[Path], labels: list[int], *, tta: bool = False, device="cpu",
                      runtime: str = "auto", batch_size: int = 32, workers: int = 0, progress: bool = False,
                      desc: str = "val", runner=None):
    """predict_logits over image files with the checkpoint's eval transform (unreadable files are skipped), on
    the checkpoint's own runner unless ``runner`` is given."""
    from ..data.geometry import draft_size_for
    from ..data.loaders import ImageDataset, make_loader
    from ..data.transforms import eval_transform
    from ..runtime.inference import predict_logits
    from ..runtime.pytorch import checkpoint_runner

    preprocess = card_of(checkpoint).preprocess
    dataset = ImageDataset(paths, dataset_labels(checkpoint, labels), eval_transform(preprocess),
                           draft_size=draft_size_for(preprocess))
    runner = runner or checkpoint_runner(checkpoint, device=device, kind=runtime)
    return predict_logits(runner, make_loader(dataset, batch_size=batch_size, shuffle=False, workers=workers),
                          tta=tta, progress=progress, desc=desc)


def fit_checkpoint_familiarity(checkpoint: dict, root: Path, items: list[tuple[str, int]], *, device="cpu",
                               runtime: str = "auto", batch_size: int = 32, workers: int = 0,
                               progress: bool = False) -> dict | None:
    """The familiarity score's statistics (models/familiarity.fit_familiarity) for the checkpoint's network, from
    the pooled features and logits of up to FAMILIARITY_IMAGES training images seen as predict sees them; None
    when there are none, or the network's head does more than a linear layer on its pooled features."""
    from ..models.factory import model_from_checkpoint
    from ..models.familiarity import (
        FeaturesAndLogits,
        fit_familiarity,
        head_reproduces_logits,
    )
    from ..runtime.pytorch import fastest_runner

    card = card_of(checkpoint)
    model = model_from_checkpoint(checkpoint)
    input_size = card.input_size
    if len(items) < 2 or not head_reproduces_logits(model, input_size):
        return None
    started = time.perf_counter()
    chosen = np.linspace(0, len(items) - 1, min(len(items), FAMILIARITY_IMAGES)).round().astype(int)
    # a few images run at once in PyTorch; many repay an ONNX export and the race between runtimes
    kind = runtime if len(chosen) > FEW_IMAGES else "torch"
    runner = fastest_runner(FeaturesAndLogits(model), input_size, device=device, kind=kind)
    out = checkpoint_logits(checkpoint, [Path(root) / items[i][0] for i in chosen], [items[i][1] for i in chosen],
                            batch_size=batch_size, workers=workers, progress=progress, desc="familiarity",
                            runner=runner)
    classes = len(card.class_names)
    if len(out) < 2:
        return None
    # multi-label: each image counts for its most likely label (the score's class means need one label an image)
    labels = out.logits[:, -classes:].argmax(1) if card.multi_label else out.labels
    stats = fit_familiarity(out.logits[:, :-classes], labels, classes)
    log.info(f"Open-set rejection: familiarity score fitted on the pooled features of {len(out)} training images "
             f"({stats['means'].shape[1]} numbers each, {stats['basis'].shape[1]} principal directions) in "
             f"{time.perf_counter() - started:.1f}s")
    return stats


def evaluation_record(checkpoint: dict, root: Path, split: str, tta: bool, temperature: float, paths: list[str],
                      y_true, probs, skipped: list[str]) -> dict:
    """metrics.json, and results.json's "test": what was evaluated, then every number of evaluation_report."""
    class_names = list(card_of(checkpoint).class_names)
    present = set(np.asarray(y_true).tolist())
    missing = [name for i, name in enumerate(class_names) if i not in present]
    return {"weights": str(Path(checkpoint["path"]).resolve()), "epoch": checkpoint.get("epoch"),
            "data": str(Path(root).resolve()), "split": split, "tta": tta, "temperature": round(temperature, 6),
            **evaluation_report(y_true, probs, class_names),
            "missing_classes": missing, "skipped_images": skipped,
            "most_confident_mistakes": mistake_rows(paths, y_true, probs, class_names, GALLERY_SIZE)}


def multi_label_record(checkpoint: dict, root: Path, split: str, tta: bool, targets, logits, skipped: list[str]
                       ) -> dict:
    """metrics.json and results.json's "test" of a multi-label model: what was evaluated, then every number of
    metrics.multilabel_report at the checkpoint's thresholds."""
    card = card_of(checkpoint)
    class_names = list(card.class_names)
    targets = np.asarray(targets).reshape(-1, len(class_names))
    missing = [name for i, name in enumerate(class_names) if not targets[:, i].any()]
    return {"weights": str(Path(checkpoint["path"]).resolve()), "epoch": checkpoint.get("epoch"),
            "data": str(Path(root).resolve()), "split": split, "tta": tta,
            **multilabel_report(targets, sigmoid(logits), class_names, card.thresholds,
                                loss=binary_cross_entropy(logits, targets)),
            "missing_classes": missing, "skipped_images": skipped}


def store_thresholds(path: str | os.PathLike, result: EvalResult, checkpoint: dict) -> ModelCard:
    """Each label's threshold with the best F1 on these validation outputs, stored in the checkpoint's card (the
    one place predict, serve and the exports read them from); ``result``'s metrics are then at those thresholds."""
    thresholds = best_f1_thresholds(result.y_true, result.probs)
    card = update_card(path, thresholds=thresholds)
    result.metrics = multi_label_record(checkpoint | card.to_dict(), Path(result.metrics["data"]),
                                        result.metrics["split"], result.metrics["tta"], result.y_true, result.logits,
                                        result.metrics["skipped_images"]) | {"open_set": result.metrics["open_set"]}
    log.info(f"Thresholds: each label's best F1 on {len(result.y_true)} validation images ("
             + ", ".join(f"{name} {t:.2f}" for name, t in list(zip(card.class_names, thresholds))[:6])
             + (", ..." if len(thresholds) > 6 else "") + f"), stored in {Path(path).name}")
    return card


def evaluate(weights: str | os.PathLike, data: str | os.PathLike | None = None, split: str = "val", *,
             tta: bool = False, calibrate: bool = False, batch_size: int = 32, workers: int | None = None,
             device: str = "auto", runtime: str = "auto", errors: int = GALLERY_SIZE, save: bool = True,
             ood: str | os.PathLike | None = None, progress: bool = True, multi_label: bool | None = None,
             images: str | os.PathLike | None = None, columns: str | None = None) -> EvalResult:
    """Evaluate a checkpoint exactly as ``imgcls val`` does.

    ``imgcls.evaluate("runs/train/weights/best.pt")`` scores the run's own validation split and
    writes RUN/val (or val2, ...): metrics.json, predictions_<split>.csv and the plots. ``calibrate`` fits a
    temperature and the open-set rejection threshold on this split and stores them in the checkpoint.
    metrics.json's "open_set" gives the share of these images ``--reject`` would reject; with ``ood`` (a folder
    of images of none of the classes) also the AUROC of the open-set score and the false-accept rate. A multi-label
    model (its card's thresholds) reads several labels per image from a label file; ``multi_label`` True or False
    says which kind of model the caller expects. A label file as ``data`` has its images under ``images`` (default:
    its folder) and its columns named by ``columns`` (PATH,LABEL) where its header does not tell them.
    """
    from ..data.cores import default_workers
    from ..data.folders import SPLITS
    from ..runtime.device import select_device

    setup_logging()
    if split not in SPLITS:
        raise ImgclsError(f"--split {split!r}: choose train, val or test")
    if calibrate and split != "val":
        raise ImgclsError(f"--calibrate fits the temperature on the validation split; drop --split {split}")
    _check_positive(batch_size=batch_size, errors=errors + 1)
    ood_paths = ood_images(ood) if ood is not None else None
    checkpoint = load_checkpoint(weights)
    if multi_label is not None and multi_label != card_of(checkpoint).multi_label:
        raise ImgclsError(f"--{'' if multi_label else 'no-'}multi-label: {weights} gives "
                          f"{'one label' if multi_label else 'several labels'} per image; drop the flag")
    if calibrate and card_of(checkpoint).multi_label:
        raise ImgclsError("--calibrate fits a softmax temperature; this model gives several labels per image, each "
                          "with its threshold tuned on val by train: drop --calibrate")
    listing = {"images": images, "columns": columns}  # a label file's images folder and columns
    root, items, split = eval_items(checkpoint, data, split, **listing)
    torch_device = select_device(device)
    workers = default_workers() if workers is None else workers
    if calibrate:
        checkpoint["familiarity"] = _familiarity_for_calibration(checkpoint, data, listing, torch_device, runtime,
                                                                 batch_size, workers, progress)
    log.info(f"Evaluating {checkpoint['path']} on {len(items)} images of {root} (split {split})"
             + (" with flip TTA" if tta else ""))
    result = evaluate_checkpoint_on(checkpoint, root, items, split, tta=tta, device=torch_device, runtime=runtime,
                                    batch_size=batch_size, workers=workers, progress=progress)
    if result.metrics["missing_classes"]:
        log.warning(f"WARNING: class(es) {result.metrics['missing_classes']} have no images here; their recall, "
                    "ROC AUC and AP are undefined")
    carried = calibrate and attached_export(checkpoint["path"]) is not None
    before = _calibrate(result, checkpoint) if calibrate else None
    if calibrate:
        checkpoint |= store_rejection(checkpoint["path"], result.logits, result.familiarity,
                                      checkpoint.get("familiarity")).to_dict()
    if carried:  # the rewritten best.pt carries its (new) checked export again, as imgcls train left it
        _carry_export(checkpoint["path"], torch_device, runtime)
    ood_out = None
    if ood_paths is not None:
        ood_out = checkpoint_logits(checkpoint, ood_paths, [-1] * len(ood_paths), tta=tta, device=torch_device,
                                    runtime=runtime, batch_size=batch_size, progress=progress, desc="ood",
                                    workers=workers)
    result.metrics["open_set"] = open_set_block(checkpoint, result, ood_out, ood)
    if save:
        result.out_dir = new_run_dir(run_dir_of(checkpoint["path"]), "val")
        result.files = _write_eval_files(result, checkpoint, root, torch_device, errors, before)
    _log_summary(result)
    return result


def _carry_export(path: str | os.PathLike, device, runtime: str) -> None:
    from ..runtime.cards import embed_export
    from ..runtime.pytorch import checkpoint_runner

    calibrated = load_checkpoint(path)
    checkpoint_runner(calibrated, device=device, kind=runtime)  # exports and checks the new network, once
    embed_export(calibrated, path)


def _familiarity_for_calibration(checkpoint: dict, data, listing: dict, device, runtime: str, batch_size: int,
                                 workers: int, progress: bool) -> dict | None:
    """``--calibrate`` refits the familiarity score on training images: the run's own train split, else the train
    folder of --data. Never on the images the threshold is calibrated on (a flat --data folder is all of them):
    without training images the checkpoint keeps the energy score."""
    for source in (None, data) if data is not None else (None,):
        try:
            root, items, split = eval_items(checkpoint, source, "train", **({} if source is None else listing))
        except ImgclsError:
            continue
        if split == "train":
            return fit_checkpoint_familiarity(checkpoint, root, items, device=device, runtime=runtime,
                                              batch_size=batch_size, workers=workers, progress=progress)
    log.info("Open-set rejection: no training images found to fit the familiarity score on; using energy")
    return None


def store_rejection(path: str | os.PathLike, logits: np.ndarray, familiarity: np.ndarray | None = None,
                    stats: dict | None = None, keep: float = REJECT_KEEP) -> ModelCard:
    """Calibrate the open-set threshold on validation outputs (keeping ``keep`` of them) and store it in the
    checkpoint's card atomically, with the familiarity score's statistics ``stats`` (None removes them), other
    keys kept; exports carry both from there (deploy/formats.export_metadata, models/familiarity.Scored)."""
    spec = rejection_spec(logits, keep, familiarity=familiarity if stats else None)
    card = update_card(path, familiarity=stats, rejection=spec)
    log.info(f"Open-set rejection: {spec['score']} threshold {spec['threshold']:.4f} keeps {keep:.0%} of "
             f"{spec['images']} validation images (stored in {Path(path).name}; predict/serve --reject use it)")
    return card


def ood_images(folder: str | os.PathLike) -> list[Path]:
    """Every image under an out-of-distribution folder (searched recursively, hidden entries skipped)."""
    from ..data.folders import is_hidden
    from ..data.images import is_image_path

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ImgclsError(f"--ood {root}: {'is a file' if root.exists() else 'folder not found'}; expected a folder "
                          "of images of none of the model's classes")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
        found += [Path(dirpath) / n for n in sorted(filenames) if not is_hidden(n) and is_image_path(Path(n))]
    if not found:
        raise ImgclsError(f"--ood {root}: no images found")
    return found


def open_set_block(checkpoint: dict, out, ood_out=None, ood=None) -> dict:
    """metrics.json's "open_set": the share of these images (``out``: Logits or EvalResult) --reject rejects at the
    stored threshold (calibrated here when the checkpoint has none), and with OOD images (``ood_out``) the AUROC
    and the false-accept rate."""
    stored = card_of(checkpoint).rejection
    spec = usable_spec(stored, out.familiarity is not None) if stored else \
        rejection_spec(out.logits, REJECT_KEEP, familiarity=out.familiarity)
    threshold = threshold_for(spec)
    scores = open_set_score(out.logits, spec["score"], out.familiarity)
    block = {"score": spec["score"], "threshold": round(threshold, 6), "keep_on_val": spec["keep"],
             "threshold_from": "checkpoint" if stored else "these images",
             "rejected": round(float((scores < threshold).mean()), 6) if len(scores) else None}
    if ood_out is not None:
        report = open_set_report(scores, open_set_score(ood_out.logits, spec["score"], ood_out.familiarity), threshold)
        block |= {"ood": str(Path(ood).resolve()), "auroc": report["auroc"],
                  "false_accept_rate": report["false_accept_rate"], "ood_images": report["ood_images"]}
    return block


def _check_positive(**values) -> None:
    for key, value in values.items():
        if value < 1:
            raise ImgclsError(f"--{key.replace('_', '-')} {value}: must be 1 or more")


def _calibrate(result: EvalResult, checkpoint: dict) -> np.ndarray:
    """Fit the temperature on these logits, store it in the checkpoint; returns the probabilities before."""
    old = card_of(checkpoint).temperature
    temperature = fit_temperature(result.logits, result.y_true)
    before, result.probs = result.probs, softmax(result.logits, temperature)
    y = result.y_true
    calibration = {
        "temperature_before": round(old, 6), "temperature": round(temperature, 6),
        "ece_before": round(expected_calibration_error(y, before), 6),
        "ece_after": round(expected_calibration_error(y, result.probs), 6),
        "log_loss_before": round(log_loss(y, before), 6), "log_loss_after": round(log_loss(y, result.probs), 6)}
    result.metrics = evaluation_record(checkpoint, Path(result.metrics["data"]), result.metrics["split"],
                                       result.metrics["tta"], temperature, result.paths, y, result.probs,
                                       result.metrics["skipped_images"]) | {"calibration": calibration}
    update_card(checkpoint["path"], temperature=float(temperature))
    log.info(f"Calibration: temperature {temperature:.4f} stored in {checkpoint['path']}; ECE "
             f"{calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f}, log loss "
             f"{calibration['log_loss_before']:.4f} -> {calibration['log_loss_after']:.4f}")
    return before


def _write_eval_files(result: EvalResult, checkpoint: dict, root: Path, device, errors: int, before) -> list[Path]:
    """RUN/valN: predictions_<split>.csv, the figures (reporting/evaluation.py), then metrics.json."""
    from ..models.factory import model_from_checkpoint
    from ..record.predictions import write_predictions_csv
    from ..record.results import write_metrics
    from ..reporting.evaluation import draw_evaluation

    out, names, y, p = result.out_dir, result.class_names, result.y_true, result.probs
    predictions = out / f"predictions_{result.metrics['split']}.csv"
    thresholds = card_of(checkpoint).thresholds
    write_predictions_csv(predictions, result.paths, y, p, names, thresholds=thresholds)
    if thresholds is not None:
        from ..reporting.multilabel import plot_label_pr

        figure = out / f"pr_{result.metrics['split']}.png"
        plot_label_pr(y, p, names, thresholds, figure, f"Precision-recall per label, {result.metrics['split']}")
        return [write_metrics(out, result.metrics), predictions, figure]
    mistakes = mistake_rows(result.paths, y, p, names, errors)
    figures = draw_evaluation(out, result.metrics, y, p, names, before=before, mistakes=mistakes, root=root,
                              model=model_from_checkpoint(checkpoint).to(device),
                              preprocess=card_of(checkpoint).preprocess, device=device)
    return [write_metrics(out, result.metrics), predictions, *figures]


def open_set_line(block: dict, split: str) -> str:
    where = "the checkpoint's threshold" if block["threshold_from"] == "checkpoint" else \
        "a threshold calibrated on these images (the checkpoint has none: `imgcls val --calibrate` stores one)"
    line = (f"open set ({block['score']} score): --reject rejects {block['rejected']:.1%} of {split} at {where} "
            f"{block['threshold']:.4f}")
    if "auroc" in block:
        line += (f"; {block['ood_images']} OOD images: AUROC {block['auroc']:.4f}, false-accept rate "
                 f"{block['false_accept_rate']:.1%}")
    return line


def _log_summary(result: EvalResult) -> None:
    m = result.metrics
    if m.get("multi_label"):
        _log_multi_label_summary(result)
        return
    macro = m["macro_avg"]
    log.info(f"accuracy {m['accuracy']:.4f}  top-5 {m['top5_accuracy']:.4f}  macro-F1 {macro['f1']:.4f}  "
             f"log loss {m['log_loss']:.4f}  ECE {m['ece']:.4f}")
    width = max(len(n) for n in result.class_names + ["class"])
    log.info(f"{'class':<{width}}  precision  recall  specificity     F1  support  ROC AUC     AP")
    for name, row in m["per_class"].items():
        fmt = {k: ("    n/a" if v is None else f"{v:7.4f}") for k, v in row.items() if k != "support"}
        log.info(f"{name:<{width}}  {fmt['precision']:>9}  {fmt['recall']:>6}  {fmt['specificity']:>11}  "
                 f"{fmt['f1']:>5}  {row['support']:>7}  {fmt['roc_auc']:>7}  {fmt['average_precision']:>5}")
    if m["most_confused_pairs"]:
        top = ", ".join(f"{p['true']} -> {p['predicted']} ({p['count']})" for p in m["most_confused_pairs"][:3])
        log.info(f"most confused: {top}")
    _log_rejection_and_folder(result)


def _log_rejection_and_folder(result: EvalResult) -> None:
    """The end of both summaries: the open-set line when --reject was scored, and where the results went."""
    m = result.metrics
    if m.get("open_set"):
        log.info(open_set_line(m["open_set"], m["split"]))
    if result.out_dir is not None:
        log.info(f"Results saved to {result.out_dir}")


def _log_multi_label_summary(result: EvalResult) -> None:
    m = result.metrics
    log.info(f"mAP {m['mAP']:.4f}  sample-F1 {m['sample_f1']:.4f}  subset accuracy {m['subset_accuracy']:.4f}  "
             f"Hamming loss {m['hamming_loss']:.4f}  labels per image {m['label_cardinality']['data']:.2f} "
             f"(predicted {m['label_cardinality']['predicted']:.2f})")
    width = max(len(n) for n in result.class_names + ["label"])
    log.info(f"{'label':<{width}}  threshold  precision  recall     F1     AP  ROC AUC  support")
    for name, row in m["per_class"].items():
        fmt = {k: ("    n/a" if v is None else f"{v:7.4f}") for k, v in row.items() if k != "support"}
        log.info(f"{name:<{width}}  {fmt['threshold']:>9}  {fmt['precision']:>9}  {fmt['recall']:>6}  {fmt['f1']:>5}  "
                 f"{fmt['average_precision']:>5}  {fmt['roc_auc']:>7}  {row['support']:>7}")
    _log_rejection_and_folder(result)
