"""``imgcls check``: a data-set doctor for class folders.

It reads every file once (content hash, header, one draft-mode decode, optional perceptual
hash) and then reasons over the records with pure functions: bad files, lying extensions,
exact and near duplicates within a class, across classes (label conflicts) and across
splits (leakage), tiny images, extreme aspect ratios, colour modes, EXIF rotation and
class imbalance. ``imgcls train`` runs the fast part (no perceptual hashes) at start.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..config import DEFAULT_SPLIT
from ..console import progress_bar
from ..errors import ImgclsError
from ..record.files import is_inside
from .images import ImageReadError, read_image

# Perceptual hash: imagehash.phash with hash_size=16, i.e. 256 bits. Two images are near
# duplicates when their hashes differ in at most NEAR_THRESHOLD bits, a margin between resized or
# re-encoded copies and unrelated photos (docs/check.md).
# The 64-bit default hash is too coarse: distinct pictures with the same layout collide.
HASH_SIZE = 16
HASH_BITS = HASH_SIZE * HASH_SIZE
NEAR_THRESHOLD = 26
# JPEGs decode at a reduced DCT scale, at least 64x64, for hashing: phash looks at 64x64 pixels.
HASH_DRAFT_SIZE = (64, 64)
# Without hashing, the decode only proves the file is whole: the smallest DCT scale (1/8) does that.
PROVE_DRAFT_SIZE = (8, 8)
# An image whose short side is below imgsz * TINY_FRACTION is upscaled 4x or more in training.
TINY_FRACTION = 0.25
# Long side / short side above this: a centre crop keeps under a third of the picture.
ASPECT_LIMIT = 3.0
# Largest / smallest training class above this: worth --balance or more data.
IMBALANCE_LIMIT = 3.0
# Fewer training images than this in a class cannot be learned or evaluated reliably.
FEW_IMAGES = 5

SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}
EXTENSION_FORMATS = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF",
    ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF",
}
MODE_FAMILY = {
    "RGB": "colour", "YCbCr": "colour", "LAB": "colour", "HSV": "colour",
    "L": "grayscale", "1": "grayscale", "I": "grayscale", "F": "grayscale",
    "I;16": "grayscale", "I;16B": "grayscale", "I;16L": "grayscale",
    "RGBA": "alpha", "LA": "alpha", "PA": "alpha", "RGBa": "alpha", "La": "alpha",
    "P": "palette", "CMYK": "CMYK",
}
SEVERITIES = ("error", "warning", "info")
LABEL_ISSUES_PICTURED = 100  # check.html pictures this many likely label errors (check.json lists them all)
UNREAD_KINDS = ("ignored", "hidden", "unused")  # findings about files imgcls never reads: named, not pictured
Entry = tuple[Path, str, str, "str | None"]  # (path, path relative to the root, class, split)


@dataclass
class FileRecord:
    """Everything the check learned about one file, read once."""

    rel: str                 # path relative to the data root, with forward slashes
    class_name: str
    split: str | None        # train/val/test, or None for a single tree of class folders
    size_bytes: int = 0
    sha256: str | None = None
    format: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    orientation: int = 1     # EXIF orientation tag; 1 means upright
    colours: int | None = None  # distinct colours of the small decode, when at most 256
    phash: int | None = None
    error: str | None = None


@dataclass
class Finding:
    severity: str            # error, warning or info
    kind: str                # unreadable, label_conflict, leakage, duplicate, extension, placeholder, ...
    message: str
    paths: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)


@dataclass
class CheckReport:
    root: str
    layout: str                              # "splits" or "single tree"
    records: list[FileRecord]
    findings: list[Finding]
    counts: dict[str, dict[str, int]]        # split (or "all") -> class -> usable images
    imbalance_ratio: float | None
    settings: dict
    seconds: float = 0.0
    ignored: list[str] = field(default_factory=list)
    out_dir: str | None = None
    export: dict | None = None
    split_folders: dict[str, str] = field(default_factory=dict)  # split -> its folder, e.g. {"train": "Training/"}
    labels: dict | None = None               # the --labels review (engine/labels.py): ranked images and counts
    multi_label: bool = False                # several labels per image: counts are images that have each label

    def count(self, severity: str) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    @property
    def errors(self) -> int:
        return self.count("error")

    def to_dict(self) -> dict:
        return {
            "format": "imgcls-check", "version": 1, "root": self.root, "layout": self.layout,
            "split_folders": self.split_folders,
            "settings": self.settings, "images": len(self.records), "seconds": round(self.seconds, 2),
            "counts": self.counts, "imbalance_ratio": self.imbalance_ratio,
            **({"multi_label": True, "label_sets": label_sets(self.records)} if self.multi_label else {}),
            "errors": self.count("error"), "warnings": self.count("warning"), "infos": self.count("info"),
            "findings": [asdict(f) for f in self.findings],
            "ignored_files": self.ignored,
            "files": [asdict(r) | {"phash": None if r.phash is None else f"{r.phash:064x}"} for r in self.records],
            **({"export_clean": self.export} if self.export else {}),
            **({"labels": self.labels} if self.labels else {}),
        }


# ---------------------------------------------------------------- reading files


def _sniff_text(data: bytes) -> str | None:
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "an HTML page, not an image"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "a text file, not an image" if head and all(b >= 9 for b in head) else None


def read_record(path: Path, rel: str, class_name: str, split: str | None, *, perceptual: bool) -> FileRecord:
    """Read one file once: content hash, header facts, a draft decode, optionally its perceptual hash."""
    record = FileRecord(rel=rel, class_name=class_name, split=split)
    if not path.is_file() and path.exists():  # reading a named pipe would wait for a writer forever
        record.error = "not a regular file (a pipe, socket or device)"
        return record
    try:
        data = path.read_bytes()
    except OSError as e:
        record.error = f"cannot be read ({e.strerror or e})"
        return record
    record.size_bytes = len(data)
    if not data:
        record.error = "empty file (0 bytes)"
        return record
    record.sha256 = hashlib.sha256(data).hexdigest()
    try:
        decoded = read_image(data, draft_size=HASH_DRAFT_SIZE if perceptual else PROVE_DRAFT_SIZE,
                             count_colours=True)
    except ImageReadError as e:
        reason = str(e)
        if reason.startswith("not an image"):
            reason = _sniff_text(data) or reason
        record.error = reason
        return record
    record.format, record.width, record.height = decoded.format, decoded.width, decoded.height
    record.mode, record.orientation, record.colours = decoded.mode, decoded.orientation, decoded.colours
    if perceptual:
        record.phash = perceptual_hash(decoded.image)
    return record


def perceptual_hash(image) -> int:
    """256-bit DCT perceptual hash (imagehash.phash, hash_size=16) as an int."""
    try:
        import imagehash
    except ImportError:
        raise ImgclsError("near-duplicate search needs the imagehash package: pip install 'imgcls[check]'") from None
    return int(str(imagehash.phash(image, hash_size=HASH_SIZE)), 16)


def read_records(entries: list[Entry], *, perceptual: bool,
                 workers: int | None = None, progress: bool = False) -> list[FileRecord]:
    """read_record over (path, rel, class, split) entries in a thread pool (PIL and hashlib release the GIL)."""
    if perceptual:  # fail before reading anything when imagehash is missing
        try:
            import imagehash  # noqa: F401
        except ImportError:
            raise ImgclsError("near-duplicate search needs the imagehash package: pip install 'imgcls[check]'") \
                from None
    from .cores import default_threads

    workers = workers or default_threads()
    job = lambda e: read_record(*e, perceptual=perceptual)  # noqa: E731
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(job, entries, chunksize=1)
        return list(progress_bar(results, "checking", progress, total=len(entries), unit="img"))


# ---------------------------------------------------------------- pure grouping


def exact_groups(keys: list[str | None]) -> list[list[int]]:
    """Indices sharing the same non-empty key, for keys seen more than once, in first-seen order."""
    by_key: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        if key is not None:
            by_key.setdefault(key, []).append(i)
    return [members for members in by_key.values() if len(members) > 1]


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return np.unpackbits(x.view(np.uint8), axis=-1).reshape(*x.shape, 64).sum(axis=-1)


def hash_array(hashes: list[int], bits: int = HASH_BITS) -> np.ndarray:
    """Big-int hashes as an (n, bits/64) uint64 array."""
    words = bits // 64
    raw = b"".join(h.to_bytes(words * 8, "big") for h in hashes)
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(len(hashes), words)


def near_pairs(hashes: list[int], threshold: int, bits: int = HASH_BITS) -> list[tuple[int, int]]:
    """All (i, j), i < j, whose hashes differ in at most ``threshold`` bits.

    Brute force over the upper triangle in blocks. The first 64-bit word alone already
    rules out almost every pair (its distance is a lower bound of the total), so the other
    words are compared only for the few candidates left.
    """
    values = hash_array(hashes, bits)
    n, words = values.shape
    block = max(1, 4_000_000 // max(n, 1))
    pairs = []
    for start in range(0, n, block):
        rows, rest = values[start:start + block], values[start:]
        distance = _popcount(rows[:, None, 0] ^ rest[None, :, 0])
        r, c = np.nonzero(distance <= threshold)
        total = distance[r, c].astype(np.int32)
        for w in range(1, words):
            total += _popcount(rows[r, w] ^ rest[c, w])
            keep = total <= threshold
            r, c, total = r[keep], c[keep], total[keep]
        i, j = r + start, c + start
        keep = j > i
        pairs.extend(zip(i[keep].tolist(), j[keep].tolist()))
    return pairs


def connected_groups(n: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    """Connected components (size > 1) of the graph on n nodes with the given edges (union-find)."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def imbalance_ratio(per_class: dict[str, int]) -> float | None:
    """Largest class / smallest class; None unless there are two classes and none is empty."""
    sizes = list(per_class.values())
    if len(sizes) < 2 or min(sizes) == 0:
        return None
    return max(sizes) / min(sizes)


