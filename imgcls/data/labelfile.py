"""A label file beside a folder of images: Kaggle's ``train.csv`` (``id,label``), a ``labels.csv``
(``filename,breed``), a TSV, or a ``train_list.txt`` of ``path index`` lines with a names file.

The columns are recognised by their header, or named with ``--columns PATH,LABEL``; an optional split column
(train/val/test under any common name) gives the split. Paths are relative to ``--images`` (default: the label
file's folder); an id without an extension is the one image file of that stem. Every bad row is one error line
that names the row and what to do. The file and the images are only read.

Several labels per image (multi-label data) come in either of two forms, found from the file or asked for with
``--multi-label``: one label column whose cells hold several labels separated by ``;``, ``|`` or spaces (Planet's
``agriculture clear primary water``), or one 0/1 column per label beside the path column (ChestX-ray14, UC Merced
multi-label). In multi-label data a row with no label is a valid negative (an image with none of the labels); a 0/1
cell holding anything but 0 or 1 is an error line naming the row and the column.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImgclsError
from .images import is_hidden, is_image_path, is_imgcls_output

log = logging.getLogger("imgcls")

SUFFIXES = (".csv", ".tsv", ".txt")
PATH_HEADERS = ("path", "filepath", "file_path", "file", "filename", "file_name", "fname", "image", "image_path",
                "image_name", "image_id", "img", "img_path", "img_name", "id")
LABEL_HEADERS = ("label", "labels", "class", "class_name", "classname", "category", "target", "tag", "tags", "y")
SPLIT_HEADERS = ("split", "subset", "set", "fold_name")
# A header none of the above names exactly is recognised by a word in it (``Image Index``, ``IMAGE\LABEL``,
# ``Finding Labels``, ChestX-ray14's and UC Merced's); "id" is left out, as ``Patient ID`` is no image.
PATH_WORDS = ("image", "img", "path", "file", "filename")
LABEL_WORDS = ("labels", "label", "tags", "tag", "class", "classes", "category", "categories")
NAMES_FILES = ("names.txt", "classes.txt", "class_names.txt", "labels.txt")


ZERO_ONE = {"0": False, "1": True, "0.0": False, "1.0": True}
MULTI_SEPARATORS = re.compile(r"\s*[;|]\s*")


@dataclass
class LabelRows:
    """What a label file says: (row number, image path as written, label, split or None) for every row; in
    multi-label data each label is a tuple of label names (empty for an image with none of them)."""

    file: Path
    rows: list[tuple[int, str, str | tuple[str, ...], str | None]]
    class_names: list[str] | None = None    # from a names file or the 0/1 columns, in their order (else sorted)
    multi_label: bool = False


def is_label_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in SUFFIXES and Path(path).is_file()


def read_rows(path: Path, columns: str | None = None, multi_label: bool | None = None) -> LabelRows:
    """The rows of a label file: a CSV/TSV with a header, or a TXT of ``path label`` lines. ``multi_label``: True
    reads several labels per row, False one, None decides from the file (several labels in a cell, or 0/1
    columns)."""
    text = _text(path)
    first = next((line for line in text.splitlines() if line.strip()), "")
    if path.suffix.lower() == ".txt" and "," not in first and "\t" not in first:
        if multi_label:
            raise ImgclsError(f"--data {path}: --multi-label reads a CSV or TSV (a path column and a labels column, "
                              "or one 0/1 column per label); save the list as CSV")
        return _list_rows(path, text)
    dialect = csv.excel_tab if path.suffix.lower() == ".tsv" or "\t" in first else csv.excel
    table = [row for row in csv.reader(io.StringIO(text), dialect)]
    if not table:
        raise ImgclsError(f"--data {path}: the file is empty; give a CSV with a header such as path,label")
    header = [h.strip() for h in table[0]]
    body = [(number, row) for number, row in enumerate(table[1:], start=2) if any(cell.strip() for cell in row)]
    flags = _zero_one_columns(header, body, columns, multi_label)
    if flags is not None:
        return _flag_rows(path, header, body, *flags)
    at_path, at_label, at_split = _columns(path, header, columns)
    cell = (lambda row, i: row[i].strip() if i is not None and i < len(row) else "")
    rows = [(number, cell(row, at_path), cell(row, at_label), cell(row, at_split) or None) for number, row in body]
    if multi_label is False or (multi_label is None and not _several_per_cell([r[2] for r in rows])):
        if multi_label is None and any(" " in r[2] for r in rows):
            log.info(f"{path.name}: labels with spaces are read as one class each ({rows[0][2]!r}...); pass "
                     "--multi-label if they are several labels an image has")
        return _named(path, rows)
    marked = any(";" in r[2] or "|" in r[2] for r in rows)  # then names may hold spaces, in every row
    rows = [(n, p, _split_labels(label, marked), s) for n, p, label, s in rows]
    if multi_label is None:
        log.info(f"{path.name}: several labels per image (labels separated in the cells of column "
                 f"{header[at_label]!r}): multi-label training")
    return LabelRows(path, rows, sorted({name for row in rows for name in row[2]}), multi_label=True)


def _normalised(header: list[str]) -> list[str]:
    """Headers as compared with the names above: lower case, spaces as "_"."""
    return [h.lower().replace(" ", "_") for h in header]


def _find(lowered: list[str], exact: tuple[str, ...], words: tuple[str, ...] = (), skip: tuple = ()) -> int | None:
    """The column a header names exactly, else the first whose header holds one of ``words`` (split at anything
    but letters and digits)."""
    found = next((lowered.index(h) for h in exact if h in lowered and lowered.index(h) not in skip), None)
    if found is None:
        found = next((i for word in words for i, h in enumerate(lowered)
                      if i not in skip and word in re.split(r"[^a-z0-9]+", h)), None)
    return found


def _several_per_cell(cells: list[str]) -> bool:
    """Whether label cells hold several labels: a ``;`` or ``|`` in one, or spaces that separate a small vocabulary
    (fewer distinct words than distinct cells, as in Planet's ``clear primary water``) rather than write class
    names of two words (``golden retriever``)."""
    if any(";" in c or "|" in c for c in cells):
        return True
    distinct = set(cells)
    spaced = [c for c in distinct if len(c.split()) > 1]
    return bool(spaced) and len({word for c in distinct for word in c.split()}) < len(distinct)


def _split_labels(cell: str, marked: bool) -> tuple[str, ...]:
    """The labels of one cell: split at ``;`` or ``|`` when the file separates labels with them (``marked``; names
    may then hold spaces: ChestX-ray14's ``No Finding``), else at spaces; each label once, in order."""
    parts = MULTI_SEPARATORS.split(cell) if marked else cell.split()
    return tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))


