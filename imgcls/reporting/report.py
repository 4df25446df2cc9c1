"""report.html: one self-contained page per run, drawn only from the files in the run folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import ImgclsError
from ..pages import esc, figure, page, table
from ..record.files import atomic_write_text
from ..record.predictions import read_predictions_csv
from ..record.results import RunRecord, read_run

log = logging.getLogger("imgcls")


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _trainable(model: dict) -> str:
    """The most any phase trains, and each phase's count when the plan has several (older runs recorded one)."""
    per_phase = model.get("trainable parameters per phase") or {}
    most = f"{model.get('trainable parameters', 0):,}"
    return most if len(per_phase) < 2 else most + " (" + ", ".join(f"{k}: {v:,}" for k, v in per_phase.items()) + ")"


def _human(n) -> str:
    if n is None:
        return "n/a"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _card(value, label: str) -> str:
    return f'<div class="card"><b>{esc(value)}</b><span>{esc(label)}</span></div>'


def _png(run: RunRecord, name: str, caption: str, wide: bool = False, not_drawn: dict | None = None) -> str:
    """The figure ``name`` of the run folder with its caption; where it could not be drawn, a line that says why."""
    path = run.run_dir / name
    if not path.exists() and name in (not_drawn or {}):
        return f'<p class="note">{esc(caption)}: not drawn ({esc(not_drawn[name])}).</p>'
    return figure(path.read_bytes() if path.exists() else None, caption, wide)


def _grid(*figures: str) -> str:
    shown = [f for f in figures if f]
    return f'<div class="grid">{"".join(shown)}</div>' if shown else '<p class="note">No plot in the run folder.</p>'


def _per_class_valid(report: dict, class_names: list[str], predictions) -> str:
    """The per-class table of the best epoch's validation report, with ROC AUC and AP from the predictions file."""
    from ..metrics import one_vs_rest_scores

    aucs = aps = [None] * len(class_names)
    if predictions is not None:
        aucs, aps = one_vs_rest_scores(predictions[0], predictions[1], len(class_names))

    def mean(values):
        kept = [v for v in values if v is not None]
        return float(np.mean(kept)) if kept else None

    per_class = {name: row | {"roc_auc": aucs[i], "average_precision": aps[i]}
                 for i, (name, row) in enumerate(report["per_class"].items())}
    macro = report["macro_avg"] | {"roc_auc": mean(aucs), "average_precision": mean(aps)}
    return _per_class_evaluation(report | {"per_class": per_class, "macro_avg": macro})


def _per_class_evaluation(metrics: dict) -> str:
    """The per-class table of a report: an evaluation record (results.json's "test", metrics.json) or an epoch's."""
    keys = ("precision", "recall", "specificity", "f1", "support", "roc_auc", "average_precision")
    rows = [[name, *[_fmt(row.get(k)) for k in keys]] for name, row in metrics["per_class"].items()]
    macro = metrics["macro_avg"]
    rows.append(["macro mean", *[_fmt(macro.get(k)) if k != "support" else metrics["images"] for k in keys]])
    return table(["class", "precision", "recall", "specificity", "F1", "support", "ROC AUC", "AP"], rows, 1)


def _calibration_line(predictions) -> str:
    from ..metrics import expected_calibration_error, log_loss

    if predictions is None:
        return ""
    y_true, probs, _ = predictions
    return (f"<p>Log loss {log_loss(y_true, probs):.4f}; expected calibration error (ECE, 15 bins) "
            f"{expected_calibration_error(y_true, probs):.4f}. <code>imgcls val --calibrate</code> fits a "
            "temperature that lowers it.</p>")


def _errors_section(run: RunRecord, predictions, png) -> str:
    from ..metrics import mistake_rows, most_confused_pairs
    from .gallery import GALLERY_SIZE

    parts = [png("errors_val.png", "The most confident val mistakes; right: Grad-CAM of the predicted class "
                                         "(red = where the network saw it)", wide=True)]
    if not (run.run_dir / "errors_val.png").exists():
        parts.append('<p class="note">No error gallery in this run folder; <code>imgcls val --weights '
                     'RUN/weights/best.pt</code> draws one.</p>')
    pairs = most_confused_pairs(run.best["confusion_matrix"], run.class_names)
    parts.append("<h3>Most confused pairs (val, best epoch)</h3>")
    parts.append(table(["true class", "predicted as", "images", "share of the true class"],
                       [[p["true"], p["predicted"], p["count"], f"{p['rate']:.1%}"] for p in pairs])
                 if pairs else '<p class="note">No confusion: every val image was classified correctly.</p>')
    if predictions is not None:
        y_true, probs, paths = predictions
        rows = mistake_rows(paths, y_true, probs, run.class_names, GALLERY_SIZE)
        if rows:
            parts.append("<h3>Most confident mistakes (val)</h3>")
            parts.append(table(["image", "true class", "predicted", "confidence"],
                               [[r["path"], r["true"], r["predicted"], f"{r['confidence']:.3f}"] for r in rows]))
    return "".join(parts)