# ---------------------------------------------------------------- findings


def _where(record: FileRecord) -> str:
    return f"{record.split}/{record.class_name}" if record.split else record.class_name


def duplicate_findings(records: list[FileRecord], *, near: bool, threshold: int = NEAR_THRESHOLD) -> list[Finding]:
    """Exact (content hash) and, with ``near``, perceptual duplicate groups, classified by where the copies live."""
    usable = [i for i, r in enumerate(records) if r.error is None]
    findings = []
    exact = [[usable[k] for k in g] for g in exact_groups([records[i].sha256 for i in usable])]
    groups = [("exact", g) for g in exact]
    if near:
        hashed = [i for i in usable if records[i].phash is not None]
        pairs = near_pairs([records[i].phash for i in hashed], threshold)
        for g in connected_groups(len(hashed), pairs):
            members = [hashed[k] for k in g]
            if len({records[i].sha256 for i in members}) > 1:  # all-identical groups are reported as exact
                groups.append(("near", members))
    for match, members in groups:
        members = sorted(members, key=lambda i: (SPLIT_ORDER.get(records[i].split or "", 0), records[i].rel))
        classes = sorted({records[i].class_name for i in members})
        splits = sorted({records[i].split for i in members if records[i].split}, key=SPLIT_ORDER.get)
        paths = [records[i].rel for i in members]
        what = "identical files" if match == "exact" else "near-identical images (resized, re-encoded or edited)"
        details = {"match": match, "classes": classes, "splits": splits,
                   "path_splits": [records[i].split for i in members]}
        if match == "near":
            distances = [bin(records[a].phash ^ records[b].phash).count("1") for a in members for b in members if a < b]
            details["max_distance"] = max(distances)
        if len(classes) > 1:
            extra = f", and across {'/'.join(splits)}" if len(splits) > 1 else ""
            findings.append(Finding("error", "label_conflict",
                                    f"{len(members)} {what} filed under different classes "
                                    f"({', '.join(classes)}){extra}: at least one label is wrong", paths, details))
        elif len(splits) > 1:
            findings.append(Finding("error", "leakage",
                                    f"{len(members)} {what} in {' and '.join(splits)} ({classes[0]}): "
                                    "evaluation images seen in training inflate scores", paths, details))
        else:
            where = _where(records[members[0]])
            hint = " (a random split can put them on both sides)" if not splits else ""
            findings.append(Finding("warning", "duplicate", f"{len(members)} {what} within {where}{hint}",
                                    paths, details))
    return findings


