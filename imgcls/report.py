"""report.html: one self-contained page per run, drawn only from the files in the run folder.

Images are embedded as data: URIs and the page has no script and no external reference, so it
opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
from pathlib import Path

import numpy as np
import yaml

from .errors import ImgclsError
from .runs import atomic_write_text

log = logging.getLogger("imgcls")

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:0 0 4px} h2{margin:32px 0 10px;border-bottom:2px solid #d7dbe3;padding-bottom:4px}
h3{margin:18px 0 6px;font-size:1.05em}
.sub{color:#5a6272;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{background:#fff;border:1px solid #d7dbe3;border-radius:8px;padding:10px 16px;min-width:130px}
.card b{display:block;font-size:1.4em}
.card span{color:#5a6272;font-size:.85em}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px;font-size:.9em}
th,td{border:1px solid #d7dbe3;padding:4px 10px;text-align:right}
th{background:#eef0f4} td:first-child,th:first-child{text-align:left}
tr.mean td{font-weight:600;background:#f8f9fb}
.grid{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
figure{margin:0;background:#fff;border:1px solid #d7dbe3;border-radius:8px;padding:8px;max-width:540px}
figure.wide{max-width:100%}
figure img{display:block;max-width:100%;height:auto}
figcaption{color:#5a6272;font-size:.85em;margin-top:4px}
.note{color:#5a6272;font-style:italic}
.settings{columns:2 340px;font-size:.88em} .settings div{break-inside:avoid;padding:1px 0}
.settings code{background:#fff;border:1px solid #e3e6ec;border-radius:3px;padding:0 4px}
"""


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _image(path: Path, caption: str, wide: bool = False) -> str:
    """The PNG embedded as a data: URI, so the page needs no other file."""
    if not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure{" class=wide" if wide else ""}><img alt="{_esc(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _images(*figures: str) -> str:
    shown = [f for f in figures if f]
    return f'<div class="grid">{"".join(shown)}</div>' if shown else '<p class="note">No plot in the run folder.</p>'


def _table(header: list, rows: list[list], mean_rows: int = 0) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="mean"' if i >= len(rows) - mean_rows else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _human(n) -> str:
    if n is None:
        return "n/a"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _card(value, label: str) -> str:
    return f'<div class="card"><b>{_esc(value)}</b><span>{_esc(label)}</span></div>'


def _per_class_section(info: dict, class_names: list[str], predictions) -> str:
    """The per-class table of one split: precision/recall/specificity/F1 from results.json, support
    from its confusion matrix, ROC AUC and AP from the predictions file."""
    from .metrics import one_vs_rest_scores

    cm = np.asarray(info["confusion matrix"])
    support = cm.sum(axis=1)
    aucs = aps = [None] * len(class_names)
    if predictions is not None:
        aucs, aps = one_vs_rest_scores(predictions[0], predictions[1], len(class_names))
    rows = []
    for i, name in enumerate(class_names):
        c = info[name]
        rows.append([name, _fmt(c["Precision"]), _fmt(c["Recall"]), _fmt(c["Specificity"]), _fmt(c["F1 score"]),
                     int(support[i]), _fmt(aucs[i]), _fmt(aps[i])])

    def mean(values):
        kept = [v for v in values if v is not None]
        return float(np.mean(kept)) if kept else None

    rows.append(["macro mean", _fmt(info["mean Precision"]), _fmt(info["mean Recall"]),
                 _fmt(info["mean Specificity"]), _fmt(info["mean F1 score"]), int(support.sum()),
                 _fmt(mean(aucs)), _fmt(mean(aps))])
    return _table(["class", "precision", "recall", "specificity", "F1", "support", "ROC AUC", "AP"], rows, 1)


def _calibration_line(predictions) -> str:
    from .metrics import expected_calibration_error, log_loss

    if predictions is None:
        return ""
    y_true, probs, _ = predictions
    return (f"<p>Log loss {log_loss(y_true, probs):.4f}; expected calibration error (ECE, 15 bins) "
            f"{expected_calibration_error(y_true, probs):.4f}. <code>imgcls val --calibrate</code> fits a "
            "temperature that lowers it.</p>")