def _evaluations_section(run_dir: Path) -> str:
    """One row per RUN/val*/metrics.json written by `imgcls val`."""
    from ..record.results import read_metrics

    rows = []
    for folder in sorted(run_dir.glob("val*"), key=lambda p: (len(p.name), p.name)):
        if not (folder / "metrics.json").is_file():
            continue
        m = read_metrics(folder)
        if m is None:
            log.warning(f"WARNING: {folder / 'metrics.json'}: not readable as imgcls val metrics; left out of the "
                        "report")
            continue
        rows.append([folder.name, m["split"], m.get("images"), "yes" if m.get("tta") else "no",
                     _fmt(m.get("temperature"), 3), _fmt(m.get("accuracy")), _fmt(m["macro_avg"]["f1"]),
                     _fmt(m.get("log_loss")), _fmt(m.get("ece"))])
    if not rows:
        return ""
    return ("<h2>Evaluations (imgcls val)</h2>"
            + table(["folder", "split", "images", "flip TTA", "temperature", "accuracy", "macro-F1", "log loss",
                     "ECE"], rows))


def _summary(run: RunRecord) -> str:
    best, test = run.best, run.test
    cards = []
    if best:
        cards += [_card(f"{best['accuracy']:.2%}", "val accuracy (best epoch)"),
                  _card(f"{best['macro_avg']['f1']:.3f}", "val macro-F1"), _card(f"{best['loss']:.4f}", "val loss")]
    if test:
        cards.append(_card(f"{test['accuracy']:.2%}", "test accuracy"))
    if run.wall_seconds is not None:  # caching and evaluating can be most of a run: the epochs alone mislead
        epochs = f" (epochs {run.train_seconds / 60:.1f} min)" if run.train_seconds is not None else ""
        cards.append(_card(f"{run.wall_seconds / 60:.1f} min", f"whole run{epochs}"))
    elif run.train_seconds is not None:
        cards.append(_card(f"{run.train_seconds / 60:.1f} min", "training time"))
    return (f"<h1>imgcls run <code>{esc(run.run_dir.name)}</code></h1>"
            f"<p class='sub'>{esc(run.run_dir.resolve())} &middot; model {esc(run.model.get('name', '?'))} &middot; "
            f"{len(run.class_names)} classes &middot; best epoch {run.best_epoch} of {run.epochs_run}</p>"
            f"<div class='cards'>{''.join(cards)}</div>")


def _data_and_model(run: RunRecord) -> str:
    dataset, model = run.dataset, run.model
    splits = [s for s in ("train", "val", "test") if isinstance(dataset.get(s), dict)]
    rows = [[c, *[dataset[s].get(c, 0) for s in splits]] for c in run.class_names]
    rows.append(["total", *[dataset[s].get("total", 0) for s in splits]])
    out = ["<h2>Data set</h2>", f"<p>Root: <code>{esc(dataset.get('root', run.settings.get('data', '?')))}</code></p>",
           table(["class", *splits], rows, 1)]
    if dataset.get("skipped files"):
        out.append(f"<p class='note'>{len(dataset['skipped files'])} unusable file(s) were skipped.</p>")
    out += ["<h2>Model</h2>", table(["", "value"], [
        ["architecture", model.get("name", "?")], ["starting weights", model.get("weights", "?")],
        ["parameters", f"{model.get('total parameters', 0):,}"],
        ["trainable parameters", _trainable(model)],
        ["FLOPs per image", _human(model.get("FLOPs per image"))],
        ["input size", "x".join(str(x) for x in model.get("input size", []))]])]
    if run.phases:
        out.append("<h3>Training plan</h3>" + table(
            ["phase", "epochs", "trains", "inputs", "lr", "backbone lr"],
            [[p["name"], p["epochs"], p["trains"], p["inputs"], f"{p['lr']:.2g}", f"{p['body_lr']:.2g}"]
             for p in run.phases]))
    out.append("<h3>Run settings</h3><div class='settings'>"
               + "".join(f"<div>{esc(k)}: <code>{esc(v)}</code></div>" for k, v in run.settings.items()) + "</div>")
    return "".join(out)


def _percent(value) -> str:
    return "" if value is None else f"{value:.0%}"


