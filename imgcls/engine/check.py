"""``imgcls check`` (the public ``imgcls.check``): the data check of data/check.py, with the label review of
engine/labels.py when asked, its report written as check.json, check.html and class_counts.png."""

from __future__ import annotations

import os
from pathlib import Path

from ..data.check import NEAR_THRESHOLD, CheckReport, run_check
from ..errors import ImgclsError
from ..record.files import atomic_write_bytes, atomic_write_text, new_run_dir, write_json


def check(data: str | os.PathLike, *, out: str | os.PathLike | None = None, imgsz: int = 224, near: bool = True,
          threshold: int = NEAR_THRESHOLD, workers: int | None = None, export_clean: str | os.PathLike | None = None,
          labels: bool = False, export_relabel: str | os.PathLike | None = None,
          relabel: str | os.PathLike | None = None, model: str | None = None, device: str = "auto",
          runtime: str = "auto", write: bool = True, progress: bool = False, images: str | os.PathLike | None = None,
          columns: str | None = None, multi_label: bool | None = None) -> CheckReport:
    """Check a data folder as ``imgcls check`` does; with ``labels``, also find likely label errors, outliers and
    semantic near-duplicates from backbone features (``model``, default the training default).

    ``export_relabel`` writes the editable relabel CSV (needs ``labels``); ``relabel`` applies such a CSV to the
    ``export_clean`` copy. ``multi_label`` reads several labels per image from a label file (None: found there).
    The source folder is never modified.
    """
    from ..models.factory import DEFAULT_MODEL, SIMPLE_CNN
    from .labels import require_cleanlab, review

    if export_relabel is not None and not labels:
        raise ImgclsError("--export-relabel writes the findings of --labels; add --labels")
    if model is not None and not labels:
        raise ImgclsError("--model chooses the backbone of --labels; add --labels")
    model_name = model or DEFAULT_MODEL
    if labels:
        require_cleanlab()
        if model_name == SIMPLE_CNN:
            raise ImgclsError("--model simple_cnn: --labels compares images by the features of a pretrained backbone, "
                              "and simple_cnn has none; choose a timm model (default tf_efficientnet_lite0)")
    reviewer = None
    if labels:
        def reviewer(records, class_names, root, known_groups):
            return review(records, class_names, root, model_name=model_name, imgsz=imgsz, device=device,
                          runtime=runtime, known_groups=known_groups, progress=progress)
    report = run_check(data, out=out, imgsz=imgsz, near=near, threshold=threshold, workers=workers,
                       export_clean=export_clean, write=write, progress=progress, review=reviewer,
                       export_relabel=export_relabel, relabel=relabel, images=images, columns=columns,
                       multi_label=multi_label)
    if write:
        _write_report(report, Path(out) if out is not None else new_run_dir("runs", "check"))
    return report


def _write_report(report: CheckReport, out_dir: Path) -> None:
    """check.json (the findings), class_counts.png and check.html (drawn by reporting/check_page.py)."""
    from ..reporting.check_page import class_count_chart, render_html

    out_dir.mkdir(parents=True, exist_ok=True)
    report.out_dir = str(out_dir)
    chart = class_count_chart(report.counts, "label" if report.multi_label else "class") if report.counts else None
    if chart:
        atomic_write_bytes(out_dir / "class_counts.png", chart)
    write_json(out_dir / "check.json", report.to_dict())
    atomic_write_text(out_dir / "check.html", render_html(report, chart))