def file_findings(records: list[FileRecord], *, imgsz: int) -> list[Finding]:
    """Per-file problems: unreadable files, lying extensions, placeholders, tiny and extreme images."""
    findings = []
    usable = [r for r in records if r.error is None]
    formats = [r.format for r in usable]
    main_format = max(set(formats), key=formats.count) if formats else ""
    photo_set = bool(formats) and formats.count(main_format) >= 0.8 * len(formats) and main_format != "GIF"
    min_side = max(1, int(imgsz * TINY_FRACTION))
    for r in records:
        if r.error is not None:
            findings.append(Finding("error", "unreadable", f"{r.rel}: {r.error}", [r.rel]))
            continue
        ext = Path(r.rel).suffix.lower()
        expected = EXTENSION_FORMATS.get(ext)
        if expected and r.format and r.format != expected and not (expected == "TIFF" and r.format == "TIFF"):
            findings.append(Finding("warning", "extension",
                                    f"{r.rel}: is a {r.format} file named {ext}; rename it to "
                                    f"{'.' + r.format.lower().replace('jpeg', 'jpg')} (other tools may refuse it)",
                                    [r.rel], {"format": r.format, "extension": ext}))
        if r.format == "GIF" and photo_set:
            findings.append(Finding("warning", "placeholder",
                                    f"{r.rel}: a GIF among {main_format} photos; scraped data sets hold "
                                    "'image not found' placeholders and animations as GIFs: look at it",
                                    [r.rel], {"format": "GIF"}))
        elif r.colours is not None and r.colours <= 2:
            findings.append(Finding("warning", "placeholder", f"{r.rel}: blank image ({r.colours} colour(s))",
                                    [r.rel], {"colours": r.colours}))
        if min(r.width, r.height) < min_side:
            findings.append(Finding("warning", "tiny",
                                    f"{r.rel}: {r.width}x{r.height} px, far smaller than the {imgsz} px model "
                                    f"input (upscaled {imgsz / min(r.width, r.height):.0f}x)",
                                    [r.rel], {"width": r.width, "height": r.height}))
        ratio = max(r.width, r.height) / max(1, min(r.width, r.height))
        if ratio > ASPECT_LIMIT:
            findings.append(Finding("warning", "aspect_ratio",
                                    f"{r.rel}: {r.width}x{r.height} px (aspect {ratio:.1f}:1); "
                                    "a centre crop keeps only its middle", [r.rel],
                                    {"ratio": round(ratio, 2), "width": r.width, "height": r.height}))
    return findings


