"""The label review of check.html (and report.html): choosing Keep / Relabel as X / Drop with the keyboard and the
mouse in real Chromium from a file:// page, the choices kept across the class filter, a reload and reopening the
file, and the downloaded relabel.csv taken by `imgcls train --relabel`."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from test_labels import PLANTED, planted_data  # skips without cleanlab

from imgcls.data.check import relabel_rows
from imgcls.data.relabel import read_relabel_csv, relabel_csv_text
from imgcls.pages import page
from imgcls.reporting.label_review import REVIEW_PAGE_SIZE, Suspect, review_help, review_section

CLASSES = ["circle", "square", "triangle"]  # keys 1, 2, 3


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """`imgcls.check(..., labels=True)` on the planted data: (data folder, check.html, its report)."""
    import imgcls

    base = tmp_path_factory.mktemp("review")
    data = planted_data(base / "shapes")
    report = imgcls.check(data, out=base / "check", labels=True, imgsz=64, near=False)
    return data, base / "check" / "check.html", report


def press(browser, *keys) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).send_keys(*keys).perform()


def current_path(browser) -> str:
    return browser.execute_script("const a = document.activeElement.closest('.suspect'); return a && a.dataset.path")


def card(browser, path: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, f".suspect[data-path='{path}']")


def status(browser, path: str) -> str:
    return browser.execute_script("return arguments[0].querySelector('.status').textContent", card(browser, path))


def count_text(browser) -> str:
    return browser.execute_script("return document.getElementById('review-count').textContent")


def go_to(browser, path: str, order: list[str]) -> None:
    """Arrow keys from the selected suspect to ``path``; the selected one is focused, outlined and on screen."""
    from selenium.webdriver.common.keys import Keys

    step = Keys.ARROW_RIGHT if order.index(path) > order.index(current_path(browser)) else Keys.ARROW_LEFT
    for _ in range(len(order)):
        if current_path(browser) == path:
            break
        press(browser, step)
    assert current_path(browser) == path
    assert "current" in card(browser, path).get_attribute("class")
    assert browser.execute_script("const r = arguments[0].getBoundingClientRect(); "
                                  "return r.top >= 0 && r.bottom <= window.innerHeight", card(browser, path))


def wait_for_download(folder: Path, name: str, timeout: float = 20) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        target = folder / name
        if target.is_file() and not list(folder.glob("*.crdownload")):
            return target
        time.sleep(0.1)
    raise AssertionError(f"no {name} in {folder}: {sorted(p.name for p in folder.iterdir())}")


def test_review_choices_survive_the_filter_and_a_reload_and_the_download_trains(checked, browser, download_dir,
                                                                                 cli, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    data, html, report = checked
    browser.get(html.as_uri())
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")] == []
    order = [c.get_attribute("data-path") for c in browser.find_elements(By.CSS_SELECTOR, ".suspect")]
    assert set(order[:len(PLANTED)]) == set(PLANTED)  # most likely label error first, each with its look-alikes
    assert count_text(browser) == f"0 of {len(order)} decided, {len(order)} undecided"
    assert status(browser, "square/circle_3.png") == "Undecided: the file says relabel as circle"

    card(browser, order[0]).find_element(By.CLASS_NAME, "what").click()  # the mouse selects a suspect, then keys
    go_to(browser, "square/circle_3.png", order)
    press(browser, "3")  # relabel as the 3rd class, not the suggested one
    go_to(browser, "circle/triangle_5.png", order)
    press(browser, "d")
    card(browser, "triangle/circle_7.png").find_element(By.CSS_SELECTOR, "button[data-action=keep]").click()
    assert status(browser, "square/circle_3.png") == "Your choice: relabel as triangle"
    assert status(browser, "circle/triangle_5.png") == "Your choice: drop"
    assert status(browser, "triangle/circle_7.png") == "Your choice: keep"
    assert count_text(browser).startswith(f"3 of {len(order)} decided")

    filter_by = Select(browser.find_element(By.ID, "review-filter"))
    filter_by.select_by_value("given:square")  # one class, then back to all
    shown = [c for c in browser.find_elements(By.CSS_SELECTOR, ".suspect") if c.is_displayed()]
    assert "square/circle_3.png" in [c.get_attribute("data-path") for c in shown]
    assert all(c.get_attribute("data-given") == "square" for c in shown)
    filter_by.select_by_value("suggested:circle")
    filter_by.select_by_value("")
    assert status(browser, "square/circle_3.png") == "Your choice: relabel as triangle"

    browser.refresh()  # a reload, then the file opened again
    browser.get("about:blank")
    browser.get(html.as_uri())
    assert count_text(browser).startswith(f"3 of {len(order)} decided")
    assert status(browser, "circle/triangle_5.png") == "Your choice: drop"
    Select(card(browser, "square/circle_3.png").find_element(By.TAG_NAME, "select")).select_by_value("circle")
    assert status(browser, "square/circle_3.png") == "Your choice: relabel as circle"

    browser.find_element(By.ID, "review-download").click()
    downloaded = wait_for_download(download_dir, "relabel.csv")
    text = downloaded.read_text(encoding="utf-8")
    assert text == browser.execute_script("return window.imgclsLabelReview.csv()")
    rows = list(csv.DictReader(text.splitlines()))
    assert [r["path"] for r in rows] == [r["path"] for r in report.labels["ranked"]]  # every image, ranked
    relabel = read_relabel_csv(downloaded, {r["path"]: r["given"] for r in rows})
    assert relabel.new_class["square/circle_3.png"] == "circle" and "triangle/circle_7.png" not in relabel.new_class
    assert relabel.drop == {"circle/triangle_5.png"}

    code, _, err = cli("train", "--data", data, "--relabel", downloaded, "--model", "simple_cnn", "--no-pretrained",
                       "--imgsz", "32", "--epochs", "1", "--batch-size", "8", "--workers", "0",
                       "--project", tmp_path / "runs")
    assert code == 0, err
    with open(tmp_path / "runs" / "train" / "split.csv", newline="") as f:
        split = {r["path"]: r["class"] for r in csv.DictReader(f)}
    assert split["square/circle_3.png"] == "circle"  # relabelled
    assert split["triangle/circle_7.png"] == "triangle"  # kept, though check proposed to relabel it
    assert "circle/triangle_5.png" not in split and len(split) == len(rows) - 1  # dropped

    browser.find_element(By.ID, "review-clear").click()
    browser.switch_to.alert.accept()
    assert count_text(browser) == f"0 of {len(order)} decided, {len(order)} undecided"
    assert browser.execute_script("return window.imgclsLabelReview.csv()") == relabel_csv_text(
        relabel_rows(report.labels))  # undecided: the file check writes
    browser.refresh()
    assert count_text(browser).startswith("0 of")


# ------------------------------------------------------------------------------- the page's CSV, in isolation

NAMES = ["cat", "dog, small", 'bird "blue"']  # class folders whose names the CSV must quote


def synthetic_rows(n: int = 30) -> tuple[list[dict], list[Suspect]]:
    rows = [{"path": f"{NAMES[i % 3]}/img {i}, \"x\".png" if i % 4 == 0 else f"{NAMES[i % 3]}/img_{i}.png",
             "given": NAMES[i % 3], "suggested": NAMES[(i + 1) % 3], "score": 1 - i / 40 + 1e-7,
             "flagged": i < 25} for i in range(n)]
    rows = relabel_rows({"ranked": rows})
    suspects = [Suspect(r["path"], r["given"], r["suggested"], f"{r['path']}: looks like {r['suggested']}")
                for r in rows if r["flagged"]]
    return rows, suspects


def test_the_csv_the_page_writes_is_the_relabel_file(browser, tmp_path):
    """Undecided, the page writes the bytes data/relabel.py writes (quoted paths and class names included); with
    choices made across a page boundary, read_relabel_csv reads them back."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    rows, suspects = synthetic_rows()
    html = tmp_path / "review.html"
    html.write_text(page("review", review_help(100, len(suspects))
                         + review_section(rows, suspects, NAMES, "/data", None, 0)), encoding="utf-8")
    browser.get(html.as_uri())
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")] == []
    written = browser.execute_script("return window.imgclsLabelReview.csv()")
    assert written == relabel_csv_text(rows)
    visible = [c for c in browser.find_elements(By.CSS_SELECTOR, ".suspect") if c.is_displayed()]
    assert len(visible) == REVIEW_PAGE_SIZE
    assert browser.find_element(By.ID, "review-page").text == "page 1 of 2"

    visible[-1].find_element(By.CLASS_NAME, "what").click()
    press(browser, "k", Keys.ARROW_RIGHT)  # across the page boundary
    assert browser.find_element(By.ID, "review-page").text == "page 2 of 2"
    press(browser, "d", Keys.ARROW_RIGHT, "2", Keys.ARROW_LEFT, Keys.ARROW_LEFT)
    assert current_path(browser) == suspects[REVIEW_PAGE_SIZE - 1].path  # back on page 1
    press(browser, Keys.ARROW_LEFT, "1")

    path = tmp_path / "relabel.csv"
    path.write_text(browser.execute_script("return window.imgclsLabelReview.csv()"), encoding="utf-8")
    given = {r["path"]: r["given"] for r in rows}
    relabel = read_relabel_csv(path, given)
    target = {s.path: s.suggested for s in suspects}  # undecided: relabel as suggested, as check proposes
    pick = [s.path for s in suspects[18:22]]
    del target[pick[1]]  # k
    del target[pick[2]]  # d
    target[pick[3]] = NAMES[1]  # 2
    target[pick[0]] = NAMES[0]  # 1
    assert relabel.new_class == {p: c for p, c in target.items() if c != given[p]} and relabel.drop == {pick[2]}