def _zero_one_columns(header: list[str], body: list, columns: str | None, multi_label: bool | None
                      ) -> tuple[int, list[int], int | None] | None:
    """(path column, label columns, split column) when the file has one 0/1 column per label: a path column, no
    label column, and two or more other columns whose cells are (nearly all) 0 or 1. None otherwise."""
    if columns or multi_label is False:
        return None
    lowered = _normalised(header)
    at_path = _find(lowered, PATH_HEADERS, PATH_WORDS)
    at_split = _find(lowered, SPLIT_HEADERS)
    if at_path is None or any(h in lowered for h in LABEL_HEADERS):
        return None
    flags = [i for i in range(len(header)) if i not in (at_path, at_split)]
    cells = [row[i].strip() if i < len(row) else "" for _, row in body for i in flags]
    share = sum(c in ZERO_ONE for c in cells) / max(len(cells), 1)
    if len(flags) < 2 or not cells or (share < 0.9 and not multi_label):
        return None
    return at_path, flags, at_split


def _flag_rows(path: Path, header: list[str], body: list, at_path: int, flags: list[int], at_split: int | None
               ) -> LabelRows:
    """Rows of a file with one 0/1 column per label; one error line for a cell that is not 0 or 1."""
    rows = []
    for number, row in body:
        cells = [c.strip() for c in row] + [""] * (len(header) - len(row))
        labels = []
        for i in flags:
            if cells[i] not in ZERO_ONE:
                raise ImgclsError(f"--data {path}: row {number}: column {header[i]!r} holds {cells[i]!r}; a label "
                                  "column holds 1 (the image has the label) or 0 (it has not): fix the cell")
            if ZERO_ONE[cells[i]]:
                labels.append(header[i])
        rows.append((number, cells[at_path], tuple(labels), (cells[at_split] if at_split is not None else "") or None))
    log.info(f"{path.name}: one 0/1 column per label ({len(flags)} labels): multi-label training")
    return LabelRows(path, rows, [header[i] for i in flags], multi_label=True)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ImgclsError(f"--data {path}: not a text file in UTF-8; save the label file as UTF-8 CSV") from None