def mode_findings(records: list[FileRecord]) -> list[Finding]:
    """Colour-mode mix and EXIF rotation: information, since imgcls converts and rotates on load."""
    usable = [r for r in records if r.error is None]
    families: dict[str, list[FileRecord]] = {}
    for r in usable:
        families.setdefault(MODE_FAMILY.get(r.mode, r.mode), []).append(r)
    findings = []
    if len(families) > 1:
        main = max(families, key=lambda f: len(families[f]))
        for family, members in sorted(families.items()):
            if family == main:
                continue
            classes = sorted({r.class_name for r in members})
            findings.append(Finding(
                "info", "colour_mode",
                f"{len(members)} {family} image(s) among {len(families[main])} {main} ones "
                f"(classes: {', '.join(classes)}); imgcls converts all to RGB, but a mode found in one class only "
                "can become a shortcut the model learns", [r.rel for r in members],
                {"family": family, "modes": sorted({r.mode for r in members}), "classes": classes}))
    rotated = [r for r in usable if r.orientation not in (0, 1)]
    if rotated:
        findings.append(Finding("info", "exif_rotation",
                                f"{len(rotated)} image(s) carry an EXIF rotation; imgcls applies it as photo "
                                "viewers do, tools that ignore it see them sideways", [r.rel for r in rotated],
                                {"orientations": sorted({r.orientation for r in rotated})}))
    return findings


def count_table(records: list[FileRecord], class_names: list[str], multi_label: bool = False
                ) -> dict[str, dict[str, int]]:
    """Usable images per class for each split ("all" for a single tree); in multi-label data, the images that have
    each label (an image counts once under every label it has)."""
    table: dict[str, dict[str, int]] = {}
    for r in records:
        if r.error is None:
            split = r.split or "all"
            table.setdefault(split, {c: 0 for c in class_names})
            for name in labels_of(r, multi_label):
                table[split][name] = table[split].get(name, 0) + 1
    return dict(sorted(table.items(), key=lambda kv: SPLIT_ORDER.get(kv[0], -1)))


def labels_of(record: FileRecord, multi_label: bool) -> list[str]:
    """A record's labels: its class, or in multi-label data the labels its class name joins with ";"."""
    if not multi_label:
        return [record.class_name]
    return [name for name in record.class_name.split(";") if name]