def test_report_html_reviews_the_runs_relabel_file(tmp_path):
    """report.html's label review takes its suspects from RUN/relabel.csv (the rows train proposes to relabel)."""
    from imgcls.data.relabel import write_relabel_csv
    from imgcls.reporting.report import _label_review_section

    rows, _ = synthetic_rows(10)
    write_relabel_csv(tmp_path / "relabel.csv", rows)
    likely = [r | {"given_probability": 0.03, "suggested_probability": 0.9} for r in rows if r["flagged"]][:2]
    run = SimpleNamespace(run_dir=tmp_path, dataset={"root": str(tmp_path / "data")}, class_names=NAMES,
                          label_review={"folds": 5, "label_issues": 10, "images": 10, "cross_validated_accuracy": 0.5,
                                        "file": "relabel.csv", "likely_errors": likely})
    html = _label_review_section(run)
    assert "<h2>Label review</h2>" in html and html.count("class='suspect'") == 10
    assert f"{likely[0]['path']}: labelled cat (3%), looks like dog, small (90%)".replace('"', "&quot;") in html
    data = json.loads(html.split("id='review-data'>")[1].split("</script>")[0])
    assert len(data["rows"]) == 10 and data["classes"] == NAMES
    (tmp_path / "relabel.csv").write_text("path,given,suggested,score,action\na.png,cat,dog,high,relabel\n")
    assert "class='suspect'" not in _label_review_section(run)  # a file the page cannot show: the plain table
