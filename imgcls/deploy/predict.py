"""``imgcls predict``: label images from a file, folder, glob or list file, with a .pt checkpoint or an .onnx export.

Memory stays bounded on any number of images: paths are listed lazily, decoded a few batches ahead by
threads, and every result is written to the run folder as soon as its batch is done.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import io
import itertools
import logging
import os
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from ..data.geometry import EvalInput, draft_size_for
from ..data.images import (
    MAX_IMAGE_PIXELS,
    ImageReadError,
    as_image,
    load_image,
    reduce_towards,
)
from ..errors import ImgclsError
from ..metrics import labels_present, open_set_score, sigmoid, softmax, threshold_for
from ..runtime.inference import Batcher, predict_logits
from .model import load_model

log = logging.getLogger("imgcls")

LIST_FILE_SUFFIX = ".txt"  # a --source file with this suffix lists one image path per line
_SAVE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}  # --save-img keeps these; others become .png
UNKNOWN = "unknown"  # the label of an image rejected by --reject as unlike the training data


# ---------------------------------------------------------------------------------------------------------
# Results and the Predictor API.


@dataclass(frozen=True)
class Prediction:
    """One image's result. ``path`` is the file, or ``<array 3>`` / ``<PIL.Image 3>`` for in-memory items.

    A failed image has ``error`` set and no label. With rejection on (``reject``), an image that looks unlike the
    training data has ``unknown`` set and the label ``"unknown"``; ``confidence`` and ``topk`` still name the
    closest classes, and ``score`` is its open-set score (higher = more like the training data).

    A multi-label model (``ModelCard.multi_label``) answers with ``labels``, every label whose probability reaches
    its threshold (in the card's label order; none is an answer too), and ``probabilities``, every label's
    sigmoid probability; ``label``, ``confidence`` and ``topk`` stay empty. Rejected, its ``labels`` is
    ``("unknown",)`` and ``probabilities`` still holds every label's.
    """

    path: str
    label: str | None = None                        # the top-1 class, or "unknown" when rejected
    confidence: float | None = None                 # the top-1 class's probability
    class_index: int | None = None                  # None when rejected
    topk: tuple[tuple[str, float], ...] = ()        # (class, probability), most likely first
    error: str | None = None
    unknown: bool = False                           # rejected as unlike the training data (--reject)
    score: float | None = None                      # the open-set score, when rejection is on
    labels: tuple[str, ...] | None = None           # multi-label: the labels present (None: a one-label model)
    probabilities: tuple[tuple[str, float], ...] = ()   # multi-label: (label, probability) of every label

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def multi_label(self) -> bool:
        return self.labels is not None

    def to_dict(self) -> dict:
        rejection = {} if self.score is None else {"unknown": self.unknown, "score": self.score}
        if self.multi_label:
            return {"path": self.path, "labels": list(self.labels) if self.ok else None,
                    "probabilities": dict(self.probabilities), **rejection, "error": self.error}
        return {"path": self.path, "predicted": self.label, "confidence": self.confidence,
                "topk": [{"class": c, "probability": p} for c, p in self.topk], **rejection, "error": self.error}


_SINGLE_ITEM = (str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray)


class Predictor:
    """Label images with a trained model::

        predictor = imgcls.Predictor("runs/train/weights/best.pt")   # or an exported .onnx file
        for p in predictor.predict(["a.jpg", pil_image, numpy_rgb_array]):
            print(p.path, p.label, p.confidence, p.topk)

    Unreadable items give a ``Prediction`` with ``error`` set instead of raising, so one bad file never
    ends a batch. One Predictor may be shared by threads: model calls run one at a time, and calls that
    arrive together are merged into one batch.

    ``reject=True`` labels images unlike the training data ``unknown``, at the threshold calibrated on the
    validation split (keeping 95% of its images); ``reject=0.9`` keeps 90% instead.

    A multi-label model gives every label present and every label's probability (see ``Prediction``): ``topk``
    does not apply to it, and its card's temperature neither (each label has its own sigmoid and threshold).
    """

    def __init__(self, weights: str | os.PathLike, *, device: str = "auto", topk: int = 5, batch_size: int = 32,
                 runtime: str = "auto", max_pixels: int = MAX_IMAGE_PIXELS, reject: bool | float = False):
        if topk < 1:
            raise ImgclsError(f"--topk {topk}: must be 1 or more")
        if batch_size < 1:
            raise ImgclsError(f"--batch-size {batch_size}: must be 1 or more")
        if max_pixels < 1:
            raise ImgclsError(f"--max-pixels {max_pixels}: must be 1 or more")
        keep = rejection_keep(reject)
        self.model = load_model(weights, device, runtime)
        self.threshold = self._threshold(keep) if reject is not False and reject is not None else None
        self.topk = min(topk, len(self.model.card.class_names))
        self.batch_size = batch_size
        self.decode = Decoder(self.model.card.preprocess, max_pixels)
        self._batched = Batcher(self._logits, max_batch=batch_size)

    def _threshold(self, keep: float | None) -> float:
        spec = self.model.usable_rejection
        if not spec:
            raise ImgclsError(f"--reject: {self.model.path.name} holds no rejection threshold (made before imgcls "
                              "calibrated one); run `imgcls val --weights CHECKPOINT --calibrate`, then export again")
        return threshold_for(spec, keep)

    @property
    def rejecting(self) -> bool:
        return self.threshold is not None

    @property
    def class_names(self) -> list[str]:
        return list(self.model.card.class_names)

    @property
    def model_name(self) -> str:
        return self.model.card.model_name

    @property
    def multi_label(self) -> bool:
        return self.model.card.multi_label

    @property
    def runtime(self) -> str:
        return self.model.runtime

    def predict(self, items, *, topk: int | None = None, names: Iterable[str] | None = None) -> list[Prediction]:
        """Predict one item or a list of them: file paths, bytes, PIL images or RGB numpy arrays
        (H x W, H x W x 3 or 4; uint8, or float in 0..1). ``names`` label the results instead of the paths."""
        items = [items] if isinstance(items, _SINGLE_ITEM) else items
        return list(self.predict_iter(items, topk=topk, names=names))

    def predict_iter(self, items: Iterable, *, topk: int | None = None,
                     names: Iterable[str] | None = None) -> Iterator[Prediction]:
        """Like ``predict`` but lazy: one batch in memory at a time."""
        names = iter(names) if names is not None else None
        batch: list[tuple[str, np.ndarray | None, str | None]] = []
        for number, item in enumerate(items):
            name, array, error = self._prepare(number, item)
            batch.append((next(names, name) if names is not None else name, array, error))
            if len(batch) == self.batch_size:
                yield from self._run_batch(batch, topk)
                batch = []
        if batch:
            yield from self._run_batch(batch, topk)

    def predict_stream(self, source: str | os.PathLike | list[str], *, workers: int = 0, topk: int | None = None,
                       exclude: str | os.PathLike | None = None) -> Iterator[Prediction]:
        """Predict every file a source names (an image, a folder searched recursively, a glob or a .txt list; or a
        list of paths), in source order, with ``workers`` threads decoding the next batches while the model runs
        this one.

        Threads rather than processes: Pillow and numpy release the GIL while they decode and resize, and a
        decoded batch needs no copy between processes; at most ``workers + 1`` batches wait decoded, so memory
        stays bounded on any number of files.
        """
        paths = source if isinstance(source, (SourcePaths, list)) else SourcePaths(source, exclude=exclude)
        batches = _chunks(iter(paths), self.batch_size)
        if workers < 1:
            for batch in batches:
                yield from self._run_batch([_decode_path(self.decode, path) for path in batch], topk)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers, thread_name_prefix="imgcls-decode") as pool:
            decode = lambda batch: [_decode_path(self.decode, path) for path in batch]  # noqa: E731
            waiting = deque(pool.submit(decode, batch) for batch in itertools.islice(batches, workers + 1))
            while waiting:
                done = waiting.popleft().result()
                waiting.extend(pool.submit(decode, batch) for batch in itertools.islice(batches, 1))
                yield from self._run_batch(done, topk)

    def predict_decoded(self, arrays: list[np.ndarray], names: list[str], *,
                        topk: int | None = None) -> list[Prediction]:
        """Predictions for images already turned into model inputs by ``self.decode`` (``imgcls serve`` decodes
        each upload as it arrives and keeps only this small array)."""
        batch = [(name, array, None) for name, array in zip(names, arrays, strict=True)]
        return [p for start in range(0, len(batch), self.batch_size)
                for p in self._run_batch(batch[start:start + self.batch_size], topk)]

    def _prepare(self, number: int, item) -> tuple[str, np.ndarray | None, str | None]:
        name = _item_name(number, item)
        try:
            return name, self.decode(item), None
        except ImageReadError as e:
            return name, None, str(e)

    def watch_batches(self, callback) -> None:
        """Call ``callback(rows)`` with the number of images of each model call (merged requests count as one
        call), as ``imgcls serve`` does for its batch-size metric."""
        self._batched.on_batch = callback

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits of a preprocessed batch. Threads share the model: calls that arrive while one runs are merged
        into the next batch."""
        return self.outputs(images)[0]

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, familiarity scores) of a preprocessed batch, the scores empty when the network gives none;
        merged with other threads' calls like ``logits``."""
        return self._batched(images)

    def _logits(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The one inference path: (logits, familiarity scores, empty when the network gives none)."""
        no_labels = np.full(len(images), -1, dtype=np.int64)
        out = predict_logits(self.model.runner, [(images, no_labels, np.arange(len(images)))])
        return out.logits, out.familiarity if out.familiarity is not None else np.zeros(0, np.float32)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Probabilities of a preprocessed batch: the one inference path, then the temperature's softmax; each
        label's sigmoid for a multi-label model."""
        logits = self.logits(images)
        return sigmoid(logits) if self.multi_label else softmax(logits, self.model.card.temperature)

    def _run_batch(self, batch, topk: int | None) -> list[Prediction]:
        good = [array for _, array, _ in batch if array is not None]
        logits, familiarity = self.outputs(np.stack(good)) if good else \
            (np.zeros((0, len(self.class_names)), np.float32), np.zeros(0, np.float32))
        scores = open_set_score(logits, self.model.usable_rejection["score"], familiarity) if self.rejecting \
            else None
        answers = iter(self._label_sets(logits) if self.multi_label else self._ranked(logits, topk))
        results, row = [], 0
        for name, array, error in batch:
            if array is None:
                results.append(Prediction(path=name, error=error, labels=() if self.multi_label else None))
                continue
            found = dataclasses.replace(next(answers), path=name)
            if scores is not None:
                unknown = bool(scores[row] < self.threshold)
                rejected = {"labels": (UNKNOWN,)} if self.multi_label else {"label": UNKNOWN, "class_index": None}
                found = dataclasses.replace(found, unknown=unknown, score=round(float(scores[row]), 6),
                                            **(rejected if unknown else {}))
            results.append(found)
            row += 1
        return results

    def _ranked(self, logits: np.ndarray, topk: int | None) -> list[Prediction]:
        """One-label answers: the top-k classes of the temperature's softmax."""
        k = min(topk or self.topk, len(self.class_names))
        probs = softmax(logits, self.model.card.temperature) if len(logits) else logits
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        answers = []
        for row, ranked in enumerate(order):
            top = tuple((self.class_names[j], round(float(probs[row, j]), 6)) for j in ranked)
            answers.append(Prediction(path="", label=top[0][0], confidence=top[0][1], class_index=int(ranked[0]),
                                      topk=top))
        return answers

    def _label_sets(self, logits: np.ndarray) -> list[Prediction]:
        """Multi-label answers: every label's sigmoid probability, and the labels present by the one decision rule
        (metrics.labels_present at the card's thresholds)."""
        probs = sigmoid(logits)
        present = labels_present(probs, self.model.card.thresholds)
        names = self.class_names
        return [Prediction(path="", labels=tuple(c for c, on in zip(names, row) if on),
                           probabilities=tuple((c, round(float(p), 6)) for c, p in zip(names, probs[i])))
                for i, row in enumerate(present)]


def rejection_keep(reject: bool | float | None) -> float | None:
    """The share of familiar images --reject keeps: None for the calibrated one (``True``), else the number."""
    if reject is None or isinstance(reject, bool):
        return None
    if not 0 < float(reject) < 1:
        raise ImgclsError(f"--reject {reject}: the share of familiar images to keep, between 0 and 1 (e.g. 0.95); "
                          "or --reject alone for the share calibrated on the validation split")
    return float(reject)


def _item_name(number: int, item) -> str:
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, Image.Image):
        return f"<PIL.Image {number}>"
    if isinstance(item, np.ndarray):
        return f"<array {number}>"
    if isinstance(item, (bytes, bytearray)):
        return f"<bytes {number}>"
    raise TypeError(f"item {number}: expected a path, bytes, a PIL image or a numpy array, not {type(item).__name__}")


