"""imgcls check --labels: planted label errors ranked first, the relabel CSV, and train --relabel / export-clean
applying it without touching the source. Generated images only; the backbone is the packaged
tf_efficientnet_lite0 at 64 px, so the feature pass takes seconds."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagegen import make_class_folders

pytest.importorskip("cleanlab")

from imgcls.data.relabel import read_relabel_csv  # noqa: E402
from imgcls.engine import labels as label_review  # noqa: E402
from imgcls.errors import ImgclsError  # noqa: E402

# (where it was put, its true class): circles and a triangle filed under the wrong class
PLANTED = {"square/circle_3.png": "circle", "circle/triangle_5.png": "triangle", "triangle/circle_7.png": "circle"}
OFF_TOPIC = "square/checkerboard.png"


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "given", "suggested", "score", "action"])
        writer.writeheader()
        writer.writerows(rows)


def planted_data(root: Path) -> Path:
    """3 classes x 16 shapes, 3 of them moved into a wrong class folder, and one off-topic checkerboard."""
    make_class_folders(root, per_class=16, size=64)
    for where, truth in PLANTED.items():
        name = Path(where).name
        shutil.move(root / truth / name, root / where)
    board = (np.indices((64, 64)).sum(0) // 8 % 2)[..., None] * np.array([255, 230, 0])
    Image.fromarray(board.astype(np.uint8)).save(root / OFF_TOPIC)
    return root


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory):
    """One `imgcls check --labels --export-relabel` run on the planted data: (data, report folder, relabel CSV)."""
    from conftest import run_cli

    base = tmp_path_factory.mktemp("labels")
    data = planted_data(base / "shapes")
    before = tree_digest(data)
    relabel = base / "relabel.csv"
    done = run_cli("check", "--data", data, "--out", base / "report", "--labels", "--imgsz", "64", "--no-near",
                   "--export-relabel", relabel, cwd=base)
    assert done.returncode == 0, done.stderr
    assert tree_digest(data) == before  # the check reads, never writes
    return data, base / "report", relabel, done.stdout


def test_planted_label_errors_are_ranked_first(reviewed):
    data, report, relabel, stdout = reviewed
    section = json.loads((report / "check.json").read_text())["labels"]
    ranked = section["ranked"]
    assert {r["path"] for r in ranked[:len(PLANTED)]} == set(PLANTED)
    for row in ranked[:len(PLANTED)]:
        assert row["suggested"] == PLANTED[row["path"]] and row["flagged"]
    assert len(ranked) == 49 and section["folds"] == 5 and section["label_issues"] >= len(PLANTED)
    assert "likely label error" in stdout and "labelled square, looks like circle" in stdout

    rows = read_csv(relabel)  # the editable CSV: same order, flagged ones proposed for relabelling
    assert [r["path"] for r in rows] == [r["path"] for r in ranked]
    assert list(rows[0]) == ["path", "given", "suggested", "score", "action"]
    assert all(r["action"] == "relabel" for r in rows[:len(PLANTED)])
    assert [float(r["score"]) for r in rows] == sorted((float(r["score"]) for r in rows), reverse=True)


def test_outlier_and_html_pictures_the_suggested_class(reviewed):
    _, report, _, _ = reviewed
    findings = json.loads((report / "check.json").read_text())["findings"]
    assert OFF_TOPIC in [f["paths"][0] for f in findings if f["kind"] == "outlier"]
    issue = next(f for f in findings if f["kind"] == "label_issue" and f["paths"] == ["square/circle_3.png"])
    assert issue["details"]["suggested"] == "circle"
    assert len(issue["details"]["similar"]) == 3 and all(p.startswith("circle/") for p in issue["details"]["similar"])
    html = (report / "check.html").read_text()
    assert "looks like <b>circle</b>" in html and "<h2>Labels</h2>" in html
    assert html.count("data:image/jpeg;base64") >= 4 * len(PLANTED)  # each error beside 3 of its look-alikes


def test_train_relabel_applies_the_csv_without_touching_the_source(reviewed, cli, tmp_path):
    data, _, relabel, _ = reviewed
    rows = read_csv(relabel)
    rows[len(PLANTED)]["action"] = "drop"  # a person's edit: leave the next image out
    dropped = rows[len(PLANTED)]["path"]
    edited = tmp_path / "edited.csv"
    write_csv(edited, rows)
    before = tree_digest(data)
    code, _, err = cli("train", "--data", data, "--relabel", edited, "--model", "simple_cnn", "--no-pretrained",
                       "--imgsz", "32", "--epochs", "1", "--batch-size", "8", "--workers", "0",
                       "--project", tmp_path / "runs")
    assert code == 0, err
    assert "3 relabelled, 1 dropped" in err
    assert tree_digest(data) == before
    split = {r["path"]: r["class"] for r in read_csv(tmp_path / "runs" / "train" / "split.csv")}
    for where, truth in PLANTED.items():
        assert split[where] == truth
    assert dropped not in split and len(split) == 48
    args = (tmp_path / "runs" / "train" / "args.yaml").read_text()
    assert f"relabel: {edited.resolve()}" in args


def test_export_clean_puts_relabelled_images_in_their_new_class_folder(reviewed, cli, tmp_path):
    data, _, relabel, _ = reviewed
    before = tree_digest(data)
    clean = tmp_path / "clean"
    code, out, err = cli("check", "--data", data, "--out", tmp_path / "report", "--no-near", "--imgsz", "64",
                         "--export-clean", clean, "--relabel", relabel)
    assert code == 0, err
    assert tree_digest(data) == before
    for where, truth in PLANTED.items():
        name = Path(where).name
        assert (clean / truth / name).is_file() and not (clean / where).exists()
    assert "3 image(s) in a new class folder" in out


@pytest.mark.parametrize("row, message", [
    ({"action": "rename"}, "action 'rename'; write keep, relabel or drop"),
    ({"path": "square/nope.png"}, "'square/nope.png' is not an image of the data folder"),
    ({"given": "triangle"}, "is now in class 'circle', the file says 'triangle'; the file is out of date"),
    ({"action": "relabel", "suggested": "hexagon"}, "to 'hexagon', which is not a class"),
])
def test_bad_relabel_rows_name_the_line_and_what_to_do(tmp_path, row, message):
    classes = {"circle/a.png": "circle", "square/b.png": "square"}
    good = {"path": "square/b.png", "given": "square", "suggested": "circle", "score": "0.9", "action": "relabel"}
    bad = {"path": "circle/a.png", "given": "circle", "suggested": "square", "score": "0.1", "action": "keep"} | row
    path = tmp_path / "relabel.csv"
    write_csv(path, [good, bad])
    with pytest.raises(ImgclsError) as error:
        read_relabel_csv(path, classes)
    assert str(error.value).startswith(f"--relabel {path} line 3: ") and message in str(error.value)
    write_csv(path, [good])
    assert read_relabel_csv(path, classes).new_class == {"square/b.png": "circle"}


def test_missing_or_malformed_relabel_file_is_one_clear_line(cli, flat_data, tmp_path):
    missing = tmp_path / "missing.csv"
    code, _, err = cli("train", "--data", flat_data, "--relabel", missing, "--project", tmp_path / "runs")
    assert code == 2 and err.strip().splitlines()[-1] == f"imgcls: error: --relabel {missing}: file not found"
    other = tmp_path / "other.csv"
    other.write_text("name,label\na.png,cat\n")
    code, _, err = cli("train", "--data", flat_data, "--relabel", other, "--project", tmp_path / "runs")
    assert code == 2 and "not a relabel file (expected the columns path,given,suggested,score,action" in err
    code, _, err = cli("check", "--data", flat_data, "--relabel", other, "--out", tmp_path / "r")
    assert code == 2 and "add --export-clean DIR" in err
    code, _, err = cli("check", "--data", flat_data, "--export-relabel", tmp_path / "x.csv", "--out", tmp_path / "r")
    assert code == 2 and "add --labels" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "r").exists()


def test_export_relabel_never_overwrites_a_file(cli, flat_data, tmp_path):
    edits = tmp_path / "my_edits.csv"
    edits.write_text("precious")
    code, _, err = cli("check", "--data", flat_data, "--labels", "--export-relabel", edits, "--out", tmp_path / "r")
    assert code == 2 and "already exists (it may hold your edits)" in err and edits.read_text() == "precious"


def test_labels_without_cleanlab_names_the_extra(cli, flat_data, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "cleanlab" or m.startswith("cleanlab.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # import cleanlab now raises ImportError
    code, _, err = cli("check", "--data", flat_data, "--labels", "--out", tmp_path / "r")
    assert code == 2
    assert err.strip().splitlines()[-1] == ('imgcls: error: --labels needs the cleanlab package: '
                                            'pip install "imgcls[labels]"')


# ------------------------------------------------------------------------------------------ pure functions

def blobs(seed: int = 0, per_class: int = 20, dim: int = 16):
    """Three well-separated Gaussian clusters of features and their labels."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, dim) * 6
    x = np.concatenate([c + rng.normal(size=(per_class, dim)) for c in centres])
    return x, np.repeat(np.arange(3), per_class)