def _label_review_section(run: RunRecord) -> str:
    review = run.label_review
    if not review:
        return ""
    intro = (f"<p>A {review['folds']}-fold cross-validated linear head on the cached backbone features, ranked by "
             f"cleanlab: <b>{review['label_issues']}</b> of {review['images']:,} images may be mislabelled "
             f"(cross-validated accuracy {review['cross_validated_accuracy']:.1%}).")
    if review.get("file"):
        intro += (f" Every image is ranked in <code>{esc(review['file'])}</code> in this folder: set each action "
                  "(keep, relabel, drop), here or in the file, then pass it to <code>--relabel</code> when you train "
                  "again.")
    drawn = _label_review_choices(run, review)
    if drawn:
        return "<h2>Label review</h2>" + intro + "</p>" + drawn
    rows = [[r["path"], r["given"], _percent(r.get("given_probability")), r["suggested"],
             _percent(r.get("suggested_probability"))] for r in review["likely_errors"]]
    return ("<h2>Label review</h2>" + intro + "</p>"
            + (table(["image", "labelled", "its probability", "looks like", "probability"], rows) if rows else ""))


def _label_review_choices(run: RunRecord, review: dict) -> str:
    """The review with choices (reporting/label_review.py) over RUN/relabel.csv: its likely label errors are the
    rows it proposes to relabel or drop. '' when the run has no such file, or it cannot be read."""
    from ..data.check import LABEL_ISSUES_PICTURED
    from ..data.relabel import read_relabel_rows
    from .label_review import Suspect, review_help, review_section
    from .thumbnails import Thumbnails

    path = run.run_dir / (review.get("file") or "")
    if not review.get("file") or not path.is_file():
        return ""
    known = {r["path"]: r for r in review["likely_errors"]}
    root = str(run.dataset.get("root", ""))
    try:
        rows = read_relabel_rows(path)
        suspects = [Suspect(r["path"], r["given"], r["suggested"], _suspect_line(r, known.get(r["path"])))
                    for r in rows if r["action"].strip().lower() != "keep"]
        drawn = review_section(rows, suspects, run.class_names, root, Thumbnails(Path(root)), LABEL_ISSUES_PICTURED)
    except (ImgclsError, ValueError) as e:  # a hand-edited file the page cannot show (a score that is no number)
        log.warning(f"WARNING: the report lists the likely label errors without choices ({e})")
        return ""
    return review_help(LABEL_ISSUES_PICTURED, len(suspects)) + drawn if suspects else ""


def _suspect_line(row: dict, known: dict | None) -> str:
    if known and known.get("given_probability") is not None:
        return (f"{row['path']}: labelled {row['given']} ({_percent(known['given_probability'])}), looks like "
                f"{row['suggested']} ({_percent(known.get('suggested_probability'))})")
    return f"{row['path']}: labelled {row['given']}, looks like {row['suggested']} (score {row['score']})"


def _test_section(run: RunRecord, png) -> str:
    test = run.test
    if not test:
        return "<h2>Test</h2><p class='note'>This run has no test split.</p>"
    loss = test.get("log_loss", test.get("loss"))
    return ("<h2>Test</h2>"
            f"<p>Test accuracy <b>{test['accuracy']:.4f}</b>, macro-F1 {test['macro_avg']['f1']:.4f}, "
            f"log loss {_fmt(loss)} (weights of epoch {test.get('epoch') or run.best_epoch}).</p>"
            + _per_class_evaluation(test)
            + _grid(png("confusion_matrix_test.png", "confusion matrix, test"),
                    png("roc_test.png", "ROC, test"), png("pr_test.png", "precision-recall, test"),
                    png("calibration_test.png", "reliability diagram, test")))


def build_report(run_dir: str | os.PathLike, not_drawn: dict[str, str] | None = None) -> str:
    """The report's HTML, from the run folder's files (the plots must be drawn: see plots.plot_run). A figure in
    ``not_drawn`` (file name -> why) is named with the reason instead."""
    import functools

    run = read_run(run_dir)
    png = functools.partial(_png, run, not_drawn=not_drawn)
    if run.multi_label:
        return _multi_label_report(run, png)
    val_predictions = read_predictions_csv(run.run_dir / "predictions_val.csv", run.class_names)
    out = [_summary(run), _data_and_model(run), _label_review_section(run), "<h2>Training curves</h2>",
           _grid(png("accuracy_time.png", "accuracy against wall time, by training phase"),
                 png("loss.png", "loss"), png("accuracy.png", "accuracy"),
                 png("lr.png", "learning rate")),
           f"<h2>Validation, best epoch ({run.best_epoch})</h2>"]
    if run.best:
        out += [_per_class_valid(run.best, run.class_names, val_predictions), _calibration_line(val_predictions)]
    out.append(_grid(png("confusion_matrix_val.png", "confusion matrix, val"),
                     png("confusion_matrix_train.png", "confusion matrix, train"),
                     png("roc_val.png", "ROC, val"), png("pr_val.png", "precision-recall, val"),
                     png("calibration_val.png", "reliability diagram, val")))
    out.append("<h2>Error analysis</h2>")
    if run.best:
        out.append(_errors_section(run, val_predictions, png))
    out += [_test_section(run, png), _evaluations_section(run.run_dir),
            "<p class='sub' style='margin-top:32px'>Written by imgcls from the files of this run folder; "
            "<code>imgcls report RUN</code> redraws it.</p>"]
    return page(f"imgcls report: {run.run_dir.name}", "".join(out))


