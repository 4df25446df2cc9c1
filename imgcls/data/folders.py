"""Finding and splitting class-folder data sets: which images, which class, which split."""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from ..config import DEFAULT_SPLIT
from ..errors import ImgclsError
from .images import is_hidden, is_image_path, is_imgcls_output

log = logging.getLogger("imgcls")

SPLITS = ("train", "val", "test")
# Split folders are found by name, in any case, alone or with a prefix or suffix word: train/, Training/,
# seg_train/, training_set/, valid/, dev/, Testing/ ... (Kaggle and Ultralytics layouts).
SPLIT_WORDS = {"train": ("train", "training"), "val": ("val", "valid", "validation", "dev"),
               "test": ("test", "testing")}
SPLIT_SUFFIXES = frozenset({"set", "data", "dataset", "images", "imgs", "img", "split"})
_SPLIT_OF_WORD = {word: split for split, words in SPLIT_WORDS.items() for word in words}
def split_of(name: str) -> str | None:
    """'train', 'val' or 'test' for a split folder name (train, Training, seg_train, valid, test_set...), else None."""
    tokens = [t for t in re.split(r"[_\-. ]+", name.lower()) if t]
    hits = [i for i, t in enumerate(tokens) if t in _SPLIT_OF_WORD]
    if len(hits) != 1 or len(tokens) > 3:
        return None
    i = hits[0]
    if i > 1 or any(t not in SPLIT_SUFFIXES for t in tokens[i + 1:]):
        return None
    return _SPLIT_OF_WORD[tokens[i]]


@dataclass
class DataSource:
    """A data set as imgcls sees it: class names and, for each split, (relative path, label) pairs.

    Paths are relative to ``root`` so a split manifest stays valid when the folder moves. In multi-label data
    (``multi_label``) each label is a tuple of class indices, empty for an image with none of the labels.
    """

    root: Path
    class_names: list[str]
    items: dict[str, list[tuple[str, int]]]
    split_made: bool = False  # True when imgcls made (part of) the split (it is then saved as split.csv)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    given: tuple[str, ...] = ()  # splits the user gave as folders (train, test, ...) or in a label file's column
    listed: bool = False          # the images come from a label file (data/labelfile.py): split.csv always saved
    rows: dict[str, int] = field(default_factory=dict)  # a label file's row of each image (its messages name it)
    multi_label: bool = False

    def paths(self, split: str) -> list[Path]:
        return [self.root / rel for rel, _ in self.items.get(split, [])]

    def labels(self, split: str) -> list:
        """Each image's label: a class index, or in multi-label data its multi-hot float32 vector (the target of
        BCEWithLogitsLoss)."""
        if self.multi_label:
            return list(multi_hot([label for _, label in self.items.get(split, [])], len(self.class_names)))
        return [label for _, label in self.items.get(split, [])]

    def label_name(self, label) -> str:
        """How a label is written: the class name, or the image's labels joined by ";" (empty for none)."""
        return ";".join(self.class_names[i] for i in label) if self.multi_label else self.class_names[label]

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class for each split that has images (in multi-label data: images that have each label)."""
        table = {}
        for split, items in self.items.items():
            if not items:
                continue
            if self.multi_label:
                per_class = multi_hot([label for _, label in items], len(self.class_names)).sum(0).astype(int)
            else:
                per_class = np.bincount([label for _, label in items], minlength=len(self.class_names))
            table[split] = {name: int(n) for name, n in zip(self.class_names, per_class)}
        return table


def multi_hot(labels: list[tuple[int, ...]], num_classes: int) -> np.ndarray:
    """(N, classes) float32 with 1 where an image has a label."""
    out = np.zeros((len(labels), num_classes), dtype=np.float32)
    for row, label in enumerate(labels):
        out[row, list(label)] = 1.0
    return out


def strata(labels: list) -> list[int]:
    """What a split is stratified by: the class, or for multi-label data each image's rarest label (-1 for none),
    so that every label keeps training and validation images where it has enough."""
    if not labels or not isinstance(labels[0], tuple):
        return list(labels)
    frequency: dict[int, int] = {}
    for label in labels:
        for i in label:
            frequency[i] = frequency.get(i, 0) + 1
    return [min(label, key=lambda i: (frequency[i], i)) if label else -1 for label in labels]


@dataclass
class Layout:
    """What a data folder holds, found from names alone (no image is read).

    ``trees`` maps each split (None for a single tree of class folders) to {class: image paths}.
    ``problems`` are (severity, message) pairs: an "error" means ``imgcls train`` cannot use the folder.
    """

    root: Path
    split_dirs: dict[str, Path]
    trees: dict[str | None, dict[str, list[Path]]]
    ignored: list[Path] = field(default_factory=list)   # files inside class folders without an image extension
    hidden: list[Path] = field(default_factory=list)    # hidden and system folders and files, never entered
    unused: list[Path] = field(default_factory=list)    # loose files and other folders beside the class folders
    problems: list[tuple[str, str]] = field(default_factory=list)
    multi_label: bool = False                            # a label file with several labels per image

    @property
    def class_names(self) -> list[str]:
        base = self.trees.get("train", self.trees.get(None)) or {}
        return sorted(base) or sorted({c for tree in self.trees.values() for c in tree})

    def where(self, split: str | None) -> str:
        """How messages name a split folder: 'Training/' (relative to the root), or 'the data folder'."""
        if split is None:
            return "the data folder"
        return self.split_dirs[split].relative_to(self.root).as_posix() + "/"

    def relative(self, paths: list[Path]) -> list[str]:
        return [p.relative_to(self.root).as_posix() for p in paths]


def _children(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Visible sub-folders, visible files and hidden entries of one folder, sorted by name."""
    dirs, files, hidden = [], [], []
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise ImgclsError(f"--data {folder}: cannot be read ({e.strerror or e})") from None
    for path in entries:
        if is_hidden(path.name):
            hidden.append(path)
        elif path.is_dir():
            (hidden if is_imgcls_output(path) else dirs).append(path)
        else:
            files.append(path)
    return dirs, files, hidden


