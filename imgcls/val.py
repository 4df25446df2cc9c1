"""``imgcls val``: evaluate a checkpoint on a split, analyse its mistakes and calibrate its confidence."""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from . import data as data_mod
from .errors import ImgclsError
from .metrics import evaluation_report, expected_calibration_error, fit_temperature, log_loss, softmax
from .plots import write_predictions_csv
from .runs import load_checkpoint, new_run_dir, run_dir_of, save_checkpoint, write_json

log = logging.getLogger("imgcls")

GALLERY_SIZE = 16


@dataclass
class EvalResult:
    """What ``imgcls.evaluate`` measured; ``metrics`` is exactly the content of metrics.json."""

    metrics: dict
    class_names: list[str]
    paths: list[str]              # image paths relative to the data root, in prediction order
    y_true: np.ndarray
    probs: np.ndarray             # softmax(logits / temperature), averaged over the flip with tta
    out_dir: Path | None = None   # RUN/val, RUN/val2, ... (None when nothing was saved)
    files: list[Path] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.metrics["accuracy"]

    @property
    def temperature(self) -> float:
        return self.metrics["temperature"]


def _run_data_root(run_dir: Path) -> Path:
    args_file = run_dir / "args.yaml"
    if not args_file.exists():
        raise ImgclsError(f"{run_dir}: no args.yaml next to the weights, so the run's data is unknown; pass --data DIR")
    args = yaml.safe_load(args_file.read_text(encoding="utf-8")) or {}
    if not args.get("data"):
        raise ImgclsError(f"{args_file}: no data folder recorded; pass --data DIR")
    return Path(args["data"])


def resolve_eval_items(checkpoint: dict, data: str | os.PathLike | None, split: str
                       ) -> tuple[Path, list[tuple[str, int]], list[str], str]:
    """The images to evaluate: (data root, [(relative path, label)], classes with no image, split name).

    Without ``data``: the run's own split (split.csv, or the split folders of args.yaml's data).
    With ``data``: its ``split`` folder when it has split folders, otherwise the whole tree of class
    folders (split name "all"). Every class folder must be one of the checkpoint's classes.
    """
    class_names = checkpoint["class_names"]
    if data is None:
        run_dir = run_dir_of(checkpoint["path"])
        root = _run_data_root(run_dir)
        if (run_dir / "split.csv").exists():
            source = data_mod.read_split_csv(run_dir / "split.csv", root, class_names)
            items = source.items.get(split, [])
            if not items:
                raise ImgclsError(f"{run_dir / 'split.csv'}: the run has no {split} images; choose another --split")
            return root, items, _absent(class_names, items), split
        if not root.is_dir():
            raise ImgclsError(f"{run_dir / 'args.yaml'}: the run's data folder {root} is gone; pass --data DIR")
        folder = data_mod.find_split_dirs(root).get(split)
        if folder is None:
            raise ImgclsError(f"{root}: the run's data has no {split} folder; choose another --split or pass --data")
        where = f"{root} ({folder.name}/)"
    else:
        root = Path(data).expanduser()
        if not root.is_dir():
            raise ImgclsError(f"--data {root}: {'is a file' if root.exists() else 'folder not found'}; "
                              "expected a folder of class folders (or with train/val/test folders)")
        split_dirs = data_mod.find_split_dirs(root)
        if split_dirs and split not in split_dirs:
            raise ImgclsError(f"--data {root}: has {sorted(split_dirs)} folder(s) but no {split} folder; "
                              f"choose --split {' or '.join(sorted(split_dirs))}")
        folder = split_dirs.get(split, root)
        split = split if split_dirs else "all"
        where = str(root) if folder == root else f"{root} ({folder.name}/)"
    per_class, _ = data_mod.list_class_images(folder)
    unknown = sorted(set(per_class) - set(class_names))
    if unknown:
        raise ImgclsError(
            f"--data {where}: class folder(s) {unknown} are not classes of this model "
            f"({', '.join(class_names)}); evaluate on a folder with the same class names"
        )
    index = {name: i for i, name in enumerate(class_names)}
    items = [(str(p.relative_to(root)), index[c]) for c, files in sorted(per_class.items()) for p in files]
    if not items:
        raise ImgclsError(f"--data {where}: no images found in class folders")
    return root, items, _absent(class_names, items), split


def _absent(class_names: list[str], items: list[tuple[str, int]]) -> list[str]:
    present = {label for _, label in items}
    return [name for i, name in enumerate(class_names) if i not in present]