class Decoder:
    """An image (path, bytes, PIL image or array) to the model's input array, exactly as evaluation does it:
    a large image reduced while it is read (JPEG draft mode, else a box filter), then the eval transform."""

    def __init__(self, preprocess: dict, max_pixels: int = MAX_IMAGE_PIXELS):
        self.transform = EvalInput(preprocess)
        self.draft_size = draft_size_for(preprocess)
        self.max_pixels = max_pixels

    def __call__(self, item) -> np.ndarray:
        if isinstance(item, (str, os.PathLike, bytes, bytearray)):
            image = load_image(bytes(item) if isinstance(item, bytearray) else item, draft_size=self.draft_size,
                               max_pixels=self.max_pixels)
        else:  # an image already in memory is reduced the same way, so it gets the same answer as its file
            image = reduce_towards(as_image(item), self.draft_size)
        return self.transform(image)


# ---------------------------------------------------------------------------------------------------------
# Sources: what --source names, listed lazily and in a stable order.


class SourcePaths:
    """The files a --source names: an image file, a folder (recursive), a glob, or a .txt list of paths.

    Iterating walks the source again each time and never holds the whole list. Hidden files and folders
    (names starting with '.') are skipped in folders; everything else is tried, so a non-image file gets
    an error entry instead of being silently ignored. Paths in a list file are relative to the list file.
    """

    def __init__(self, source: str | os.PathLike, exclude: str | os.PathLike | None = None):
        self.source = str(source)
        self.exclude = os.path.realpath(exclude) if exclude else None
        path = Path(self.source)
        if path.is_dir():
            self.kind = "folder"
        elif path.is_file():
            self.kind = "list" if path.suffix.lower() == LIST_FILE_SUFFIX else "file"
        elif any(c in self.source for c in "*?["):
            self.kind = "glob"
        else:
            raise ImgclsError(f"--source {self.source}: no such file or folder (give an image, a folder, "
                              f"a glob such as 'photos/*.jpg', or a {LIST_FILE_SUFFIX} file listing paths)")

    @property
    def root(self) -> Path | None:
        """The folder that --save-img mirrors, for folder sources."""
        return Path(self.source) if self.kind == "folder" else None

    def __iter__(self) -> Iterator[str]:
        if self.kind == "file":
            yield self.source
        elif self.kind == "folder":
            yield from self._walk()
        elif self.kind == "glob":
            # sorted for a stable order; this holds the matched names (not images) in memory
            yield from (p for p in sorted(glob.iglob(self.source, recursive=True)) if os.path.isfile(p))
        else:
            yield from self._read_list()

    def _walk(self) -> Iterator[str]:
        for root, dirs, files in os.walk(self.source):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                             and os.path.realpath(os.path.join(root, d)) != self.exclude)
            for name in sorted(files):
                if not name.startswith("."):
                    yield os.path.join(root, name)

    def _read_list(self) -> Iterator[str]:
        base = Path(self.source).parent
        with open(self.source, encoding="utf-8-sig", errors="replace") as lines:
            for line in lines:
                entry = line.strip()
                if entry and not entry.startswith("#"):
                    yield entry if os.path.isabs(entry) else str(base / entry)

    def count(self) -> int:
        return sum(1 for _ in self)


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def _decode_path(decode: Decoder, path: str) -> tuple[str, np.ndarray | None, str | None]:
    """(path, model input, None), or (path, None, why) for a file that cannot be used: one bad file among
    thousands must not end the run."""
    try:
        return path, decode(path), None
    except ImageReadError as e:
        return path, None, str(e)
    except Exception as e:  # noqa: BLE001 - anything else about one file
        return path, None, f"cannot be read ({type(e).__name__}: {e})"


