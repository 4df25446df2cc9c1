"""The feature cache: a frozen backbone runs once per image view, not once per epoch.

Everything lives outside the run folder (``$IMGCLS_CACHE``, default ``~/.cache/imgcls``) so that
runs on the same data reuse it. An entry is found by the image's *content* hash plus a key made of
the backbone name, a hash of its weights and the preprocessing; a changed file or changed weights
therefore miss the cache instead of returning stale features.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..console import progress_bar
from ..data.images import ImageReadError, load_image
from ..errors import ImgclsError
from ..models.parts import head
from ..record.cache import cache_root, file_hashes
from . import distributed as dist

log = logging.getLogger("imgcls")

# In every store's key, so a cache written by another format version is not read.
CACHE_FORMAT = 3
EVAL_VIEW = "eval"
SHARD_ROWS = 512  # features written per shard file: an interrupted extraction keeps what it did


def weights_hash(model: nn.Module) -> str:
    """Hash of the backbone's tensors (the classifier is left out: it does not change features)."""
    in_head = {id(p) for p in head(model).parameters()}
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in in_head:
            continue
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(name.encode())
        digest.update(str(data.dtype).encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def feature_key(model_name: str, weights: str, preprocess: dict, cut: int | None = None) -> str:
    """Key of one feature store: backbone, its weights, the preprocessing and where the network is cut (None:
    the pooled features before the classifier; K: the activations at the input of stage K). Augmentation is
    per view."""
    spec = {"format": CACHE_FORMAT, "model": model_name, "weights": weights, "preprocess": preprocess}
    if cut is not None:
        spec["cut"] = cut
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def view_name(augment: str, index: int) -> str:
    """'eval' for the deterministic eval transform, else '<augment>:<index>' for augmented view ``index``."""
    return EVAL_VIEW if augment == "none" else f"{augment}:{index}"


def view_seed(content_hash: str, view: str) -> int:
    """Each augmented view is a fixed random draw, so a cached view means the same thing in every run."""
    return int(hashlib.sha256(f"{content_hash}/{view}".encode()).hexdigest()[:15], 16)


# ------------------------------------------------------------------------------------- feature store

class FeatureStore:
    """Pre-logits features on disk: ``<root>/features/<key>/shard-*.npz``, each shard holding rows of
    (content hash, view name, features: float32 vectors or float16 activation maps). Shards are written atomically and never changed, so two
    runs sharing the store at once can only duplicate work, never corrupt it."""

    def __init__(self, key: str, root: Path | None = None):
        self.key = key
        self.folder = (root or cache_root()) / "features" / key
        self._index: dict[tuple[str, str], tuple[int, int]] = {}
        self._shards: list[np.ndarray] = []

    def load(self) -> "FeatureStore":
        self._index.clear()
        self._shards.clear()
        if not self.folder.is_dir():
            return self
        for shard_path in sorted(self.folder.glob("shard-*.npz")):
            try:
                with np.load(shard_path, allow_pickle=False) as shard:
                    hashes, views, features = shard["hashes"], shard["views"], shard["features"]
            except (OSError, ValueError, KeyError) as e:  # a damaged shard only costs recomputation
                log.warning(f"WARNING: ignoring unreadable feature cache file {shard_path} ({e})")
                continue
            number = len(self._shards)
            self._shards.append(features)
            for row, (h, v) in enumerate(zip(hashes.tolist(), views.tolist())):
                self._index[(h, v)] = (number, row)
        return self

    def __contains__(self, entry: tuple[str, str]) -> bool:
        return entry in self._index

    def __len__(self) -> int:
        return len(self._index)

    def get(self, content_hash: str, view: str) -> np.ndarray:
        number, row = self._index[(content_hash, view)]
        return self._shards[number][row]

    def add(self, hashes: list[str], views: list[str], features: np.ndarray) -> None:
        features = np.ascontiguousarray(features)
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".shard-", suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, hashes=np.array(hashes), views=np.array(views), features=features)
            os.replace(tmp, self.folder / f"shard-{uuid.uuid4().hex}.npz")
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        number = len(self._shards)
        self._shards.append(features)
        for row, entry in enumerate(zip(hashes, views)):
            self._index[entry] = (number, row)

    def matrix(self, hashes: list[str], view: str) -> np.ndarray:
        """Rows for ``hashes`` in order, as one (N, ...) array."""
        return np.stack([self.get(h, view) for h in hashes]) if hashes else np.zeros((0, 0), np.float32)