def test_out_of_sample_probabilities_come_from_heads_that_never_saw_the_row():
    x, y = blobs()
    y_noisy = y.copy()
    y_noisy[[0, 25]] = [2, 0]  # two flipped labels
    probs = label_review.out_of_sample_probs(x, y_noisy, 3)
    assert probs.shape == (60, 3) and np.allclose(probs.sum(axis=1), 1)
    # out of sample, the flipped rows still look like their true cluster
    assert probs[0].argmax() == 0 and probs[25].argmax() == 1
    score, flagged = label_review.rank_label_issues(y_noisy, probs)
    assert set(np.argsort(-score)[:2]) == {0, 25} and flagged[[0, 25]].all()
    assert label_review.suggested_classes(y_noisy, probs)[[0, 25]].tolist() == [0, 1]


def test_outliers_and_semantic_duplicates_from_feature_space():
    x, _ = blobs(per_class=10)
    x = np.concatenate([x, -np.ones((1, x.shape[1])) * 5])  # far from every cluster
    unit = label_review.normalise(x)
    assert label_review.far_out(label_review.outlier_scores(unit)).tolist() == [30]
    twin = np.concatenate([unit, unit[[4]] * 1.0001])
    assert (4, 31) in label_review.semantic_pairs(label_review.normalise(twin))
    assert label_review.most_similar_of_class(unit, 0, np.arange(10), n=3)[0] != 0


