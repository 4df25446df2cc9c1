"""What ``imgcls check`` shows: the console summary, the class-count chart and check.html, drawn from its
report (data/check.CheckReport)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from ..data.check import (LABEL_ISSUES_PICTURED, SEVERITIES, UNREAD_KINDS, CheckReport, label_sets, relabel_rows,
                          short_list)
from ..pages import esc, page
from .label_review import Suspect, review_help, review_section
from .plots import png_bytes, pyplot
from .thumbnails import Thumbnails


def format_console(report: CheckReport, per_kind: int = 10) -> str:
    """The console summary: counts, then errors, warnings and info naming the files."""
    layout = report.layout + (": " + ", ".join(f"{s} = {f}" for s, f in report.split_folders.items())
                              if report.split_folders else "")
    lines = [f"imgcls check {report.root} ({layout}): {len(report.records)} files in {report.seconds:.1f}s"]
    classes = list(next(iter(report.counts.values()), {}).keys())
    what = "label" if report.multi_label else "class"
    if report.counts:
        width = max(len(c) for c in classes + [what])
        lines.append("  " + what.ljust(width) + "".join(f"{s:>8}" for s in report.counts)
                     + ("   (images that have each label)" if report.multi_label else ""))
        for c in classes:
            lines.append("  " + c.ljust(width) + "".join(f"{report.counts[s].get(c, 0):>8}" for s in report.counts))
    if report.multi_label:
        lines.append("  " + label_sets_line(label_sets(report.records)))
    if report.imbalance_ratio is not None:
        lines.append(f"  imbalance ratio (largest/smallest {what}): {report.imbalance_ratio:.2f}")
    if report.labels:
        lines.append(label_summary(report.labels))
    for severity in SEVERITIES:
        items = [f for f in report.findings if f.severity == severity]
        if not items:
            continue
        lines.append(f"{severity.upper()}S ({len(items)}):" if severity != "info" else f"INFO ({len(items)}):")
        shown: dict[str, int] = {}
        for f in items:
            shown[f.kind] = shown.get(f.kind, 0) + 1
            if shown[f.kind] > per_kind:
                continue
            lines.append(f"  [{f.kind}] {f.message}")
            if f.paths and (f.details.get("match") or f.kind in ("colour_mode", "exif_rotation", *UNREAD_KINDS)):
                lines.append(f"      {short_list(f.paths, 6)}")
        for kind, n in shown.items():
            if n > per_kind:
                lines.append(f"  [{kind}] ... and {n - per_kind} more (see check.json / check.html)")
    if not report.findings:
        lines.append("No problems found.")
    lines.append(f"{report.errors} error(s), {report.count('warning')} warning(s), {report.count('info')} info")
    if report.export:
        d = report.export["dropped"]
        lines.append(f"Clean copy: {report.export['kept']} images in {report.export['folder']} (dropped "
                     + ", ".join(f"{len(v)} {k}" for k, v in d.items()) + ")")
    if report.export and "relabelled" in report.export:
        lines.append(f"  with {report.export['relabel_file']} applied: {len(report.export['relabelled'])} image(s) "
                     f"in a new class folder, {len(report.export['dropped']['relabel_drop'])} dropped")
    if report.labels and report.labels.get("relabel_file"):
        lines.append(f"Relabel file: {report.labels['relabel_file']} (every image, most likely label error first; "
                     "edit the action column, then `imgcls train --relabel FILE`)")
    if report.out_dir:
        lines.append(f"Report: {Path(report.out_dir) / 'check.html'} (and check.json, class_counts.png)")
    return "\n".join(lines)


def label_sets_line(sets: dict) -> str:
    """Multi-label data's labels per image and its most common label sets, in one line."""
    if not sets:
        return "no usable images"
    common = ", ".join(f"{name} {n}" for name, n in list(sets["most_common"].items())[:3])
    return (f"labels per image: {sets['cardinality']:.2f} on average ({sets['fewest']} to {sets['most']}), "
            f"{sets['without_labels']} image(s) with none; {sets['distinct_sets']} distinct label sets, the most "
            f"common: {common}")


def label_summary(labels: dict) -> str:
    """One line about the --labels review."""
    quality = f"mAP {labels['cross_validated_mAP']:.3f}" if labels.get("multi_label") else \
        f"accuracy {labels['cross_validated_accuracy']:.1%}"
    return (f"  labels ({labels['model']} features, {labels['folds']}-fold cross-validation, {quality}, "
            f"{labels['seconds']:.1f}s): {labels['label_issues']} likely "
            f"label error(s), {labels['outliers']} outlier(s), {labels['semantic_duplicates']} group(s) of semantic "
            "near-duplicates")


