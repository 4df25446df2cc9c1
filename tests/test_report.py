"""report.html: written by train, rebuilt by `imgcls report`, self-contained, and renders in a real browser."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(trained_run, tmp_path):
    return shutil.copytree(trained_run, tmp_path / "run")


def _images(page: str) -> list[str]:
    return re.findall(r"<img[^>]*\ssrc=\"([^\"]*)\"", page)


def test_train_writes_report_and_error_gallery(trained_run):
    assert (trained_run / "report.html").is_file()
    assert (trained_run / "errors_val.png").is_file()
    page = (trained_run / "report.html").read_text(encoding="utf-8")
    for text in ("Data set", "Model", "Run settings", "Training curves", "Validation, best epoch",
                 "Error analysis", "Most confused pairs", "Test", "circle", "square", "triangle",
                 "FLOPs per image", "trainable parameters", "ROC AUC", "specificity"):
        assert text in page, text
    # the time a user waited (caching and evaluating included), not the epochs' alone
    results = json.loads((trained_run / "results.json").read_text())
    assert f"<b>{results['wall seconds'] / 60:.1f} min</b>" in page
    assert f"whole run (epochs {results['train seconds'] / 60:.1f} min)" in page


def test_report_is_self_contained(cli, run):
    (run / "report.html").unlink()
    code, out, err = cli("report", run)
    assert code == 0, err
    page = (run / "report.html").read_text(encoding="utf-8")
    assert out.strip() == str(run / "report.html")
    # no address outside the embedded images (their base64 may spell "http" by chance)
    assert "http" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page).lower()
    assert not re.search(r"(src|href)=\"(?!data:)", page), "every src/href must be a data: URI"
    assert "<script" not in page.lower() and "<link" not in page.lower()
    sources = _images(page)
    # curves (3), confusion train/val/test, ROC/PR/calibration val and test, error gallery
    assert len(sources) >= 13
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("pr_val.png", "calibration_val.png", "pr_test.png", "calibration_test.png"):
        assert (run / name).is_file()


def test_report_redraws_an_old_run_from_its_folder_alone(cli, run, tmp_path):
    # the data set is gone and so are the weights: the report needs neither
    args = yaml.safe_load((run / "args.yaml").read_text())
    args["data"] = str(tmp_path / "deleted")
    (run / "args.yaml").write_text(yaml.safe_dump(args))
    shutil.rmtree(run / "weights")
    (run / "report.html").unlink()
    code, _, err = cli("report", run)
    assert code == 0, err
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "Most confused pairs" in page and page.count("data:image/png") >= 13


def _to_seed_format(run: Path) -> None:
    """Rewrite results.json as runs written before train and val shared one metrics schema: the "test" block in
    the per-epoch format ("Precision", "mean F1 score", "confusion matrix"), no phases, no elapsed times."""
    import json

    from imgcls.metrics import classification_report, confusion_matrix
    from imgcls.record.results import seed_info

    results = json.loads((run / "results.json").read_text())
    test = results["test"]
    names = results["dataset"]["class_names"]
    cm = np.asarray(test["confusion_matrix"])
    y = np.repeat(np.arange(len(names)), cm.sum(axis=1))
    predicted = np.concatenate([np.repeat(np.arange(len(names)), row) for row in cm])
    old = seed_info(classification_report(confusion_matrix(y, predicted, len(names)), names, loss=0.5))
    results["test"] = old | {"epoch": test["epoch"]}
    for key in ("phases", "wall seconds"):
        results.pop(key, None)
    for key in [k for k in results if k.startswith("epoch:")]:
        results[key].pop("phase", None)
        results[key].pop("elapsed", None)
    (run / "results.json").write_text(json.dumps(results))


def test_runs_written_before_the_one_schema_still_report_and_compare(cli, run, tmp_path):
    _to_seed_format(run)
    (run / "report.html").unlink()
    code, _, err = cli("report", run)
    assert code == 0, err
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "Test accuracy <b>" in page and "macro mean" in page and "accuracy against wall time" in page
    assert (run / "accuracy_time.png").exists()  # drawn from the per-epoch seconds instead
    code, out, err = cli("compare", run, "--out", tmp_path / "compare")
    assert code == 0, err
    assert run.name in out


def test_report_lists_val_evaluations(cli, run):
    assert cli("val", "--weights", run / "weights" / "best.pt", "--workers", "0", "--errors", "2")[0] == 0
    assert cli("report", run)[0] == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "Evaluations (imgcls val)" in page and "<td>val</td>" in page


def test_report_on_a_folder_that_is_not_a_run(cli, tmp_path):
    code, _, err = cli("report", tmp_path)
    assert code == 2 and "not a run folder" in err and err.strip().count("\n") == 0
    code, _, err = cli("report", tmp_path / "missing")
    assert code == 2 and "folder not found" in err


def test_report_renders_in_headless_chromium(trained_run, browser):
    from selenium.webdriver.common.by import By

    browser.get((trained_run / "report.html").as_uri())
    assert browser.title.startswith("imgcls report")
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    widths = browser.execute_script("return [...document.images].map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) >= 13 and all(w > 100 for w in widths), widths
    # data set, model, per-class metrics and test tables at least (more when there are mistakes)
    assert len(browser.find_elements(By.TAG_NAME, "table")) >= 4
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "Data set" in text and "Validation, best epoch" in text and "precision" in text
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(artifacts / "report.png"))


def test_a_figure_that_cannot_be_drawn_is_named_and_the_report_is_written(cli, run, monkeypatch):
    """One figure that fails (matplotlib, odd data) costs that figure: the page is written with the others and a
    line that names the missing one and why."""
    from imgcls.reporting import plots

    def broken(*args, **kwargs):
        raise ValueError("no curve for this data")

    monkeypatch.setattr(plots, "plot_roc", broken)
    for name in ("roc_val.png", "roc_test.png"):
        (run / name).unlink()
    code, _, err = cli("report", run)
    assert code == 0, err
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "ROC, val: not drawn (ValueError: no curve for this data)" in page
    assert "ROC, test: not drawn" in page and "precision-recall, val" in page and (run / "pr_val.png").exists()
    assert "WARNING: roc_val.png not drawn" in err
