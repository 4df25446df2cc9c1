"""The relabel file: a CSV a person edits (path, given, suggested, score, action) and imgcls applies.

``imgcls check --labels --export-relabel FILE`` writes it, most likely label error first; ``imgcls train
--relabel FILE`` and ``imgcls check --export-clean DIR --relabel FILE`` apply it. Applying never touches the
source folders: train reads the images where they are with the corrected labels (and records them in the run's
split.csv), and the clean copy puts each relabelled image into its new class folder.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ImgclsError

COLUMNS = ("path", "given", "suggested", "score", "action")
ACTIONS = ("keep", "relabel", "drop")


@dataclass
class Relabel:
    """What a relabel file asks for: path (relative to the data folder) -> new class, and paths to leave out."""

    file: str
    new_class: dict[str, str] = field(default_factory=dict)
    drop: set[str] = field(default_factory=set)

    def describe(self) -> str:
        return f"{len(self.new_class)} relabelled, {len(self.drop)} dropped (from {self.file})"


def relabel_csv_text(rows: list[dict]) -> str:
    """The CSV text of rows with the COLUMNS keys, in the order given."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([row["path"], row["given"], row["suggested"], score_text(row["score"]), row["action"]])
    return buffer.getvalue()


def score_text(score) -> str:
    """The score column as relabel_csv_text writes it."""
    return f"{float(score):.6f}"


def csv_field(value: str) -> str:
    """One field exactly as relabel_csv_text writes it (quoted only where the csv module quotes it), so that a page
    can assemble the file line by line and write the same bytes."""
    if value == "":  # the csv module writes a lone empty field as "", an empty field among others as nothing
        return ""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([value])
    return buffer.getvalue()[:-1]


def read_relabel_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a relabel file as written, unchecked (the report's label review redraws from them); missing
    columns read as ''. ImgclsError when the file cannot be read or has no path and action columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ImgclsError(f"{path}: cannot be read as CSV ({e})") from None
    if rows and not {"path", "action"} <= rows[0].keys():
        raise ImgclsError(f"{path}: not a relabel file (expected the columns {','.join(COLUMNS)})")
    return [{column: (row.get(column) or "") for column in COLUMNS} for row in rows]


def write_relabel_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    from ..record.files import atomic_write_text

    atomic_write_text(path, relabel_csv_text(rows))


def read_relabel_csv(path: str | os.PathLike, classes: dict[str, str], flag: str = "--relabel") -> Relabel:
    """Read and check a relabel file against the data: ``classes`` maps each image's relative path to its class
    folder. One clear error for a missing file or column, an unknown action or class, a path that is not an image
    of the data folder, or a row whose ``given`` class no longer matches the folder (the file is out of date)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            header = rows[0].keys() if rows else []
    except FileNotFoundError:
        raise ImgclsError(f"{flag} {path}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ImgclsError(f"{flag} {path}: cannot be read as CSV ({e})") from None
    missing = [c for c in ("path", "action") if c not in header]
    if not rows or missing:
        raise ImgclsError(f"{flag} {path}: not a relabel file (expected the columns {','.join(COLUMNS)}, as "
                          "`imgcls check --labels --export-relabel FILE` writes them)")
    known = sorted(set(classes.values()))
    relabel = Relabel(str(path))
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{flag} {path} line {number}"
        rel = (row.get("path") or "").strip().replace("\\", "/")
        action = (row.get("action") or "").strip().lower()
        if action not in ACTIONS:
            raise ImgclsError(f"{where}: action {row.get('action')!r}; write keep, relabel or drop")
        if rel not in classes:
            raise ImgclsError(f"{where}: {rel!r} is not an image of the data folder; was the file made for "
                              "another folder?")
        given = (row.get("given") or "").strip()
        if given and given != classes[rel]:
            raise ImgclsError(f"{where}: {rel} is now in class {classes[rel]!r}, the file says {given!r}; "
                              "the file is out of date, run `imgcls check --labels --export-relabel` again")
        if action == "drop":
            relabel.drop.add(rel)
        elif action == "relabel":
            target = (row.get("suggested") or "").strip()
            if target not in known:
                raise ImgclsError(f"{where}: relabel {rel} to {target!r}, which is not a class "
                                  f"({', '.join(known)})")
            if target != classes[rel]:
                relabel.new_class[rel] = target
    return relabel


def apply_to_source(source, relabel: Relabel):
    """The DataSource with relabelled images under their new class and dropped images left out. The split
    becomes one imgcls made (split_made), so the run's split.csv records the corrected labels."""
    from .folders import DataSource

    index = {name: i for i, name in enumerate(source.class_names)}
    items = {split: [(rel, index[relabel.new_class.get(_posix(rel), source.class_names[label])])
                     for rel, label in pairs if _posix(rel) not in relabel.drop]
             for split, pairs in source.items.items()}
    return DataSource(source.root, source.class_names, items, True, list(source.skipped), source.given)


def source_classes(source) -> dict[str, str]:
    """relative path (forward slashes) -> class name, for every image of a DataSource."""
    return {_posix(rel): source.class_names[label] for pairs in source.items.values() for rel, label in pairs}


def moved_path(rel: str, class_prefix: str, new_class: str) -> str:
    """Where a relabelled image goes in a clean copy: ``class_prefix`` is the folder holding the class folders
    ('' for a single tree, 'train/' for split folders); the rest of the path below the class folder is kept."""
    below = rel[len(class_prefix):].split("/", 1)[1]
    return f"{class_prefix}{new_class}/{below}"


def _posix(rel: str) -> str:
    return str(rel).replace(os.sep, "/")