def _columns(path: Path, header: list[str], columns: str | None) -> tuple[int, int, int | None]:
    """Indices of the path, label and split columns: named by --columns, else recognised by their header."""
    lowered = _normalised(header)
    split = _find(lowered, SPLIT_HEADERS)
    if columns:
        names = [c.strip() for c in columns.split(",")]
        missing = [n for n in names if n not in header]
        if len(names) != 2 or missing:
            raise ImgclsError(f"--columns {columns}: expected two column names of {path.name}, PATH,LABEL (its "
                              f"header: {', '.join(header)})")
        return header.index(names[0]), header.index(names[1]), split
    at_path = _find(lowered, PATH_HEADERS, PATH_WORDS)
    at_label = _find(lowered, LABEL_HEADERS, LABEL_WORDS, skip=(at_path, split))
    rest = [i for i in range(len(header)) if i not in (at_path, split)]
    if at_path is not None and at_label is None and len(rest) == 1:
        at_label = rest[0]  # filename,breed: the one other column is the label
        log.info(f"{path.name}: labels from its column {header[at_label]!r} (--columns names them otherwise)")
    if at_path is None or at_label is None:
        raise ImgclsError(f"--data {path}: cannot tell which column holds the image paths and which the labels "
                          f"(header: {', '.join(header) or 'none'}); name them with --columns PATH_COLUMN,LABEL_COLUMN")
    return at_path, at_label, split