@torch.inference_mode()
def predict_logits(model, paths: list[Path], preprocess: dict, *, device: torch.device, batch_size: int = 32,
                   workers: int = 0, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Logits of every readable image and the indices (into ``paths``) they belong to.

    With ``tta`` the logits of the image and of its horizontal flip are averaged. Averaging logits
    rather than probabilities keeps the argmax and lets one temperature calibrate the result.
    """
    from .transforms import eval_transform

    dataset = data_mod.ImageDataset(paths, [0] * len(paths), eval_transform(preprocess))
    loader = data_mod.make_loader(dataset, batch_size=batch_size, shuffle=False, workers=workers)
    model.eval()
    logits, indices = [], []
    for batch in loader:
        if batch is None:
            continue
        images, _, index = batch
        images = images.to(device)
        out = model(images).float()
        if tta:
            out = (out + model(torch.flip(images, dims=[3])).float()) / 2
        logits.append(out.cpu())
        indices.append(index)
    if not logits:
        raise ImgclsError("none of the images could be read; see the warnings above")
    return torch.cat(logits).numpy().astype(np.float64), torch.cat(indices).numpy()


def most_confident_mistakes(y_true, probs, n: int = GALLERY_SIZE) -> np.ndarray:
    """Indices of the wrong predictions, the most confident first."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs)
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    order = np.argsort(-probs[wrong, predicted[wrong]], kind="stable")
    return wrong[order][:n]


def error_gallery(model, root: Path, rel_paths: list[str], y_true, probs, class_names: list[str], preprocess: dict,
                  path: Path, *, device: torch.device, title: str, n: int = GALLERY_SIZE) -> list[dict]:
    """Draw the ``n`` most confident mistakes with Grad-CAM for the predicted class into ``path``.

    Returns the mistakes as rows (path, true, predicted, confidence).
    """
    from .gradcam import grad_cam, overlay
    from .images import ImageReadError, load_image
    from .plots import plot_error_gallery
    from .transforms import eval_transform

    transform = eval_transform(preprocess)
    mean = np.array(preprocess["mean"])[:, None, None]
    std = np.array(preprocess["std"])[:, None, None]
    rows, tensors = [], []
    for i in most_confident_mistakes(y_true, probs, n):
        try:
            tensors.append(transform(load_image(root / rel_paths[i])))
        except ImageReadError as e:
            log.warning(f"WARNING: left {rel_paths[i]} out of the error gallery: {e}")
            continue
        predicted = int(np.argmax(probs[i]))
        rows.append({"path": rel_paths[i], "true": class_names[int(y_true[i])], "predicted": class_names[predicted],
                     "confidence": round(float(probs[i][predicted]), 6)})
    tiles = []
    if rows:
        batch = torch.stack(tensors).to(device)
        cams = grad_cam(model, batch, [class_names.index(r["predicted"]) for r in rows])
        for row, tensor, cam in zip(rows, tensors, cams):
            image = np.clip(tensor.numpy() * std + mean, 0, 1).transpose(1, 2, 0)
            tiles.append(dict(row, image=image, heatmap=overlay(image, cam), name=row["path"],
                              cam_empty=not cam.any()))
    plot_error_gallery(tiles, path, title)
    return rows


def _store_temperature(checkpoint_path: str, temperature: float) -> None:
    """Rewrite the checkpoint with its new temperature, atomically, keeping every other key as it was."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    checkpoint["temperature"] = float(temperature)
    save_checkpoint(checkpoint_path, checkpoint)


def evaluate(weights: str | os.PathLike, data: str | os.PathLike | None = None, split: str = "val", *,
             tta: bool = False, calibrate: bool = False, batch_size: int = 32, workers: int | None = None,
             device: str = "auto", errors: int = GALLERY_SIZE, save: bool = True) -> EvalResult:
    """Evaluate a checkpoint exactly as ``imgcls val`` does.

    ``imgcls.evaluate("runs/train/weights/best.pt")`` scores the run's own validation split and
    writes RUN/val (or val2, ...): metrics.json, predictions.csv and the plots. ``calibrate`` fits a
    temperature on this split and stores it in the checkpoint.
    """
    from .models import model_from_checkpoint
    from .trainer import select_device, setup_logging

    setup_logging()
    if split not in data_mod.SPLITS:
        raise ImgclsError(f"--split {split!r}: choose train, val or test")
    if calibrate and split != "val":
        raise ImgclsError(f"--calibrate fits the temperature on the validation split; drop --split {split}")
    checkpoint = load_checkpoint(weights)
    class_names = checkpoint["class_names"]
    root, items, missing, split = resolve_eval_items(checkpoint, data, split)
    if missing:
        log.warning(f"WARNING: class(es) {missing} have no images here; their recall, ROC AUC and AP are undefined")
    torch_device = select_device(device)
    model = model_from_checkpoint(checkpoint).to(torch_device)
    workers = data_mod.default_workers() if workers is None else workers
    log.info(f"Evaluating {checkpoint['path']} on {len(items)} images of {root}"
             + f" (split {split})" + (" with flip TTA" if tta else ""))

    logits, kept = predict_logits(model, [root / rel for rel, _ in items], checkpoint["preprocess"],
                                  device=torch_device, batch_size=batch_size, workers=workers, tta=tta)
    rel_paths = [items[i][0] for i in kept]
    y_true = np.array([items[i][1] for i in kept], dtype=np.int64)
    skipped = sorted(set(rel for rel, _ in items) - set(rel_paths))
    old_temperature = float(checkpoint.get("temperature", 1.0))
    probs = softmax(logits, old_temperature)
    calibration = None
    if calibrate:
        temperature = fit_temperature(logits, y_true)
        before = probs
        probs = softmax(logits, temperature)
        calibration = {
            "temperature_before": round(old_temperature, 6), "temperature": round(temperature, 6),
            "ece_before": round(expected_calibration_error(y_true, before), 6),
            "ece_after": round(expected_calibration_error(y_true, probs), 6),
            "log_loss_before": round(log_loss(y_true, before), 6), "log_loss_after": round(log_loss(y_true, probs), 6),
        }
        _store_temperature(checkpoint["path"], temperature)
        log.info(f"Calibration: temperature {temperature:.4f} stored in {checkpoint['path']}; ECE "
                 f"{calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f}, log loss "
                 f"{calibration['log_loss_before']:.4f} -> {calibration['log_loss_after']:.4f}")
    temperature = calibration["temperature"] if calibration else old_temperature

    metrics = {
        "weights": str(checkpoint["path"]), "data": str(root), "split": split, "tta": tta,
        "temperature": round(temperature, 6),
        **evaluation_report(y_true, probs, class_names),
        "missing_classes": missing, "skipped_images": skipped,
    }
    if calibration:
        metrics["calibration"] = calibration
    result = EvalResult(metrics=metrics, class_names=class_names, paths=rel_paths, y_true=y_true, probs=probs)
    if save:
        out = new_run_dir(run_dir_of(checkpoint["path"]), "val")
        result.out_dir = out
        result.files = _write_eval_files(out, result, model, root, checkpoint["preprocess"], torch_device, errors,
                                         before=before if calibration else None)
    _log_summary(result)
    return result


def _write_eval_files(out: Path, result: EvalResult, model, root: Path, preprocess: dict, device, errors: int,
                      before=None) -> list[Path]:
    from .plots import plot_calibration, plot_confusion_matrix, plot_pr, plot_roc

    m, names, y, p = result.metrics, result.class_names, result.y_true, result.probs
    what = f"{m['split']}, {m['images']} images" + (", flip TTA" if m["tta"] else "")
    m["most_confident_mistakes"] = error_gallery(model, root, result.paths, y, p, names, preprocess, out / "errors.png",
                                                 device=device, n=errors,
                                                 title=f"Most confident mistakes ({what})")
    write_predictions_csv(out / "predictions.csv", result.paths, y, p, names)
    files = [
        out / "errors.png", out / "predictions.csv",
        plot_confusion_matrix(m["confusion_matrix"], names, out / "confusion_matrix.png", f"Confusion matrix ({what})"),
        plot_confusion_matrix(m["confusion_matrix"], names, out / "confusion_matrix_normalized.png",
                              f"Confusion matrix, normalised by true class ({what})", normalize=True),
        plot_roc(y, p, names, out / "roc.png", f"ROC one-vs-rest ({what})"),
        plot_pr(y, p, names, out / "pr.png", f"Precision-recall ({what})"),
        plot_calibration(y, p, out / "calibration.png", f"Reliability diagram, T={m['temperature']:.3g} ({what})",
                         before=before),
    ]
    write_json(out / "metrics.json", m)  # last: a folder with metrics.json is complete
    return [out / "metrics.json", *files]


def _log_summary(result: EvalResult) -> None:
    m = result.metrics
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
    if result.out_dir is not None:
        log.info(f"Results saved to {result.out_dir}")


def read_predictions(path: Path, class_names: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """(true labels, probabilities, image paths) of a predictions CSV; None when it is missing or empty."""
    from .plots import read_predictions_csv

    if not path.exists():
        return None
    y_true, probs = read_predictions_csv(path, class_names)
    with open(path, newline="", encoding="utf-8") as f:
        paths = [row["path"] for row in csv.DictReader(f)]
    return (y_true, probs, paths) if paths else None


def analyze_training_run(run_dir: str | os.PathLike, model, device: torch.device, n: int = GALLERY_SIZE) -> Path | None:
    """errors_val.png for a finished run: the best weights' most confident val mistakes, with Grad-CAM.

    Drawn from predictions_val.csv and the images under args.yaml's data folder.
    """
    run_dir = Path(run_dir)
    checkpoint = load_checkpoint(run_dir / "weights" / "best.pt")
    class_names = checkpoint["class_names"]
    found = read_predictions(run_dir / "predictions_val.csv", class_names)
    if found is None:
        return None
    y_true, probs, rel_paths = found
    path = run_dir / "errors_val.png"
    error_gallery(model, _run_data_root(run_dir), rel_paths, y_true, probs, class_names, checkpoint["preprocess"],
                  path, device=device, n=n, title=f"Most confident mistakes, val (best epoch {checkpoint['epoch']})")
    return path