def test_train_names_likely_label_errors_and_writes_a_relabel_file_it_accepts(cli, tmp_path):
    """train's data check reviews the labels on the features its head trains on: the planted errors are named in
    the log, lead RUN/relabel.csv and the "label review" block, and that file is what --relabel takes next."""
    data = planted_data(tmp_path / "shapes")
    before = tree_digest(data)
    common = ["--fast", "--imgsz", "64", "--epochs", "2", "--batch-size", "16", "--workers", "0",
              "--project", tmp_path / "runs"]
    code, _, err = cli("train", "--data", data, *common)
    assert code == 0, err
    run = tmp_path / "runs" / "train"
    assert "may be mislabelled, most likely first:" in err
    assert re.search(r"labelled square \(\d+%\), looks like circle \(\d+%\)", err)
    assert f"--relabel {run / 'relabel.csv'}" in err
    rows = read_csv(run / "relabel.csv")
    assert len(rows) == 49
    assert {r["path"] for r in rows[:len(PLANTED)]} == set(PLANTED)
    assert all(r["suggested"] == PLANTED[r["path"]] for r in rows[:len(PLANTED)])
    review = json.loads((run / "results.json").read_text())["label review"]
    flagged = {r["path"] for r in review["likely_errors"]}
    assert review["images"] == 49 and len(flagged) == review["label_issues"] >= 2  # cleanlab's own cut
    assert {r["path"] for r in rows if r["action"] == "relabel"} == flagged
    assert flagged <= set(PLANTED) | {OFF_TOPIC}
    html = (run / "report.html").read_text()
    assert "<h2>Label review</h2>" in html and all(path in html for path in flagged)
    assert html.count("class='suspect'") == len(flagged)  # each with Keep / Relabel as / Drop (test_review_page.py)
    assert tree_digest(data) == before

    code, _, err = cli("train", "--data", data, "--relabel", run / "relabel.csv", "--name", "fixed", *common)
    assert code == 0, err
    assert "relabelled" in err and not (tmp_path / "runs" / "fixed" / "relabel.csv").exists()
    split = {r["path"]: r["class"] for r in read_csv(tmp_path / "runs" / "fixed" / "split.csv")}
    assert all(split[path] == (PLANTED[path] if path in flagged else path.split("/")[0]) for path in PLANTED)