def class_count_chart(counts: dict[str, dict[str, int]], what: str = "class") -> bytes:
    """Grouped bar chart of images per class and split, as PNG bytes."""
    plt = pyplot()
    classes = list(next(iter(counts.values()), {}).keys())
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(classes) * max(1, len(counts)) + 2), 3.8))
    width = 0.8 / max(1, len(counts))
    x = np.arange(len(classes))
    for k, (split, per_class) in enumerate(counts.items()):
        ax.bar(x + k * width - 0.4 + width / 2, [per_class.get(c, 0) for c in classes], width, label=split)
    ax.set_xticks(x, classes, rotation=45 if len(classes) > 6 else 0, ha="right" if len(classes) > 6 else "center")
    ax.set_ylabel("images")
    ax.set_title(f"Images per {what}")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return png_bytes(fig, dpi=100)


def render_html(report: CheckReport, chart_png: bytes | None, max_thumbs: int = 800) -> str:
    """check.html: self-contained (styles, the label review's script and the images inline), works offline."""
    root = Path(report.root)
    figure = Thumbnails(root, max_thumbs)
    findings = _findings_section(report, figure)  # first: errors get thumbnails before the label review does
    parts = [f"<h1>imgcls check: {esc(str(root))}</h1>",
             f"<p>{len(report.records)} files ({esc(report.layout)}), checked in {report.seconds:.1f}s: "
             f"<b>{report.errors} error(s)</b>, {report.count('warning')} warning(s), {report.count('info')} info."
             "</p>", _counts_section(report, chart_png)]
    if report.labels:
        parts.append(_labels_section(report, figure))
    parts += [findings, f"<h2>Settings</h2><pre>{esc(json.dumps(report.settings, indent=1))}</pre>"]
    return page(f"imgcls check: {root.name}", "\n".join(parts))


def _findings_section(report: CheckReport, figure: Thumbnails) -> str:
    """Every finding with thumbnails of its files; the likely label errors in one line (the review shows them)."""
    parts = ["<h2>Findings</h2>"]
    if not report.findings:
        parts.append("<p>No problems found.</p>")
    issues = [f for f in report.findings if f.kind == "label_issue"]
    for f in report.findings:
        if f.kind == "label_issue":
            if f is issues[0]:
                parts.append(f"<div class='finding {f.severity}'><span class='sev'>{esc(f.severity)}</span> "
                             f"[label_issue] {len(issues)} likely label error(s): each is in the review under "
                             "Labels above</div>")
            continue
        parts.append(f"<div class='finding {f.severity}'><span class='sev'>{esc(f.severity)}</span> "
                     f"[{esc(f.kind)}] {esc(f.message)}")
        if f.paths and f.kind not in UNREAD_KINDS:
            parts.append("<div class='thumbs'>" + "".join(figure(p) for p in f.paths[:24]) + "</div>")
            if len(f.paths) > 24:
                parts.append(f"<p>... and {len(f.paths) - 24} more (see check.json)</p>")
        elif f.paths:
            parts.append(f"<p>{esc(short_list(f.paths, 50))}</p>")
        parts.append("</div>")
    return "\n".join(parts)


def _counts_section(report: CheckReport, chart_png: bytes | None) -> str:
    if not report.counts:
        return ""
    classes = list(next(iter(report.counts.values())).keys())
    what = "label" if report.multi_label else "class"
    parts = [f"<h2>Images per {what}</h2>"
             + (f"<p>An image counts once under every label it has; "
                f"{esc(label_sets_line(label_sets(report.records)))}.</p>" if report.multi_label else "")
             + f"<table><tr><th>{what}</th>"
             + "".join(f"<th>{esc(s)}</th>" for s in report.counts) + "</tr>"]
    for c in classes:
        parts.append(f"<tr><td>{esc(c)}</td>"
                     + "".join(f"<td>{report.counts[s].get(c, 0)}</td>" for s in report.counts) + "</tr>")
    parts.append("</table>")
    if report.imbalance_ratio is not None:
        parts.append(f"<p>Imbalance ratio (largest / smallest {what}): {report.imbalance_ratio:.2f}</p>")
    if chart_png:
        parts.append("<img alt='images per class' src='data:image/png;base64,"
                     + base64.b64encode(chart_png).decode("ascii") + "'>")
    return "\n".join(parts)


def _labels_section(report: CheckReport, figure: Thumbnails) -> str:
    """The --labels summary and the review of its likely label errors (reporting/label_review.py)."""
    suspects = [Suspect(f.paths[0], f.details["given"], f.details["suggested"], f.message, f.details["similar"])
                for f in report.findings if f.kind == "label_issue"]
    intro = ("<h2>Labels</h2><p>" + esc(label_summary(report.labels).strip()) + ". The full ranking is in "
             "check.json (<code>labels.ranked</code>)" + (" and in an editable CSV (--export-relabel)"
                                                          if report.labels.get("relabel_file") else "") + ".</p>")
    if not suspects:
        return intro
    class_names = list(next(iter(report.counts.values())).keys())
    return (intro + review_help(LABEL_ISSUES_PICTURED, len(suspects))
            + review_section(relabel_rows(report.labels), suspects, class_names, str(Path(report.root).resolve()),
                             figure, LABEL_ISSUES_PICTURED))