def _errors_section(run_dir: Path, best_info: dict, class_names: list[str], predictions) -> str:
    from .val import GALLERY_SIZE, most_confident_mistakes
    from .metrics import most_confused_pairs

    parts = [_image(run_dir / "errors_val.png", "The most confident val mistakes; right: Grad-CAM of the "
                                               "predicted class (red = where the network saw it)", wide=True)]
    if not (run_dir / "errors_val.png").exists():
        parts.append('<p class="note">No error gallery in this run folder; <code>imgcls val --weights '
                     'RUN/weights/best.pt</code> draws one.</p>')
    pairs = most_confused_pairs(best_info["confusion matrix"], class_names)
    parts.append("<h3>Most confused pairs (val, best epoch)</h3>")
    parts.append(_table(["true class", "predicted as", "images", "share of the true class"],
                        [[p["true"], p["predicted"], p["count"], f"{p['rate']:.1%}"] for p in pairs])
                 if pairs else '<p class="note">No confusion: every val image was classified correctly.</p>')
    if predictions is not None:
        y_true, probs, paths = predictions
        rows = [[paths[i], class_names[y_true[i]], class_names[int(probs[i].argmax())], f"{probs[i].max():.3f}"]
                for i in most_confident_mistakes(y_true, probs, GALLERY_SIZE)]
        if rows:
            parts.append("<h3>Most confident mistakes (val)</h3>")
            parts.append(_table(["image", "true class", "predicted", "confidence"], rows))
    return "".join(parts)


def _evaluations_section(run_dir: Path) -> str:
    """One row per RUN/val*/metrics.json written by `imgcls val`."""
    rows = []
    for folder in sorted(run_dir.glob("val*"), key=lambda p: (len(p.name), p.name)):
        metrics_file = folder / "metrics.json"
        if not metrics_file.is_file():
            continue
        try:
            m = json.loads(metrics_file.read_text(encoding="utf-8"))
            rows.append([folder.name, m["split"], m["images"], "yes" if m["tta"] else "no", _fmt(m["temperature"], 3),
                         _fmt(m["accuracy"]), _fmt(m["macro_avg"]["f1"]), _fmt(m["log_loss"]), _fmt(m["ece"])])
        except (ValueError, KeyError, TypeError):
            log.warning(f"WARNING: {metrics_file}: not readable as imgcls val metrics; left out of the report")
    if not rows:
        return ""
    return ("<h2>Evaluations (imgcls val)</h2>"
            + _table(["folder", "split", "images", "flip TTA", "temperature", "accuracy", "macro-F1", "log loss", "ECE"],
                     rows))