def _multi_label_table(report: dict) -> str:
    """Per label: threshold, precision, recall, F1, AP, ROC AUC and support, then the macro means."""
    keys = ("threshold", "precision", "recall", "f1", "average_precision", "roc_auc")
    rows = [[name, *[_fmt(row.get(k)) for k in keys], row["support"]] for name, row in report["per_class"].items()]
    rows.append(["macro mean", "", *[_fmt(report["macro_avg"].get(k)) for k in keys[1:]], ""])
    return table(["label", "threshold", "precision", "recall", "F1", "AP", "ROC AUC", "support"], rows, 1)


def _multi_label_numbers(report: dict, split: str) -> str:
    cardinality = report["label_cardinality"]
    return (f"<p>{split}: mAP <b>{report['mAP']:.4f}</b>, sample-F1 <b>{report['sample_f1']:.4f}</b>, subset "
            f"accuracy {report['subset_accuracy']:.4f}, Hamming loss {report['hamming_loss']:.4f}, labels per image "
            f"{cardinality['data']:.2f} (predicted {cardinality['predicted']:.2f}); {report['images']} images.</p>")


def _multi_label_report(run: RunRecord, png) -> str:
    """report.html of a multi-label run: mAP and sample-based F1 where a single-label run has accuracy, every
    label's numbers at the thresholds tuned on val, and a precision-recall curve per label."""
    val, test = run.results.get("val at thresholds"), run.test
    cards = [_card(f"{run.best['mAP']:.3f}", "val mAP (best epoch)")] if run.best else []
    if test:
        cards += [_card(f"{test['mAP']:.3f}", "test mAP"), _card(f"{test['sample_f1']:.3f}", "test sample-F1")]
    out = [f"<h1>{esc(run.run_dir.name)}</h1><p class='sub'>{len(run.class_names)} labels, several per image "
           f"&middot; best epoch {run.best_epoch} of {run.epochs_run}</p><div class='cards'>{''.join(cards)}</div>",
           _data_and_model(run), "<h2>Training curves</h2>",
           _grid(png("loss.png", "loss"), png("map.png", "mAP and sample-F1")),
           f"<h2>Validation, best epoch ({run.best_epoch}), at the tuned thresholds</h2>"]
    if val:
        out += [_multi_label_numbers(val, "val"), _multi_label_table(val)]
    out.append(_grid(png("pr_val.png", "precision-recall per label, val")))
    out.append("<h2>Test</h2>")
    if test:
        out += [_multi_label_numbers(test, "test"), _multi_label_table(test),
                _grid(png("pr_test.png", "precision-recall per label, test"))]
    else:
        out.append("<p class='note'>This run has no test split.</p>")
    out.append("<p class='sub' style='margin-top:32px'>Written by imgcls from the files of this run folder; "
               "<code>imgcls report RUN</code> redraws it.</p>")
    return page(f"imgcls report: {run.run_dir.name}", "".join(out))


def write_report(run_dir: str | os.PathLike, not_drawn: dict[str, str] | None = None) -> Path:
    """Redraw the run's plots, then write RUN/report.html (atomically) and return its path. A figure that cannot
    be drawn (or one in ``not_drawn``, drawn elsewhere: file name -> why) is left out with a line that says why."""
    from .multilabel import plot_multilabel_run
    from .plots import plot_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ImgclsError(f"{run_dir}: folder not found; pass a run folder such as runs/train")
    run = read_run(run_dir)  # one clear error for a folder that is not a run, before drawing anything
    _, failed = (plot_multilabel_run if run.multi_label else plot_run)(run_dir)
    path = run_dir / "report.html"
    atomic_write_text(path, build_report(run_dir, (not_drawn or {}) | failed))
    log.info(f"Report: {path}")
    return path