def list_class_images(folder: Path) -> tuple[dict[str, list[Path]], list[Path], list[Path], list[Path]]:
    """Images per class folder (searched recursively), files ignored for their extension, hidden entries,
    and loose files beside the class folders."""
    per_class: dict[str, list[Path]] = {}
    ignored: list[Path] = []
    class_dirs, loose, hidden = _children(folder)
    for class_dir in class_dirs:
        files = []
        for dirpath, dirnames, filenames in os.walk(class_dir):
            hidden += [Path(dirpath) / d for d in sorted(dirnames) if is_hidden(d)]
            dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if is_hidden(name):
                    hidden.append(path)
                else:
                    (files if is_image_path(path) else ignored).append(path)
        per_class[class_dir.name] = files
    return per_class, ignored, hidden, loose


def _split_folder(folder: Path, split: str) -> Path:
    """seg_train/seg_train/<class>/ (as some archives unpack) is read as seg_train/<class>/."""
    dirs, files, _ = _children(folder)
    if len(dirs) == 1 and split_of(dirs[0].name) == split and not any(is_image_path(f) for f in files):
        return dirs[0]
    return folder


def _holds_split_folders(folder: Path) -> bool:
    return any(split_of(d.name) and _children(d)[0] for d in _children(folder)[0])


def find_split_dirs(root: Path) -> tuple[dict[str, Path], list[tuple[str, str]], list[Path]]:
    """Split folders under root: ({'train': dir, ...}, problems, other folders beside them).

    A folder counts as a split only when it holds sub-folders, so a class folder named "test" full of
    images stays a class. A lone wrapper folder around the split folders (data/chest_xray/train/...)
    is looked through.
    """
    dirs, files, _ = _children(root)
    for _ in range(2):
        if len(dirs) == 1 and not any(is_image_path(f) for f in files) and _holds_split_folders(dirs[0]):
            dirs, files, _ = _children(dirs[0])
    found: dict[str, list[Path]] = {}
    others = []
    for d in dirs:
        split = split_of(d.name)
        if split and _children(d)[0]:
            found.setdefault(split, []).append(d)
        else:
            others.append(d)
    problems = []
    for split, folders in found.items():
        if len(folders) > 1:
            names = " and ".join(f"{f.name}/" for f in folders)
            problems.append(("error", f"{names} both look like the {split} split; keep one (or rename the other)"))
    split_dirs = {s: _split_folder(found[s][0], s) for s in SPLITS if s in found}
    return split_dirs, problems, (others if split_dirs else [])


