"""Finding and splitting class-folder data sets: which images, which class, which split."""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ..errors import ImgclsError
from .images import is_image_path

log = logging.getLogger("imgcls")

SPLITS = ("train", "val", "test")
SPLIT_DIR_NAMES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


@dataclass
class DataSource:
    """A data set as imgcls sees it: class names and, for each split, (relative path, label) pairs.

    Paths are relative to ``root`` so a split manifest stays valid when the folder moves.
    """

    root: Path
    class_names: list[str]
    items: dict[str, list[tuple[str, int]]]
    split_made: bool = False  # True when imgcls made the split (it is then saved as split.csv)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)

    def paths(self, split: str) -> list[Path]:
        return [self.root / rel for rel, _ in self.items.get(split, [])]

    def labels(self, split: str) -> list[int]:
        return [label for _, label in self.items.get(split, [])]

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class for each split that has images."""
        table = {}
        for split, items in self.items.items():
            if not items:
                continue
            per_class = np.bincount([label for _, label in items], minlength=len(self.class_names))
            table[split] = {name: int(n) for name, n in zip(self.class_names, per_class)}
        return table


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_split_dirs(root: Path) -> dict[str, Path]:
    """Return {'train': dir, 'val': dir, 'test': dir} for the split folders present under root."""
    found = {}
    children = {p.name.lower(): p for p in _visible_dirs(root)}
    for split, names in SPLIT_DIR_NAMES.items():
        for name in names:
            if name in children:
                found[split] = children[name]
                break
    return found


def list_class_images(folder: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """Images per class folder (searched recursively), plus files ignored for their extension."""
    per_class: dict[str, list[Path]] = {}
    ignored: list[Path] = []
    for class_dir in _visible_dirs(folder):
        files = []
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                (files if is_image_path(path) else ignored).append(path)
        per_class[class_dir.name] = files
    return per_class, ignored


def parse_split_fractions(spec: str | list | tuple) -> tuple[float, float, float]:
    """'0.7,0.15,0.15' -> (0.7, 0.15, 0.15); two numbers mean train/val only."""
    try:
        parts = [float(x) for x in (spec.split(",") if isinstance(spec, str) else spec)]
    except ValueError:
        raise ImgclsError(f"--split {spec!r}: expected numbers such as 0.7,0.15,0.15 or 0.8,0.2") from None
    if len(parts) not in (2, 3) or any(p < 0 for p in parts) or parts[0] <= 0:
        raise ImgclsError(f"--split {spec!r}: give 2 or 3 non-negative fractions, train first (e.g. 0.7,0.15,0.15)")
    total = sum(parts)
    if abs(total - 1.0) > 1e-6:
        raise ImgclsError(f"--split {spec!r}: the fractions add up to {total:g}, not 1")
    if len(parts) == 2:
        parts.append(0.0)
    return parts[0], parts[1], parts[2]


def stratified_split(labels: list[int], fractions: tuple[float, float, float], seed: int) -> list[str]:
    """Assign each item to train/val/test, class by class, reproducibly for a given seed.

    Each class keeps at least one training image; val gets one whenever its fraction is
    positive and the class has at least two images.
    """
    labels_arr = np.asarray(labels)
    assignment = np.empty(len(labels_arr), dtype=object)
    rng = np.random.default_rng(seed)
    _, frac_val, frac_test = fractions
    for label in np.unique(labels_arr):
        idx = np.flatnonzero(labels_arr == label)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_val = int(round(n * frac_val))
        n_test = int(round(n * frac_test))
        if frac_val > 0 and n_val == 0 and n >= 2:
            n_val = 1
        if frac_test > 0 and n_test == 0 and n >= 3:
            n_test = 1
        while n_val + n_test > n - 1 and (n_val or n_test):
            if n_test >= n_val and n_test:
                n_test -= 1
            else:
                n_val -= 1
        assignment[idx[:n_val]] = "val"
        assignment[idx[n_val:n_val + n_test]] = "test"
        assignment[idx[n_val + n_test:]] = "train"
    return list(assignment)


def write_split_csv(source: DataSource, path: Path) -> None:
    from ..record.files import atomic_write_text

    lines = [["path", "class", "split"]]
    for split in SPLITS:
        for rel, label in source.items.get(split, []):
            lines.append([rel, source.class_names[label], split])
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    atomic_write_text(path, buffer.getvalue())


def read_split_csv(path: Path, root: Path, class_names: list[str] | None = None) -> DataSource:
    """Rebuild a DataSource from a saved split.csv (paths relative to ``root``)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise ImgclsError(f"split file not found: {path}") from None
    if not rows or not {"path", "class", "split"} <= set(rows[0]):
        raise ImgclsError(f"{path}: not a split file (expected the columns path,class,split)")
    names = class_names or sorted({row["class"] for row in rows})
    index = {name: i for i, name in enumerate(names)}
    items: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLITS}
    for row in rows:
        if row["class"] not in index:
            raise ImgclsError(f"{path}: class {row['class']!r} is not one of the model's classes {names}")
        if row["split"] not in items:
            raise ImgclsError(f"{path}: unknown split {row['split']!r} (expected train, val or test)")
        items[row["split"]].append((row["path"], index[row["class"]]))
    missing = [rel for split in items.values() for rel, _ in split[:] if not (root / rel).exists()]
    if missing:
        raise ImgclsError(
            f"{path}: {len(missing)} listed image(s) are missing under {root}, e.g. {missing[0]!r}; "
            "was the data folder moved? pass --data to point at it"
        )
    return DataSource(root=Path(root), class_names=names, items=items, split_made=True)