def build_report(run_dir: str | os.PathLike) -> str:
    """The report's HTML. Draws the PR and calibration plots it needs into the run folder first."""
    from .plots import plot_calibration, plot_pr
    from .val import read_predictions

    run_dir = Path(run_dir)
    results_file = run_dir / "results.json"
    if not results_file.is_file():
        raise ImgclsError(f"{run_dir}: not a run folder (no results.json); pass a folder such as runs/train")
    try:
        results = json.loads(results_file.read_text(encoding="utf-8"))
        class_names = results["dataset"]["class_names"]
    except (ValueError, KeyError, TypeError) as e:
        raise ImgclsError(f"{results_file}: damaged or not written by imgcls ({e})") from None
    best = results.get("best epoch") or 0
    best_info = results.get(f"epoch:{best}", {}).get("valid info")
    args_file = run_dir / "args.yaml"
    settings = yaml.safe_load(args_file.read_text(encoding="utf-8")) if args_file.exists() else \
        results.get("train parameters", {})
    epochs_run = sum(1 for k in results if k.startswith("epoch:"))

    predictions = {s: read_predictions(run_dir / f"predictions_{s}.csv", class_names) for s in ("val", "test")}
    for split, found in predictions.items():
        if found is not None:
            plot_pr(found[0], found[1], class_names, run_dir / f"pr_{split}.png",
                    f"Precision-recall, {split} (best epoch {best})")
            plot_calibration(found[0], found[1], run_dir / f"calibration_{split}.png",
                             f"Reliability diagram, {split} (best epoch {best})")

    model = results.get("model", {})
    dataset = results.get("dataset", {})
    test = results.get("test")
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
           f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
           f"<title>imgcls report: {_esc(run_dir.name)}</title><style>{STYLE}</style></head><body><main>"]
    out.append(f"<h1>imgcls run <code>{_esc(run_dir.name)}</code></h1>")
    out.append(f"<p class='sub'>{_esc(run_dir.resolve())} &middot; model {_esc(model.get('name', '?'))} &middot; "
               f"{len(class_names)} classes &middot; best epoch {best} of {epochs_run}</p>")
    cards = []
    if best_info:
        cards += [_card(f"{best_info['accuracy']:.2%}", "val accuracy (best epoch)"),
                  _card(f"{best_info['mean F1 score']:.3f}", "val macro-F1"),
                  _card(f"{best_info['loss']:.4f}", "val loss")]
    if test:
        cards.append(_card(f"{test['accuracy']:.2%}", "test accuracy"))
    if "train seconds" in results:
        cards.append(_card(f"{results['train seconds'] / 60:.1f} min", "training time"))
    out.append(f"<div class='cards'>{''.join(cards)}</div>")

    out.append("<h2>Data set</h2>")
    splits = [s for s in ("train", "val", "test") if isinstance(dataset.get(s), dict)]
    rows = [[c, *[dataset[s].get(c, 0) for s in splits]] for c in class_names]
    rows.append(["total", *[dataset[s].get("total", 0) for s in splits]])
    out.append(f"<p>Root: <code>{_esc(dataset.get('root', settings.get('data', '?')))}</code></p>")
    out.append(_table(["class", *splits], rows, 1))
    if dataset.get("skipped files"):
        out.append(f"<p class='note'>{len(dataset['skipped files'])} unusable file(s) were skipped.</p>")

    out.append("<h2>Model</h2>")
    out.append(_table(["", "value"], [
        ["architecture", model.get("name", "?")], ["starting weights", model.get("weights", "?")],
        ["parameters", f"{model.get('total parameters', 0):,}"],
        ["trainable parameters", f"{model.get('trainable parameters', 0):,}"],
        ["FLOPs per image", _human(model.get("FLOPs per image"))],
        ["input size", "x".join(str(x) for x in model.get("input size", []))],
    ]))
    out.append("<h3>Run settings</h3><div class='settings'>"
               + "".join(f"<div>{_esc(k)}: <code>{_esc(v)}</code></div>" for k, v in settings.items()) + "</div>")

    out.append("<h2>Training curves</h2>")
    out.append(_images(_image(run_dir / "loss.png", "loss"), _image(run_dir / "accuracy.png", "accuracy"),
                       _image(run_dir / "lr.png", "learning rate")))

    out.append(f"<h2>Validation, best epoch ({best})</h2>")
    if best_info:
        out.append(_per_class_section(best_info, class_names, predictions["val"]))
        out.append(_calibration_line(predictions["val"]))
    out.append(_images(
        _image(run_dir / "confusion_matrix_val.png", "confusion matrix, val"),
        _image(run_dir / "confusion_matrix_train.png", "confusion matrix, train"),
        _image(run_dir / "roc_val.png", "ROC, val"), _image(run_dir / "pr_val.png", "precision-recall, val"),
        _image(run_dir / "calibration_val.png", "reliability diagram, val")))

    out.append("<h2>Error analysis</h2>")
    if best_info:
        out.append(_errors_section(run_dir, best_info, class_names, predictions["val"]))

    out.append("<h2>Test</h2>")
    if test:
        out.append(f"<p>Test accuracy <b>{test['accuracy']:.4f}</b>, macro-F1 {test['mean F1 score']:.4f}, "
                   f"loss {test['loss']:.4f} (weights of epoch {test.get('epoch', best)}).</p>")
        out.append(_per_class_section(test, class_names, predictions["test"]))
        out.append(_images(_image(run_dir / "confusion_matrix_test.png", "confusion matrix, test"),
                           _image(run_dir / "roc_test.png", "ROC, test"),
                           _image(run_dir / "pr_test.png", "precision-recall, test"),
                           _image(run_dir / "calibration_test.png", "reliability diagram, test")))
    else:
        out.append("<p class='note'>This run has no test split.</p>")
    out.append(_evaluations_section(run_dir))
    out.append("<p class='sub' style='margin-top:32px'>Written by imgcls from the files of this run folder; "
               "<code>imgcls report RUN</code> redraws it.</p></main></body></html>\n")
    return "".join(out)


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write RUN/report.html (atomically) and return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ImgclsError(f"{run_dir}: folder not found; pass a run folder such as runs/train")
    page = build_report(run_dir)
    path = run_dir / "report.html"
    atomic_write_text(path, page)
    log.info(f"Report: {path}")
    return path