# --------------------------------------------------------------------------------- feature extraction

class _ViewsDataset(torch.utils.data.Dataset):
    """Decode each image once and make every view it still needs from that one decode."""

    def __init__(self, paths, hashes, needed, transforms: dict, draft_size):
        self.paths, self.hashes, self.needed = paths, hashes, needed
        self.transforms, self.draft_size = transforms, draft_size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            image = load_image(self.paths[i], draft_size=self.draft_size)
        except ImageReadError as e:
            log.warning(f"WARNING: skipped {self.paths[i]}: {e}")
            return None
        tensors = []
        for view in self.needed[i]:
            augment = view.split(":")[0]
            with torch.random.fork_rng(devices=[]):  # fixed draw per (image, view); training RNG untouched
                torch.manual_seed(view_seed(self.hashes[i], view))
                tensors.append(self.transforms[augment](image))
        return torch.stack(tensors), [(self.hashes[i], v) for v in self.needed[i]]


def _collate_views(batch):
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return torch.cat([b[0] for b in batch]), [entry for b in batch for entry in b[1]]


def fill_feature_store(store: FeatureStore, runner, requests: list[tuple[str, str, list[str]]], transforms: dict,
                       *, draft_size=None, batch_size: int = 32, workers: int = 1, progress: bool = True) -> int:
    """Compute the features that ``store`` lacks. ``requests`` holds (path, content hash, views).

    ``runner`` maps a float32 image batch (N,3,H,W) to an (N,D) array; ``transforms`` maps an
    augmentation level ('eval', 'light', ...) to its transform. Returns the number of views computed.
    """
    todo = []
    for path, content_hash, views in requests:
        missing = [v for v in dict.fromkeys(views) if (content_hash, v) not in store]
        if missing:
            todo.append((path, content_hash, missing))
    if not todo:
        return 0
    views_per_image = max(len(m) for _, _, m in todo)
    dataset = _ViewsDataset([t[0] for t in todo], [t[1] for t in todo], [t[2] for t in todo], transforms, draft_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=max(1, batch_size // views_per_image), shuffle=False,
                                         num_workers=workers, collate_fn=_collate_views)
    total = sum(len(t[2]) for t in todo)
    bar = progress_bar(None, "caching features", progress, total=total, unit="view")
    pending_entries, pending_features, done = [], [], 0
    for batch in loader:
        if batch is None:
            continue
        images, entries = batch
        pending_features.append(np.asarray(runner(images)))
        pending_entries.extend(entries)
        done += len(entries)
        if bar is not None:
            bar.update(len(entries))
        if len(pending_entries) >= SHARD_ROWS:
            store.add([h for h, _ in pending_entries], [v for _, v in pending_entries], np.concatenate(pending_features))
            pending_entries, pending_features = [], []
    if pending_entries:
        store.add([h for h, _ in pending_entries], [v for _, v in pending_entries], np.concatenate(pending_features))
    if bar is not None:
        bar.close()
    return done


# ------------------------------------------------------------------- head training on cached features

class FeatureDataset(torch.utils.data.Dataset):
    """(feature, label, index) rows, the same contract as ImageDataset, so the same loaders apply.

    ``mirror`` (models.parts.mirror_of the network, for a batch): activation maps at a cut (a CNN's, Swin's) are
    mirrored left-right at random, a free augmentation on top of the cached views (feature-level augmentation, as in
    FroFA); the network trained on them predicts from both mirror images (models.parts.Mirrored). None (a ViT's
    tokens, whose order its top blocks do not see): the rows as they are.
    """

    def __init__(self, features: np.ndarray, labels: list[int], mirror: Callable | None = None):
        self.features = torch.from_numpy(features)
        self.labels = list(labels)
        self.mirror = mirror if self.features.ndim >= 3 else None  # pooled features (N x D) have no left and right

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        row = self.features[i].float()  # activation maps are stored as float16
        if self.mirror is not None and torch.rand(()) < 0.5:
            row = self.mirror(row[None])[0]
        return row, self.labels[i], i


class SplitFeatures:
    """Cached features of one data set for one backbone: K training views and the eval view of val/test."""

    def __init__(self, train_views: list[np.ndarray], evaluation: dict[str, np.ndarray], labels: dict[str, list[int]],
                 mirror: Callable | None = None):
        self.train_views = train_views
        self.evaluation = evaluation
        self.labels = labels
        self.mirror = mirror  # how the training views are mirrored at random (FeatureDataset)

    def train_dataset(self, epoch: int) -> FeatureDataset:
        """Epoch ``epoch`` (1-based) trains on view (epoch - 1) mod K of every image."""
        return FeatureDataset(self.train_views[(epoch - 1) % len(self.train_views)], self.labels["train"], self.mirror)

    def eval_dataset(self, split: str) -> FeatureDataset:
        return FeatureDataset(self.evaluation[split], self.labels[split])

    def through(self, module: nn.Module, device: torch.device, batch_size: int = 64) -> "SplitFeatures":
        """These features passed once through a frozen ``module`` (e.g. the stages above a cut, pooled)."""
        module = module.eval()

        @torch.inference_mode()
        def apply(array: np.ndarray) -> np.ndarray:
            parts = [module(torch.from_numpy(array[i:i + batch_size]).to(device).float()).float().cpu().numpy()
                     for i in range(0, len(array), batch_size)]
            return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

        return SplitFeatures([apply(v) for v in self.train_views],
                             {split: apply(a) for split, a in self.evaluation.items()}, self.labels)


def _half(runner):
    """The runner's outputs as float16, the storage type of cached activation maps."""
    import dataclasses

    return dataclasses.replace(runner, run=lambda x: np.asarray(runner(x), dtype=np.float16))


def split_features(model: nn.Module, model_name: str, preprocess: dict, source, *, augment: str, views: int,
                   device: torch.device, runtime: str = "auto", batch_size: int = 32, workers: int = 1,
                   progress: bool = True, cut: int | None = None) -> SplitFeatures:
    """Features for every image of ``source`` (train views, val and test), from the cache where present:
    the pooled features before the classifier, or with ``cut`` the activations at the input of that stage
    (stored as float16: they are large).

    Logs whether the cache was hit; computes and stores only what is missing.
    """
    import time

    from ..data.geometry import draft_size_for
    from ..data.transforms import eval_transform, train_transform
    from ..models.parts import Lower, PreLogits, mirror_of
    from ..runtime.pytorch import fastest_runner

    start = time.time()
    paths = {split: [str(p) for p in source.paths(split)] for split in ("train", "val", "test") if source.items.get(split)}
    hashes = {split: file_hashes(p, workers=2) for split, p in paths.items()}
    key = feature_key(model_name, weights_hash(model), preprocess, cut)
    store = FeatureStore(key).load()
    train_view_names = [view_name(augment, k) for k in range(1 if augment == "none" else views)]
    requests = [(p, h, train_view_names) for p, h in zip(paths["train"], hashes["train"])]
    for split in ("val", "test"):
        requests += [(p, h, [EVAL_VIEW]) for p, h in zip(paths.get(split, []), hashes.get(split, []))]
    wanted = sum(len(dict.fromkeys(v)) for _, _, v in requests)
    found = sum(1 for _, h, v in requests for name in dict.fromkeys(v) if (h, name) in store)
    if found == wanted:
        log.info(f"Feature cache hit: all {wanted} image views of {model_name} found in {store.folder}")
    else:
        transforms = {EVAL_VIEW: eval_transform(preprocess)}
        if augment != "none":
            transforms[augment] = train_transform(preprocess, augment)
        module = (PreLogits(model) if cut is None else Lower(model, cut)).eval()
        runner = fastest_runner(module, preprocess["input_size"], device=device, kind=runtime)
        if cut is not None:
            runner = _half(runner)
        log.info(f"Feature cache: {found} of {wanted} image views found; computing {wanted - found} once "
                 f"with {runner.name} (backbone runs once per view, not once per epoch)")
        # Under torchrun each rank extracts a disjoint share; the store's shard files never collide.
        mine = requests[dist.rank()::dist.world_size()]
        fill_feature_store(store, runner, mine, transforms, draft_size=draft_size_for(preprocess),
                           batch_size=batch_size, workers=workers, progress=progress)
        log.info(f"Feature cache: stored in {store.folder} ({time.time() - start:.1f}s)")
    if dist.enabled():  # every rank waits for the others' shares, then reads them all
        dist.barrier()
        store.load()
    lost = [p for split in paths for p, h in zip(paths[split], hashes[split])
            if (h, train_view_names[0] if split == "train" else EVAL_VIEW) not in store]
    if lost:
        raise ImgclsError(f"{lost[0]}: could not be read while caching features ({len(lost)} file(s) in all); "
                          "fix or remove it, or train with --no-cache")
    train_views = [store.matrix(hashes["train"], name) for name in train_view_names]
    evaluation = {split: store.matrix(hashes[split], EVAL_VIEW) for split in ("val", "test") if split in hashes}
    labels = {split: source.labels(split) for split in paths}
    return SplitFeatures(train_views, evaluation, labels, mirror_of(model) if cut is not None else None)


def image_features(model: nn.Module, model_name: str, preprocess: dict, paths: list[str], *,
                   device: torch.device, runtime: str = "auto", batch_size: int = 32, workers: int = 1,
                   progress: bool = True) -> tuple[np.ndarray, list[int]]:
    """Pooled features of the eval view of every image in ``paths``, from the same cache as training (a run on
    the same data and backbone finds the val/test ones already there, and vice versa).

    Returns (features of the images that could be read, their positions in ``paths``).
    """
    import time

    from ..data.geometry import draft_size_for
    from ..data.transforms import eval_transform
    from ..models.parts import PreLogits
    from ..runtime.pytorch import fastest_runner

    start = time.time()
    hashes = file_hashes(paths, workers=2)
    store = FeatureStore(feature_key(model_name, weights_hash(model), preprocess)).load()
    requests = [(p, h, [EVAL_VIEW]) for p, h in zip(paths, hashes)]
    found = sum(1 for h in dict.fromkeys(hashes) if (h, EVAL_VIEW) in store)
    if found == len(set(hashes)):
        log.info(f"Feature cache hit: all {len(paths)} images of {model_name} found in {store.folder}")
    else:
        runner = fastest_runner(PreLogits(model).eval(), preprocess["input_size"], device=device, kind=runtime)
        log.info(f"Feature cache: {found} of {len(set(hashes))} images found; computing the rest once with "
                 f"{runner.name}")
        fill_feature_store(store, runner, requests, {EVAL_VIEW: eval_transform(preprocess)},
                           draft_size=draft_size_for(preprocess), batch_size=batch_size, workers=workers,
                           progress=progress)
        log.info(f"Feature cache: stored in {store.folder} ({time.time() - start:.1f}s)")
    kept = [i for i, h in enumerate(hashes) if (h, EVAL_VIEW) in store]
    return store.matrix([hashes[i] for i in kept], EVAL_VIEW), kept