def discover(root: str | os.PathLike, split: str = "0.7,0.15,0.15", seed: int = 0) -> DataSource:
    """Read a data folder: either train/val[/test] folders or one tree of class folders.

    ``split`` is a fraction spec for a single tree, or the path of a saved split.csv to reuse.
    Raises ImgclsError (one line) when the folder cannot be a classification data set.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise ImgclsError(f"--data {root}: folder not found")
    if not root.is_dir():
        raise ImgclsError(f"--data {root}: is a file, expected a folder of class folders")
    if isinstance(split, (str, os.PathLike)) and str(split).endswith(".csv"):
        return read_split_csv(Path(split), root)

    split_dirs = find_split_dirs(root)
    if split_dirs:
        if "train" not in split_dirs:
            raise ImgclsError(f"--data {root}: has {sorted(split_dirs)} folder(s) but no train/ folder")
        if "val" not in split_dirs:
            raise ImgclsError(
                f"--data {root}: has train/ but no val/ (or valid/, validation/) folder; "
                "add one, or put the class folders directly under --data to let imgcls split them"
            )
        per_split = {s: list_class_images(d) for s, d in split_dirs.items()}
        train_classes = sorted(per_split["train"][0])
        _check_classes(root / split_dirs["train"].name, per_split["train"][0])
        for s in ("val", "test"):
            if s in per_split:
                extra = sorted(set(per_split[s][0]) - set(train_classes))
                if extra:
                    raise ImgclsError(
                        f"--data {root}: class folder(s) {extra} in {split_dirs[s].name}/ are missing from train/; "
                        "every class needs training images"
                    )
                absent = sorted(set(train_classes) - set(per_split[s][0]))
                if absent:
                    log.warning(f"WARNING: class(es) {absent} have no images in {split_dirs[s].name}/")
        index = {name: i for i, name in enumerate(train_classes)}
        items = {
            s: [(str(p.relative_to(root)), index[c]) for c, files in per_split[s][0].items() for p in files]
            for s in per_split
        }
        _warn_ignored(root, [p for s in per_split for p in per_split[s][1]])
        return DataSource(root=root, class_names=train_classes, items=items, split_made=False)

    per_class, ignored = list_class_images(root)
    _check_classes(root, per_class)
    _warn_ignored(root, ignored)
    class_names = sorted(per_class)
    all_items = [(str(p.relative_to(root)), i) for i, c in enumerate(class_names) for p in per_class[c]]
    assignment = stratified_split([label for _, label in all_items], parse_split_fractions(split), seed)
    items = {s: [item for item, a in zip(all_items, assignment) if a == s] for s in SPLITS}
    if not items["val"]:
        raise ImgclsError(f"--data {root}: too few images to make a validation split; add images or use --split 0.8,0.2")
    return DataSource(root=root, class_names=class_names, items=items, split_made=True)


def _check_classes(folder: Path, per_class: dict[str, list[Path]]) -> None:
    if not per_class:
        loose = [p.name for p in folder.iterdir() if p.is_file() and is_image_path(p)][:3]
        hint = f" (found loose images such as {loose}; move them into one folder per class)" if loose else ""
        raise ImgclsError(f"--data {folder}: no class folders found; expected one sub-folder per class{hint}")
    empty = sorted(c for c, files in per_class.items() if not files)
    if empty:
        raise ImgclsError(
            f"--data {folder}: class folder(s) {empty} contain no images "
            "(.jpg .jpeg .png .bmp .gif .webp .tif .tiff); add images or remove the folder"
        )
    if len(per_class) < 2:
        raise ImgclsError(
            f"--data {folder}: found only 1 class ({next(iter(per_class))!r}); a classifier needs at least 2 class folders"
        )


def _warn_ignored(root: Path, ignored: list[Path]) -> None:
    if ignored:
        shown = ", ".join(str(p.relative_to(root)) for p in ignored[:5])
        more = f" and {len(ignored) - 5} more" if len(ignored) > 5 else ""
        log.warning(f"WARNING: ignored {len(ignored)} file(s) that are not images by extension: {shown}{more}")


def check_trainable(source: DataSource) -> None:
    """Raise one clear error when what is left after skipping bad files cannot train."""
    counts = source.counts()
    train = counts.get("train", {})
    empty = [c for c in source.class_names if train.get(c, 0) == 0]
    if empty:
        raise ImgclsError(
            f"--data {source.root}: class(es) {empty} have no usable training images after skipping bad files"
        )
    if sum(counts.get("val", {}).values()) == 0:
        raise ImgclsError(f"--data {source.root}: no usable validation images after skipping bad files")


def run_source(run_dir: Path, class_names: list[str]) -> DataSource:
    """The images a run trained and was evaluated on, split exactly as it was.

    The run's split.csv when imgcls made the split, else the split folders of the data folder that
    args.yaml records. Raises one clear error when that data is gone or no longer matches.
    """
    from ..record.files import read_yaml

    run_dir = Path(run_dir)
    args_file = run_dir / "args.yaml"
    if not args_file.exists():
        raise ImgclsError(f"{run_dir}: no args.yaml next to the weights, so the run's data is unknown; pass --data DIR")
    data = read_yaml(args_file).get("data")
    if not data:
        raise ImgclsError(f"{args_file}: no data folder recorded; pass --data DIR")
    root = Path(data)
    if (run_dir / "split.csv").exists():
        return read_split_csv(run_dir / "split.csv", root, class_names)
    if not root.is_dir():
        raise ImgclsError(f"{args_file}: the run's data folder {root} is gone; pass --data DIR")
    source = discover(root)
    if source.class_names != list(class_names):
        raise ImgclsError(f"{root}: its class folders {source.class_names} no longer match the model's classes "
                          f"{list(class_names)}; pass --data DIR")
    return source