def _list_rows(path: Path, text: str) -> LabelRows:
    """``./bocai/38.jpg 0`` lines: a path, then a label (an index into a names file beside the list, or a name)."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        rows.append((number, parts[0].strip(), parts[1].strip() if len(parts) == 2 else "", None))
    names = _names_beside(path)
    if names is not None:
        index = {str(i): name for i, name in enumerate(names)}
        for number, _, label, _ in rows:
            if label and label not in index and label not in names:
                raise ImgclsError(f"--data {path}: row {number}: label {label!r} is not an index of the "
                                  f"{len(names)} names in {_names_file(path)}; fix the row or the names file")
        rows = [(n, p, index.get(label, label), s) for n, p, label, s in rows]
    return LabelRows(path, rows, names)


def _names_file(path: Path) -> Path | None:
    """names.txt (or classes.txt...) beside the label file, else a yaml with ``names``, else a JSON of names
    (Kaggle's Cassava: label_num_to_disease_map.json)."""
    for candidate in (*(path.parent / n for n in NAMES_FILES), *sorted(path.parent.glob("*.yaml")),
                      *sorted(path.parent.glob("*.yml")), *sorted(path.parent.glob("*.json"))):
        if candidate.is_file() and candidate != path and (candidate.suffix == ".txt" or _structured_names(candidate)):
            return candidate
    return None


def _names_beside(path: Path) -> list[str] | None:
    """Class names from names.txt (one a line), a yaml's ``names`` or a JSON (a list, or {index: name}) beside the
    label file."""
    found = _names_file(path)
    if found is None:
        return None
    if found.suffix == ".txt":
        return [line.strip() for line in found.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    return _structured_names(found)


def _structured_names(path: Path) -> list[str] | None:
    """The names a yaml (its ``names``) or a JSON file holds, as a list or {index: name}; None for other files."""
    import json

    import yaml

    try:
        text = path.read_text(encoding="utf-8-sig")
        names = json.loads(text) if path.suffix == ".json" else (yaml.safe_load(text) or {}).get("names")
    except (yaml.YAMLError, json.JSONDecodeError, AttributeError, OSError, UnicodeDecodeError):
        return None
    if isinstance(names, dict) and names and all(str(k).isdigit() for k in names) \
            and sorted(int(k) for k in names) == list(range(len(names))):
        return [str(names[k]) for k in sorted(names, key=int)]
    if isinstance(names, list) and names and (path.suffix != ".json" or all(isinstance(n, str) for n in names)):
        return [str(n) for n in names]
    return None


def _named(path: Path, rows: list) -> LabelRows:
    """One label per row; labels that are all class indices are named by a names file beside the label file when
    there is one, and the classes keep its order (index 0 first)."""
    names = _names_beside(path) if rows and all(r[2].isdigit() for r in rows) else None
    if names is None:
        return LabelRows(path, rows)
    for number, _, label, _ in rows:
        if int(label) >= len(names):
            raise ImgclsError(f"--data {path}: row {number}: label {label} is not an index of the {len(names)} names "
                              f"in {_names_file(path).name}; fix the row or the names file")
    log.info(f"{path.name}: class indices named from {_names_file(path).name} ({names[0]!r}, ...)")
    return LabelRows(path, [(n, p, names[int(label)], s) for n, p, label, s in rows], names)


def resolve(rows: LabelRows, images: Path) -> list[tuple[int, str, str, str | None]]:
    """(row, path relative to ``images``, label, split) for every row, each image found on disk: one error line for
    the first row with no label, a file not found, an id that matches several files, or a path given two labels."""
    stems = _Index(images)
    seen: dict[str, tuple[int, str]] = {}
    out = []
    for number, written, label, split in rows.rows:
        where = f"--data {rows.file}: row {number}"
        if not written:
            raise ImgclsError(f"{where}: no image path; fill it in or delete the row")
        if not label and not rows.multi_label:  # multi-label: an image with none of the labels is a negative
            raise ImgclsError(f"{where}: {written!r} has no label; give it one or delete the row")
        rel = _found(written, images, stems, where)
        if rel in seen and seen[rel][1] != label:
            raise ImgclsError(f"{where}: {rel} already has the label{'s' * rows.multi_label} {_shown(seen[rel][1])} "
                              f"(row {seen[rel][0]}), here {_shown(label)}; keep one of the two rows")
        if rel not in seen:
            seen[rel] = (number, label)
            out.append((number, rel, label, split))
    return out


def _shown(label: str | tuple[str, ...]) -> str:
    return repr(";".join(label)) if isinstance(label, tuple) else repr(label)


def _found(written: str, images: Path, stems: "_Index", where: str) -> str:
    """The image a row names, relative to ``images``: the path as written, else the one image of that name (or, for
    an id, of that stem) anywhere under ``images`` (ChestX-ray14 spreads its images over images_001/ to
    images_012/, UC Merced over class folders)."""
    path = Path(written.replace("\\", "/"))
    full = path if path.is_absolute() else images / path
    if full.is_file():
        try:
            return full.resolve().relative_to(images.resolve()).as_posix()
        except ValueError:
            raise ImgclsError(f"{where}: {written} is outside {images}; give paths inside the images folder "
                              "(--images DIR)") from None
    matches = stems.get(path.as_posix()) or stems.get(path.name)
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        what = "id" if not path.suffix else "file name"
        raise ImgclsError(f"{where}: {what} {written!r} matches {len(matches)} files ({', '.join(matches[:3])}); "
                          "give " + ("the file name with its extension" if not path.suffix else
                                     "its path relative to --images") + ", or --images the one folder that holds it")
    raise ImgclsError(f"{where}: image {written} not found under {images}; fix the path, or point --images at the "
                      "folder the paths are relative to")


class _Index:
    """Image files under a folder by file name, by stem and by relative path without its extension, read on the
    first lookup (a file whose rows all give paths as they are on disk never walks the folder).

    imgcls's own output folders below it are left out: `predict --save-img` into the default runs/ beside a label
    file writes copies of its images under their own names."""

    def __init__(self, images: Path):
        self.images, self.found = images, None

    def get(self, key: str) -> list[str]:
        if self.found is None:
            self.found = self._walk()
        return self.found.get(key, [])

    def _walk(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for dirpath, dirnames, filenames in os.walk(self.images):
            dirnames[:] = sorted(d for d in dirnames if not is_hidden(d) and not is_imgcls_output(Path(dirpath) / d))
            for name in sorted(filenames):
                if is_hidden(name) or not is_image_path(Path(name)):
                    continue
                rel = (Path(dirpath) / name).relative_to(self.images).as_posix()
                keys = {Path(name).stem, rel.rsplit(".", 1)[0]} | ({name} if "/" in rel else set())
                for key in keys:
                    found.setdefault(key, []).append(rel)
        return found