# ---------------------------------------------------------------------------------------------------------
# The command: a run folder with predictions.csv, predictions.json and optionally labelled copies.


@dataclass
class PredictResult:
    out_dir: Path
    total: int
    failed: int
    counts: dict[str, int]      # images predicted as each class ("unknown" too, with --reject); multi-label:
                                # images with each label (an image counts once for every label it has)
    seconds: float
    multi_label: bool = False

    @property
    def csv_path(self) -> Path:
        return self.out_dir / "predictions.csv"

    @property
    def json_path(self) -> Path:
        return self.out_dir / "predictions.json"


def predict(weights: str | os.PathLike, source: str | os.PathLike, *, topk: int = 5, batch_size: int = 32,
            save_img: bool = False, out: str | os.PathLike = "runs/predict", device: str = "auto",
            runtime: str = "auto", workers: int | None = None, reject: bool | float = False,
            progress: bool = True, ray: str | None = None) -> PredictResult:
    """Predict every image a source names and write OUT (then OUT2, OUT3, ...): predictions.csv,
    predictions.json and, with ``save_img``, labelled copies under images/. ``reject`` labels images unlike the
    training data ``unknown`` (see Predictor). A multi-label model writes the labels present and every label's
    probability instead of the top-k (record/predictions.py).

    ``ray`` runs the model on Ray Data instead (ray_predict.py): ``"local"`` for a Ray started on this machine,
    else a cluster's address; ``workers`` is then the number of Ray workers, one model each (default: one per
    CPU of the cluster).
    """
    from ..console import setup_logging

    setup_logging()
    if ray is not None:
        from .ray_cluster import require_ray
        from .ray_predict import ray_workers

        ray_workers(workers, 1)  # a bad --workers fails before Ray starts
        require_ray("--ray", "pyarrow", "pandas")
    elif workers is not None and workers < 0:
        raise ImgclsError(f"--workers {workers}: must be 0 or more (0 decodes in the main thread)")
    paths = SourcePaths(source)
    total = paths.count()
    if total == 0:
        raise ImgclsError(f"--source {source}: no files found")
    settings = {"device": device, "topk": topk, "batch_size": batch_size, "runtime": runtime, "reject": reject}
    predictor = Predictor(weights, **settings)
    if ray is None:
        return _write_predictions(predictor, paths, total, out, save_img, progress, weights, workers)
    from .ray_cluster import ray_session

    with ray_session(ray) as cluster:
        return _write_predictions(predictor, paths, total, out, save_img, progress, weights,
                                  _RayStream(weights, settings, workers, cluster))