def label_sets(records: list[FileRecord]) -> dict:
    """Multi-label data at a glance: labels per image (mean, fewest, most), images with none, and the most common
    sets of labels."""
    sizes, sets = [], {}
    for r in records:
        if r.error is None:
            names = labels_of(r, True)
            sizes.append(len(names))
            key = ";".join(names) or "(none)"
            sets[key] = sets.get(key, 0) + 1
    if not sizes:
        return {}
    common = sorted(sets.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    return {"cardinality": round(float(np.mean(sizes)), 3), "fewest": min(sizes), "most": max(sizes),
            "without_labels": sizes.count(0), "distinct_sets": len(sets), "most_common": dict(common)}


def balance_findings(counts: dict[str, dict[str, int]], multi_label: bool = False
                     ) -> tuple[list[Finding], float | None]:
    """Imbalance and starved classes (labels, in multi-label data), judged on the training split (or the whole
    single tree)."""
    base = counts.get("train") or counts.get("all") or {}
    ratio = imbalance_ratio(base)
    what = "label" if multi_label else "class"
    findings = []
    empty = sorted(c for c, n in base.items() if n == 0)
    if empty:
        findings.append(Finding("error", "few_images", f"{what}(es) {empty} have no usable training images", [],
                                {"classes": empty}))
    if ratio is not None and ratio > IMBALANCE_LIMIT:
        largest, smallest = max(base, key=base.get), min(base, key=base.get)
        findings.append(Finding("warning", "imbalance",
                                f"{what} imbalance {ratio:.1f}:1 ({largest} {base[largest]}, {smallest} "
                                f"{base[smallest]} images); consider `imgcls train --balance` or more data",
                                [], {"ratio": round(ratio, 3), "largest": largest, "smallest": smallest}))
    few = sorted(c for c, n in base.items() if 0 < n < FEW_IMAGES)
    if few:
        findings.append(Finding("warning", "few_images",
                                f"{what}(es) {few} have fewer than {FEW_IMAGES} usable training images", [],
                                {"classes": few}))
    return findings, None if ratio is None else round(ratio, 3)


def analyse(records: list[FileRecord], class_names: list[str], *, imgsz: int, near: bool,
            threshold: int = NEAR_THRESHOLD, multi_label: bool = False) -> tuple[list[Finding], dict, float | None]:
    """All findings from the records (pure), errors first."""
    findings = file_findings(records, imgsz=imgsz)
    findings += duplicate_findings(records, near=near, threshold=threshold)
    counts = count_table(records, class_names, multi_label)
    more, ratio = balance_findings(counts, multi_label)
    findings += more + mode_findings(records)
    findings.sort(key=lambda f: SEVERITIES.index(f.severity))
    return findings, counts, ratio


# ---------------------------------------------------------------- the data folder


def collect_entries(root: Path, images: str | os.PathLike | None = None, columns: str | None = None,
                    multi_label: bool | None = None):
    """Files to check under root (or listed in the label file ``root``), as train reads them: (entries, the
    folders.Layout, layout findings)."""
    from .folders import refuse_listing_flags, scan_layout
    from .labelfile import is_label_file

    if is_label_file(root):
        return _listed_entries(root, images, columns, multi_label)
    refuse_listing_flags(root, images, columns, multi_label)
    layout = scan_layout(root)
    findings = [Finding(severity, "layout", message) for severity, message in layout.problems]
    if not layout.trees.get(None, True):
        raise ImgclsError(f"--data {root}: no class folders found; expected one sub-folder per class "
                          "(or train/ and val/ folders of class folders)")
    entries = [(p, p.relative_to(root).as_posix(), class_name, split)
               for split, per_class in layout.trees.items() for class_name, files in per_class.items() for p in files]
    if layout.split_dirs and "train" in layout.trees and "val" not in layout.trees:
        findings.append(Finding("info", "layout", f"no validation folder: imgcls train carves a seeded, stratified "
                                f"validation split from {layout.where('train')} (saved in the run's split.csv)"))
    ignored = layout.relative(layout.ignored)
    if ignored:
        findings.append(Finding("info", "ignored", f"{len(ignored)} file(s) without an image extension are "
                                "ignored by imgcls", ignored))
    if layout.hidden:
        findings.append(Finding("info", "hidden", f"{len(layout.hidden)} hidden, system or imgcls output "
                                "file(s)/folder(s) (dot-names, __MACOSX, Thumbs.db, imgcls's runs, ...) are ignored",
                                layout.relative(layout.hidden)))
    if layout.unused:
        findings.append(Finding("info", "unused", f"{len(layout.unused)} file(s)/folder(s) outside the class "
                                "folders are not used", layout.relative(layout.unused)))
    return entries, layout, findings


def _listed_entries(path: Path, images, columns: str | None, multi_label: bool | None = None):
    """A label file's images as check entries, with a Layout of them (rooted at the images folder)."""
    from .folders import SPLITS, Layout, listed_rows

    root, _, rows = listed_rows(path, images, columns, multi_label)
    trees: dict[str | None, dict[str, list[Path]]] = {}
    entries = []
    for _, rel, label, where in rows:
        # multi-label: the image is counted under each of its labels, and its record names them joined by ";"
        for name in label if isinstance(label, tuple) else (label,):
            trees.setdefault(where, {}).setdefault(name, []).append(root / rel)
        entries.append((root / rel, rel, ";".join(label) if isinstance(label, tuple) else label, where))
    trees = dict(sorted(trees.items(), key=lambda kv: SPLITS.index(kv[0]) if kv[0] else 0))
    several = any(isinstance(label, tuple) for _, _, label, _ in rows)
    return entries, Layout(root=root, split_dirs={}, trees=trees, multi_label=several), []


def run_check(data: str | os.PathLike, *, out: str | os.PathLike | None = None, imgsz: int = 224,
              near: bool = True, threshold: int = NEAR_THRESHOLD, workers: int | None = None,
              export_clean: str | os.PathLike | None = None, write: bool = True,
              progress: bool = False, review=None, export_relabel: str | os.PathLike | None = None,
              relabel: str | os.PathLike | None = None, images: str | os.PathLike | None = None,
              columns: str | None = None, multi_label: bool | None = None) -> CheckReport:
    """Check a data folder end to end and return what was found; ``out`` and ``write`` say where the caller will
    write the report (engine/check.py), checked here before any work. ``export_clean`` writes a cleaned copy, with
    the ``relabel`` CSV applied to it when given. ``review(records, class_names, root, known_groups)`` adds findings
    and the "labels" section (``imgcls check --labels``, engine/labels.py), which ``export_relabel`` writes out as
    an editable CSV.
    """
    from .labelfile import is_label_file

    root = Path(data).expanduser()
    if is_label_file(root):  # the report is about the images the file lists, in their folder
        root, listed = (Path(images).expanduser() if images else root.parent), root
    else:
        listed = None
    _check_targets(root, write, out, export_clean, export_relabel, relabel)
    t0 = time.time()
    entries, layout, layout_issues = collect_entries(listed or root, images, columns, multi_label)
    if export_relabel is not None and layout.multi_label:
        raise ImgclsError(f"--export-relabel {export_relabel}: the relabel file is for one label per image; {data} "
                          "has several: drop --export-relabel (check.json ranks the likely label errors)")
    relabelled = _read_relabel(relabel, entries)
    records = read_records(entries, perceptual=near, workers=workers, progress=progress)
    findings, counts, ratio = analyse(records, layout.class_names, imgsz=imgsz, near=near, threshold=threshold,
                                      multi_label=layout.multi_label)
    section = None
    if review is not None:
        known = [set(f.paths) for f in findings if f.details.get("match")]
        more, section = review(records, layout.class_names, root, known)
        findings += more
    findings = sorted(layout_issues + findings, key=lambda f: SEVERITIES.index(f.severity))
    settings = {"imgsz": imgsz, "near_duplicates": near, "near_threshold_bits": threshold,
                "tiny_below_px": max(1, int(imgsz * TINY_FRACTION)), "aspect_limit": ASPECT_LIMIT,
                "imbalance_limit": IMBALANCE_LIMIT, "hash": f"imagehash.phash, {HASH_BITS} bits, on a draft decode"}
    report = CheckReport(str(root), "splits" if layout.split_dirs else "single tree", records, findings, counts,
                         ratio, settings, seconds=time.time() - t0, ignored=layout.relative(layout.ignored),
                         split_folders={s: layout.where(s) for s in layout.split_dirs}, labels=section,
                         multi_label=layout.multi_label)
    if export_clean is not None:
        report.export = export_clean_copy(report, Path(export_clean), relabelled)
    if export_relabel is not None:
        from .relabel import write_relabel_csv

        write_relabel_csv(export_relabel, relabel_rows(section))
        section["relabel_file"] = str(export_relabel)
    return report


def relabel_rows(section: dict) -> list[dict]:
    """Rows of the relabel CSV, most likely label error first: images cleanlab flags are proposed for relabelling
    to the suggested class, every other image is kept; a person edits the actions before applying it."""
    return [row | {"action": "relabel" if row["flagged"] else "keep"} for row in section["ranked"]]


def _read_relabel(relabel, entries: list[Entry]):
    if relabel is None:
        return None
    from .relabel import read_relabel_csv

    return read_relabel_csv(relabel, {rel: class_name for _, rel, class_name, _ in entries})


def _check_targets(root: Path, write: bool, out, export_clean, export_relabel, relabel) -> None:
    """Every output must be new and outside the data folder; refused before anything is read."""
    if export_clean is not None:
        _check_export_target(root, Path(export_clean))
    if relabel is not None and export_clean is None:
        raise ImgclsError(f"--relabel {relabel}: applies to the --export-clean DIR copy here (or use "
                          "`imgcls train --relabel FILE`); add --export-clean DIR")
    if export_relabel is not None:
        target = Path(export_relabel)
        if is_inside(target, root):
            raise ImgclsError(f"--export-relabel {target}: is inside --data {root}; write it outside the data folder")
        if target.exists():
            raise ImgclsError(f"--export-relabel {target}: already exists (it may hold your edits); choose a new "
                              "file name")
        if not target.parent.is_dir():
            raise ImgclsError(f"--export-relabel {target}: its folder {target.parent} does not exist")
    if write and out is not None:
        _check_out_target(root, Path(out), None if export_clean is None else Path(export_clean))
    elif write and root.is_dir() and is_inside(Path("runs"), root):
        raise ImgclsError(f"--data {root}: holds the current folder, so the report (runs/check) would land among the "
                          "images; pass --out DIR outside it")


# ---------------------------------------------------------------- clean copy


REPORT_FILES = ("check.json", "check.html", "class_counts.png")


def _check_export_target(root: Path, dest: Path) -> None:
    if is_inside(dest, root) or is_inside(root, dest):
        raise ImgclsError(f"--export-clean {dest}: must be outside --data {root} (the source is never modified)")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ImgclsError(f"--export-clean {dest}: already exists and is not empty; choose a new folder")


def _check_out_target(root: Path, out: Path, export_clean: Path | None) -> None:
    """--out must not drop report files among the images, nor replace files imgcls did not write."""
    if is_inside(out, root):
        raise ImgclsError(f"--out {out}: is inside --data {root}, so the report would land among the images; "
                          "choose a folder outside it")
    if export_clean is not None and (is_inside(out, export_clean) or is_inside(export_clean, out)):
        raise ImgclsError(f"--out {out}: must not hold or be inside --export-clean {export_clean}; "
                          "the clean copy holds images only")
    if out.exists() and not out.is_dir():
        raise ImgclsError(f"--out {out}: is a file; choose a folder")
    taken = [name for name in REPORT_FILES if (out / name).exists()]
    if taken and not _is_check_report(out / "check.json"):
        raise ImgclsError(f"--out {out}: already holds {taken[0]}, which imgcls check did not write; "
                          "choose a new folder")


def _is_check_report(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == "imgcls-check"
    except (OSError, ValueError, AttributeError):
        return False


def clean_selection(report: CheckReport) -> tuple[list[str], dict[str, list[str]]]:
    """Files to keep and, by reason, files to drop (pure, from the records and findings).

    Bad files and placeholder-like images go; exact copies stay once (in the most held-out
    split, test > val > train);
    exact copies under different classes all go (the right label is unknown); near copies
    across splits stay only in the most held-out split.
    """
    by_rel = {r.rel: r for r in report.records}
    dropped: dict[str, list[str]] = {"unreadable": [], "placeholder": [], "duplicate": [], "label_conflict": [],
                                     "leakage": []}
    drop: set[str] = set()
    for r in report.records:
        if r.error is not None:
            dropped["unreadable"].append(r.rel)
            drop.add(r.rel)
    for f in report.findings:
        if f.kind == "placeholder" and f.paths[0] not in drop:
            dropped["placeholder"].append(f.paths[0])
            drop.add(f.paths[0])
    for f in report.findings:
        match = f.details.get("match")
        if match is None or f.kind not in ("duplicate", "leakage", "label_conflict"):
            continue
        ranked = sorted(f.paths, key=lambda p: (-SPLIT_ORDER.get(by_rel[p].split or "", 0), p))
        if match == "exact" and f.kind == "label_conflict":
            gone = ranked
            reason = "label_conflict"
        elif match == "exact":
            gone = ranked[1:]
            reason = "leakage" if f.kind == "leakage" else "duplicate"
        elif len(f.details.get("splits", [])) > 1:
            top = by_rel[ranked[0]].split
            gone = [p for p in ranked if by_rel[p].split != top]
            reason = "leakage"
        else:
            continue
        for p in gone:
            if p not in drop:
                drop.add(p)
                dropped[reason].append(p)
    keep = [r.rel for r in report.records if r.rel not in drop]
    return keep, {k: sorted(v) for k, v in dropped.items()}


def export_clean_copy(report: CheckReport, dest: Path, relabel=None) -> dict:
    """Copy the kept files into dest with the same layout: written into a marked staging folder beside
    dest, then renamed, so an interrupted export never looks finished and nothing else is ever removed.

    With a ``relabel`` file (data/relabel.py) applied: its dropped images stay out, and each relabelled image is
    copied into its new class folder (the source keeps it where it was).
    """
    from ..record.files import staged_dir

    keep, dropped = clean_selection(report)
    moved = {}
    if relabel is not None:
        dropped["relabel_drop"] = sorted(rel for rel in keep if rel in relabel.drop)
        keep = [rel for rel in keep if rel not in relabel.drop]
        moved = _relabel_targets(report, keep, relabel)
    root = Path(report.root)
    dest = Path(dest)
    with staged_dir(dest) as staging:
        for rel in keep:
            target = staging / moved.get(rel, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, target)
    result = {"folder": str(dest), "kept": len(keep), "dropped": dropped}
    if relabel is not None:
        result["relabelled"] = {rel: moved[rel] for rel in sorted(moved)}
        result["relabel_file"] = relabel.file
    return result


def _relabel_targets(report: CheckReport, keep: list[str], relabel) -> dict[str, str]:
    """rel -> its path in the clean copy, for the relabelled images; a name already taken there gets a suffix."""
    from .relabel import moved_path

    by_rel = {r.rel: r for r in report.records}
    taken = set(keep)
    moved = {}
    for rel in keep:
        if rel not in relabel.new_class:
            continue
        record = by_rel[rel]
        prefix = report.split_folders.get(record.split, "") if record.split else ""
        target = moved_path(rel, prefix, relabel.new_class[rel])
        stem, dot, suffix = target.rpartition(".")
        n = 2
        while target in taken:
            target = f"{stem}_{n}.{suffix}" if dot else f"{suffix}_{n}"
            n += 1
        taken.add(target)
        moved[rel] = target
    return moved


# ---------------------------------------------------------------- the fast check inside train


def quick_check(source, *, min_side: int, workers: int = 2, split: str = DEFAULT_SPLIT, seed: int = 0):
    """What ``imgcls train`` runs before the first epoch: decode, content hashes, sizes.

    Perceptual hashes only when the user gave two or more split folders (and imagehash is installed), so that
    near-identical copies on both sides of their split are named as leakage; other near duplicates are left
    to ``imgcls check``. Returns the source without unusable files (a split imgcls made is made again without
    them, with ``split`` and ``seed``: folders.without_files) and the compact findings block (empty when all
    is well).
    """
    from dataclasses import replace

    from .folders import without_files

    near = len(source.given) > 1 and _imagehash_installed()
    entries = [(source.root / rel, rel, source.label_name(label), split_name)
               for split_name, items in source.items.items() for rel, label in items]
    records = read_records(entries, perceptual=near, workers=workers)
    bad = {r.rel: r.error for r in records if r.error is not None}
    cleaned = replace(without_files(source, set(bad), split, seed), skipped=sorted(bad.items()))
    now_in = {rel: split_name for split_name, items in cleaned.items.items() for rel, _ in items}
    for record in records:  # the findings name each file's split as training will see it
        record.split = now_in.get(record.rel, record.split)
    findings, _, _ = analyse(records, source.class_names, imgsz=min_side * 4, near=near,
                             multi_label=source.multi_label)
    findings = [f for f in findings if f.details.get("match") != "near" or f.kind == "leakage"]
    return cleaned, format_compact(findings, len(records), str(source.root), imgsz=min_side * 4)


def _imagehash_installed() -> bool:
    from importlib.util import find_spec

    return find_spec("imagehash") is not None


def _with_split(path: str, split: str | None) -> str:
    """Name the split when the path does not (a split imgcls made, e.g. val carved from Training/)."""
    from .folders import split_of

    return path if not split or split_of(path.split("/")[0]) == split else f"{path} ({split})"


def _copies(findings: list[Finding]) -> list[str]:
    """'a.png = b.png' for each group of copies, naming the split of each copy when its path does not."""
    return [" = ".join(_with_split(path, split) for path, split in zip(f.paths, f.details["path_splits"]))
            for f in findings]


def short_list(paths: list[str], limit: int) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def format_compact(findings: list[Finding], n_files: int, data: str, imgsz: int | None = None) -> str:
    """One block for the train log: one line per kind of finding, a few names each."""
    kinds: dict[str, list[Finding]] = {}
    for f in findings:
        if f.severity != "info":
            kinds.setdefault(f.kind, []).append(f)
    if not kinds:
        return ""
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = sum(1 for f in findings if f.severity == "warning")
    lines = [f"WARNING: data check of {n_files} files: {errors} error(s), {warnings} warning(s)"]
    tiny = f" (under {max(1, int(imgsz * TINY_FRACTION))} px for {imgsz} px)" if imgsz else ""
    labels = {
        "label_conflict": "group(s) of identical files under different classes",
        "duplicate": "group(s) of identical files", "extension": "file(s) whose extension lies about the format",
        "placeholder": "placeholder-like image(s)", "tiny": f"image(s) far smaller than the model input{tiny}",
        "aspect_ratio": "image(s) with an extreme aspect ratio",
    }
    for kind, items in kinds.items():
        if kind == "unreadable":  # one per line: these are the files training leaves out
            lines.append(f"  skipped {len(items)} unusable file(s):")
            lines.extend(f"    {f.message}" for f in items[:20])
            if len(items) > 20:
                lines.append(f"    ... and {len(items) - 20} more")
        elif kind == "leakage":
            what = "identical or near-identical images" if any(f.details["match"] == "near" for f in items) \
                else "identical files"
            lines.append(f"  {len(items)} group(s) ({sum(len(f.paths) for f in items)} images) of {what} in more "
                         f"than one split (leakage): {short_list(_copies(items), 3)}")
        elif kind in labels:
            if items[0].details.get("match"):
                named = _copies(items)
            elif kind in ("tiny", "aspect_ratio"):
                named = [f"{f.paths[0]} ({f.details['width']}x{f.details['height']})" for f in items]
            else:
                named = [f.paths[0] for f in items]
            lines.append(f"  {len(items)} {labels[kind]}: {short_list(named, 3)}")
        else:
            lines.extend(f"  {f.message}" for f in items)
    lines.append(f"  `imgcls check --data {data}` also finds near duplicates, shows thumbnails and, with "
                 "--export-clean DIR, writes a cleaned copy.")
    return "\n".join(lines)