def scan_layout(root: str | os.PathLike) -> Layout:
    """Find the layout of a data folder: split folders of class folders, or one tree of class folders.

    Raises ImgclsError only when the folder is missing or a file; everything else is a problem in the layout.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise ImgclsError(f"--data {root}: folder not found")
    if not root.is_dir():
        raise ImgclsError(f"--data {root}: is a file, expected a folder of class folders")
    split_dirs, problems, others = find_split_dirs(root)
    layout = Layout(root, split_dirs, {}, problems=problems)
    _, root_files, layout.hidden = _children(root)
    for split, folder in (split_dirs or {None: root}).items():
        per_class, ignored, hidden, loose = list_class_images(folder)
        layout.trees[split] = per_class
        layout.ignored += ignored
        layout.hidden += hidden
        layout.unused += loose
        for between in folder.parents:  # a wrapper folder, or the outer one of seg_train/seg_train/
            if between == root or root not in between.parents:
                break
            layout.hidden += _children(between)[2]
    if split_dirs:
        layout.unused = others + root_files + layout.unused
    layout.hidden = sorted(set(layout.hidden))
    layout.problems += _class_problems(layout)
    return layout


def _class_problems(layout: Layout) -> list[tuple[str, str]]:
    """Why the class folders cannot train (errors) or look wrong (warnings)."""
    problems = []
    trees, split_dirs = layout.trees, layout.split_dirs
    if split_dirs and "train" not in trees:
        problems.append(("error", f"has {', '.join(layout.where(s) for s in trees)} but no train/ folder "
                                  "(or training/, seg_train/, ...)"))
    train_classes = sorted(trees.get("train", trees.get(None)) or {})
    for split, per_class in trees.items():
        if split in ("val", "test") and train_classes:
            extra = sorted(set(per_class) - set(train_classes))
            if extra:
                problems.append(("error", f"class folder(s) {extra} in {layout.where(split)} are missing from "
                                          f"{layout.where('train')}; every class needs training images"))
            absent = sorted(set(train_classes) - set(per_class))
            if absent:
                problems.append(("warning", f"class(es) {absent} have no images in {layout.where(split)}"))
        empty = sorted(c for c, files in per_class.items() if not files)
        if empty:
            where = "" if split is None else f" in {layout.where(split)}"
            problems.append(("error" if split in (None, "train") else "warning",
                             f"class folder(s) {empty}{where} contain no images "
                             "(.jpg .jpeg .png .bmp .gif .webp .tif .tiff); add images or remove the folder"))
    base = trees.get("train", trees.get(None))
    if base is not None and not base:
        loose = [p.name for p in layout.unused if p.is_file() and is_image_path(p)][:3]
        hint = f" (found loose images such as {loose}; move them into one folder per class)" if loose else ""
        where = "" if "train" not in trees else f" in {layout.where('train')}"
        problems.append(("error", f"no class folders found{where}; expected one sub-folder per class{hint}"))
    elif base is not None and len(base) < 2:
        problems.append(("error", f"found only 1 class ({next(iter(base))!r}); a classifier needs at least 2 "
                                  "class folders"))
    return problems


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

    lines = [["path", "labels" if source.multi_label else "class", "split"]]
    for split in SPLITS:
        for rel, label in source.items.get(split, []):
            lines.append([rel, source.label_name(label), split])
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
    if rows and {"path", "labels", "split"} <= set(rows[0]):
        return _read_multi_label_split(path, rows, root, class_names)
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
    _check_present(path, root, items)
    return DataSource(root=Path(root), class_names=names, items=items, split_made=True)


def _check_present(path: Path, root: Path, items: dict) -> None:
    missing = [rel for split in items.values() for rel, _ in split[:] if not (root / rel).exists()]
    if missing:
        raise ImgclsError(
            f"{path}: {len(missing)} listed image(s) are missing under {root}, e.g. {missing[0]!r}; "
            "was the data folder moved? pass --data to point at it"
        )


def _read_multi_label_split(path: Path, rows: list[dict], root: Path, class_names: list[str] | None) -> DataSource:
    """A multi-label split.csv: path, labels (joined by ";"), split."""
    names = class_names or sorted({n for row in rows for n in row["labels"].split(";") if n})
    index = {name: i for i, name in enumerate(names)}
    items: dict[str, list[tuple[str, tuple[int, ...]]]] = {s: [] for s in SPLITS}
    for row in rows:
        labels = [n for n in row["labels"].split(";") if n]
        unknown = [n for n in labels if n not in index]
        if unknown:
            raise ImgclsError(f"{path}: label {unknown[0]!r} is not one of the model's labels {names}")
        if row["split"] not in items:
            raise ImgclsError(f"{path}: unknown split {row['split']!r} (expected train, val or test)")
        items[row["split"]].append((row["path"], tuple(sorted(index[n] for n in labels))))
    _check_present(path, root, items)
    return DataSource(root=Path(root), class_names=names, items=items, split_made=True, multi_label=True)


def discover(root: str | os.PathLike, split: str = DEFAULT_SPLIT, seed: int = 0, *,
             images: str | os.PathLike | None = None, columns: str | None = None,
             multi_label: bool | None = None) -> DataSource:
    """Read a data set: split folders (train/val/test under any common name), one tree of class folders, or a
    label file (CSV, TSV, TXT: data/labelfile.py) with its images under ``images`` (default: the file's folder).

    ``split`` is a fraction spec for a single tree, or the path of a saved split.csv to reuse. With a train
    folder but no validation folder, a seeded, stratified validation split (``split``'s val fraction) is
    carved from train. Raises ImgclsError (one line) when the folder cannot be a classification data set.
    ``multi_label`` (several labels per image) is read from a label file: True asks for it, None finds it there.
    """
    from .labelfile import SUFFIXES as LABEL_SUFFIXES, is_label_file

    root = Path(root).expanduser()
    if is_label_file(root):
        return _from_label_file(root, split, seed, images, columns, multi_label)
    refuse_listing_flags(root, images, columns, multi_label)
    if root.suffix.lower() in LABEL_SUFFIXES and not root.exists():
        raise ImgclsError(f"--data {root}: file not found; give a label file (CSV, TSV or TXT) or a data folder")
    if _reuses_split_csv(split) and root.is_dir():
        return read_split_csv(Path(split), root)
    layout = scan_layout(root)
    errors = [message for severity, message in layout.problems if severity == "error"]
    if errors:
        raise ImgclsError(f"--data {root}: {errors[0]}")
    for severity, message in layout.problems:
        log.warning(f"WARNING: {message}")
    _log_left_out(layout)
    class_names = layout.class_names
    index = {name: i for i, name in enumerate(class_names)}
    found = {s: [(str(p.relative_to(root)), index[c]) for c in sorted(tree) for p in tree[c]]
             for s, tree in layout.trees.items()}
    given = tuple(s for s in SPLITS if s in layout.split_dirs)
    source = _with_val(DataSource(root=root, class_names=class_names, items=found, given=given), split, seed,
                       f"--data {root}")
    if given and source.split_made:
        fractions = _carving(split, "test" in found)
        carved = f"{fractions[1]:.0%} validation" + (f" and {fractions[2]:.0%} test" if fractions[2] else "")
        log.info(f"No validation folder: a seeded, stratified {carved} split carved from {layout.where('train')} "
                 f"(seed {seed}; saved in the run's split.csv)")
    return source


def _with_val(source: DataSource, split: str, seed: int, where: str, missing: str = "validation folder") -> DataSource:
    """``source`` (items of the splits given, or of None for one unsplit pool) with a validation split: as given,
    or carved, seeded and stratified, from train (or from the pool: then test too, by ``split``'s fractions)."""
    found = source.items
    if "val" in found:
        return source
    fractions = _carving(split, "test" in found)
    pool = found.get("train", found.get(None))
    if fractions[1] <= 0:
        raise ImgclsError(f"{where}: has no {missing} and --split {split} leaves none; "
                          "give val a share such as --split 0.8,0.2, or add a val/ folder")
    assignment = stratified_split(strata([label for _, label in pool]), fractions, seed)
    items = {s: [item for item, a in zip(pool, assignment) if a == s] for s in SPLITS}
    if "test" in found:
        items["test"] = found["test"]
    if not items["val"]:
        raise ImgclsError(f"{where}: too few images to make a validation split; add images or use --split 0.8,0.2")
    return replace(source, items=items, split_made=True)


def _from_label_file(path: Path, split: str, seed: int, images, columns: str | None,
                     multi_label: bool | None = None) -> DataSource:
    """A DataSource from a label file: its split column where it has one, else a split made as for one tree."""
    root, names, rows = listed_rows(path, images, columns, multi_label)
    several = bool(rows) and isinstance(rows[0][2], tuple)
    if len(names) < 2:
        raise ImgclsError(f"--data {path}: every row has the label {names[0] if names else None!r}; a classifier "
                          "needs two classes or more")
    index = {name: i for i, name in enumerate(names)}
    found: dict[str | None, list] = {}
    for _, rel, label, where in rows:
        found.setdefault(where, []).append((rel, tuple(sorted(index[n] for n in label)) if several else index[label]))
    found = {s: sorted(items, key=lambda item: (item[1], item[0])) for s, items in found.items()}  # as folders list
    given = tuple(s for s in SPLITS if s in found)
    numbers = {rel: number for number, rel, _, _ in rows}
    if _reuses_split_csv(split):
        return replace(read_split_csv(Path(split), root, names), listed=True, rows=numbers)
    return replace(_with_val(DataSource(root=root, class_names=names, items=found, given=given, multi_label=several),
                             split, seed, f"--data {path}", "val rows"), listed=True, rows=numbers)


def refuse_listing_flags(data, images, columns, multi_label: bool | None = None) -> None:
    """One error line for --images, --columns or --multi-label where --data is no label file (a folder, or none: a
    run's own)."""
    if multi_label:
        raise ImgclsError(f"--data {data}: --multi-label reads a label file (a CSV with several labels per row, or "
                          "one 0/1 column per label); class folders give one label per image")
    for flag, value in (("--images", images), ("--columns", columns)):
        if value is not None:
            where = f"--data {data} is not one" if data is not None else "no --data is given"
            raise ImgclsError(f"{flag} {value}: is for a label file given as --data, and {where}; drop {flag}")


def listed_rows(path: Path, images=None, columns: str | None = None, multi_label: bool | None = None
                ) -> tuple[Path, list[str], list[tuple[int, str, str, str | None]]]:
    """(the images folder, the class names, (row, path relative to that folder, label, split or None) for each row)
    of a label file (data/labelfile.py): each image found and each split named, the one reading of a label file
    that train, check and val share; one error line for a missing folder, no rows, or rows that mix a split and
    none. In multi-label data (``multi_label``, or found in the file) each label is a tuple of label names."""
    from .labelfile import read_rows, resolve

    root = Path(images).expanduser() if images else path.parent
    if not root.is_dir():
        raise ImgclsError(f"--images {root}: {'is a file' if root.exists() else 'folder not found'}; give the folder "
                          f"the paths in {path.name} are relative to")
    table = read_rows(path, columns, multi_label)
    rows = [(number, rel, label, row_split(path, number, value)) for number, rel, label, value in resolve(table, root)]
    if not rows:
        raise ImgclsError(f"--data {path}: no rows; give one image path and its label per row")
    if len({split for *_, split in rows}) > 1 and any(split is None for *_, split in rows):
        raise ImgclsError(f"--data {path}: some rows have a split and some do not; give every row one, or none")
    return root, table.class_names if table.class_names is not None else sorted({r[2] for r in rows}), rows


def row_split(path: Path, number: int, value: str | None) -> str | None:
    """The split a label file's row names (None where it names none); one error line for a value that is no split."""
    if value is None:
        return None
    found = split_of(value)
    if found is None:
        raise ImgclsError(f"--data {path}: row {number}: split {value!r} is not train, val or test (or a common name "
                          "for one); fix the row, or drop the split column to let imgcls split")
    return found


def _reuses_split_csv(split) -> bool:
    """True when --split names a saved split.csv rather than fractions."""
    return isinstance(split, (str, os.PathLike)) and str(split).endswith(".csv")


def _carving(split: str, test_given: bool) -> tuple[float, float, float]:
    """The train/val/test fractions imgcls splits by: --split's, or, where a test folder is given, only the
    validation share carved from train."""
    fractions = parse_split_fractions(split)
    return (1.0 - fractions[1], fractions[1], 0.0) if test_given else fractions


def without_files(source: DataSource, unusable: set[str], split: str, seed: int) -> DataSource:
    """``source`` less the ``unusable`` files. Where imgcls made the split from the folders (not from a reused
    split.csv), it is made again over the usable files alone, so that unreadable files cannot leave a class short
    of validation or test images; without unusable files the split stays exactly as it was."""
    items = {s: [item for item in listed if item[0] not in unusable] for s, listed in source.items.items()}
    lost = sum(map(len, source.items.values())) > sum(map(len, items.values()))
    if source.split_made and lost and not _reuses_split_csv(split):
        made = ("train", "val") if "test" in source.given else SPLITS
        pool = sorted((item for s in made for item in items.get(s, [])), key=lambda item: (item[1], item[0]))
        assignment = stratified_split(strata([label for _, label in pool]), _carving(split, "test" in source.given),
                                      seed)
        items |= {s: [item for item, a in zip(pool, assignment) if a == s] for s in made}
    return replace(source, items=items)


def _short_list(root: Path, paths: list[Path], limit: int = 5) -> str:
    shown = ", ".join(p.relative_to(root).as_posix() + ("/" if p.is_dir() else "") for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _log_left_out(layout: Layout) -> None:
    """Name, once, what imgcls does not read: non-image files, hidden/system entries, files outside classes."""
    root = layout.root
    if layout.ignored:
        log.warning(f"WARNING: ignored {len(layout.ignored)} file(s) that are not images by extension: "
                    f"{_short_list(root, layout.ignored)}")
    if layout.hidden:
        log.info(f"Ignored {len(layout.hidden)} hidden, system or imgcls output file(s)/folder(s): "
                 f"{_short_list(root, layout.hidden)}")
    if layout.unused:
        log.info(f"Not used (outside the class folders): {_short_list(root, layout.unused)}")


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


def images_root(args: dict) -> Path:
    """The folder a run's image paths are relative to, from its args.yaml: a label file's images, or the data folder."""
    return Path(args.get("images") or args["data"])


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
    args = read_yaml(args_file)
    data = args.get("data")
    if not data:
        raise ImgclsError(f"{args_file}: no data folder recorded; pass --data DIR")
    root = images_root(args)
    if (run_dir / "split.csv").exists():
        return read_split_csv(run_dir / "split.csv", root, class_names)
    if not root.is_dir():
        raise ImgclsError(f"{args_file}: the run's data folder {root} is gone; pass --data DIR")
    source = discover(root)
    if source.class_names != list(class_names):
        raise ImgclsError(f"{root}: its class folders {source.class_names} no longer match the model's classes "
                          f"{list(class_names)}; pass --data DIR")
    return source