@dataclass
class _RayStream:
    """Where predict --ray's results come from: Ray workers (ray_predict.py) on the cluster ray_session joined."""
    weights: str | os.PathLike
    settings: dict
    workers: int | None
    cluster: dict

    def predictions(self, paths: SourcePaths, total: int) -> tuple[Iterator[Prediction], dict]:
        from .ray_predict import ray_predictions, ray_workers

        workers, cpus_each = ray_workers(self.workers, self.cluster["cpus"])
        make = functools.partial(Predictor, os.path.abspath(self.weights), **self.settings)
        found = ray_predictions(paths, total, make, Prediction, batch_size=self.settings["batch_size"],
                                workers=workers, cpus_each=cpus_each)
        return found, {"address": self.cluster["address"], "workers": workers}


def _write_predictions(predictor: Predictor, paths: SourcePaths, total: int, out, save_img: bool, progress: bool,
                       weights, stream: int | None | _RayStream) -> PredictResult:
    """Run the predictions (``stream``: the decoding threads of this process, or a _RayStream) into a new run
    folder: the files, the progress bar, the per-class summary and the failures."""
    from tqdm import tqdm

    from ..data.cores import default_workers
    from ..record.files import new_run_dir
    from ..record.predictions import PredictionsWriter

    names = predictor.class_names + ([UNKNOWN] if predictor.rejecting else [])
    batch_size = predictor.batch_size
    out = Path(out)
    out_dir = new_run_dir(out.parent, out.name)
    paths.exclude = os.path.realpath(out_dir)  # --source . must not pick up the labelled copies being written
    if isinstance(stream, _RayStream):
        found, on_ray = stream.predictions(paths, total)
        where = f", on {on_ray['workers']} Ray worker(s)"
    else:
        workers = default_workers() if stream is None else stream
        workers = 0 if total <= batch_size else min(workers, (total + batch_size - 1) // batch_size)
        found, on_ray, where = predictor.predict_stream(paths, workers=workers), None, ""
    k = predictor.topk
    log.info(f"Predicting {total} file(s) from {paths.source} with {predictor.model_name} ({predictor.runtime}, "
             f"{len(predictor.class_names)} classes{where}) -> {out_dir}")
    rejection = {"rejection": {"score": predictor.model.usable_rejection["score"], "threshold": predictor.threshold}} \
        if predictor.rejecting else {}
    answers = {"thresholds": list(predictor.model.card.thresholds)} if predictor.multi_label else {"topk": k}
    writer = PredictionsWriter(out_dir, {"weights": str(weights), "model_name": predictor.model_name,
                                  "runtime": predictor.runtime, "class_names": predictor.class_names,
                                  "source": paths.source, **answers, **rejection,
                                  **({"ray": on_ray} if on_ray else {})}, k, predictor.rejecting,
                               labels=predictor.class_names if predictor.multi_label else None)
    counts: Counter[str] = Counter()
    failures: list[Prediction] = []
    started = time.time()
    bar = tqdm(total=total, unit="img", desc="predict", dynamic_ncols=True, disable=None if progress else True)
    done = predicted = 0
    try:
        for p in found:
            writer.write(p.to_dict())
            done += 1
            if p.ok:
                predicted += 1
                counts.update(p.labels if p.multi_label else (p.label,))
                if save_img:
                    save_labelled_copy(p, out_dir / "images", paths.root)
            elif len(failures) < 20:  # the log lists the first few; the files list them all
                failures.append(p)
            bar.update(1)
            if done % batch_size == 0:
                writer.flush()
    finally:
        bar.close()
        seconds = time.time() - started
        failed = done - predicted
        writer.close({"images": done, "predicted": predicted, "failed": failed, "seconds": round(seconds, 2),
                      "per_class": {c: counts.get(c, 0) for c in names}})
    result = PredictResult(out_dir, done, failed, {c: counts.get(c, 0) for c in names}, seconds,
                           predictor.multi_label)
    _log_summary(result, failures)
    return result


def _log_summary(result: PredictResult, failures: list[Prediction]) -> None:
    width = max(len(c) for c in result.counts) if result.counts else 5
    predicted = result.total - result.failed
    lines = [f"  {'label' if result.multi_label else 'class':<{width}}  images  share"]
    for name, n in sorted(result.counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {name:<{width}}  {n:>6}  {n / max(1, predicted):>5.1%}")
    log.info(("Per-label counts (an image counts once for every label it has):\n" if result.multi_label
              else "Per-class counts of the top-1 predictions:\n") + "\n".join(lines))
    for p in failures:
        log.warning(f"WARNING: failed {p.path}: {p.error}")
    if result.failed > len(failures):
        log.warning(f"WARNING: ... and {result.failed - len(failures)} more; see the error column of predictions.csv")
    rate = result.total / result.seconds if result.seconds > 0 else 0.0
    log.info(f"Results saved to {result.out_dir} ({result.total} files in {result.seconds:.1f}s, {rate:.1f} img/s)")
    log.info(f"{predicted} predicted, {result.failed} failed")


def caption(p: Prediction) -> str:
    """What a labelled copy shows: the label and its probability; a multi-label answer's labels, each with its
    probability ("none" when no label reaches its threshold)."""
    if not p.multi_label:
        return f"{p.label} {p.confidence:.2f}"
    probability = dict(p.probabilities)
    return ", ".join(f"{c} {probability[c]:.2f}" if c in probability else c for c in p.labels) or "none"


def save_labelled_copy(p: Prediction, images_dir: Path, source_root: Path | None) -> Path:
    """A copy of the image with its label and probability drawn in a band across the top."""
    from PIL import ImageDraw, ImageFont

    from ..record.files import atomic_write_bytes

    image = load_image(p.path).copy()
    draw = ImageDraw.Draw(image)
    text = caption(p)
    size = max(10, min(image.width, image.height) // 12)
    while True:  # shrink the font until the label fits across the image
        font = ImageFont.load_default(size=size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        pad = max(2, size // 4)
        if right - left + 2 * pad <= image.width or size <= 6:
            break
        size -= 1
    draw.rectangle([0, 0, right - left + 2 * pad, bottom - top + 2 * pad], fill=(20, 20, 20))
    draw.text((pad - left, pad - top), text, fill=(255, 255, 255), font=font)

    relative = Path(p.path).name
    if source_root is not None:
        try:
            relative = Path(p.path).relative_to(source_root)
        except ValueError:
            pass
    target = images_dir / relative
    if target.suffix.lower() not in _SAVE_SUFFIXES:
        target = target.with_suffix(".png")
    base, n = target, 2
    while target.exists():  # two globbed files may share a name
        target = base.with_name(f"{base.stem}_{n}{base.suffix}")
        n += 1
    buffer = io.BytesIO()
    image.save(buffer, format={".jpg": "JPEG", ".jpeg": "JPEG"}.get(target.suffix.lower(),
                                                                    target.suffix.lower().lstrip(".").upper()),
               **({"quality": 92} if target.suffix.lower() in (".jpg", ".jpeg") else {}))
    atomic_write_bytes(target, buffer.getvalue())
    return target
