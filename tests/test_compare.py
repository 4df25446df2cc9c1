"""imgcls compare: several runs in one table, sorted by a chosen metric."""

from __future__ import annotations

import csv
import json
import shutil

import pytest


@pytest.fixture
def runs(trained_run, tmp_path):
    """Three runs: the trained one, one with a worse val accuracy and no test split, one bigger model."""
    parent = tmp_path / "runs"
    first = shutil.copytree(trained_run, parent / "train")
    results = json.loads((first / "results.json").read_text())
    best = f"epoch:{results['best epoch']}"
    results[best]["valid info"]["accuracy"] = 0.8  # between the other two, whatever the tiny run reached
    (first / "results.json").write_text(json.dumps(results))

    second = shutil.copytree(trained_run, parent / "train2")
    r2 = json.loads(json.dumps(results))
    r2[best]["valid info"]["accuracy"] = 0.5
    r2.pop("test")
    (second / "results.json").write_text(json.dumps(r2))

    third = shutil.copytree(trained_run, parent / "train3")
    r3 = json.loads(json.dumps(results))
    r3[best]["valid info"]["accuracy"] = 0.99
    r3["model"]["name"] = "resnet18"
    r3["model"]["total parameters"] = 11_000_000
    r3["predict images/s"] = 812.5
    (third / "results.json").write_text(json.dumps(r3))
    return parent


def test_compare_sorts_by_the_chosen_metric_and_writes_csv_and_html(cli, runs):
    code, out, err = cli("compare", *sorted(runs.iterdir()))
    assert code == 0, err
    lines = out.splitlines()
    assert "best val acc" in lines[0] and "predict img/s" in lines[0] and "FLOPs" in lines[0]
    order = [line.split()[0] for line in lines[1:4]]
    assert order == [str(runs / "train3"), str(runs / "train"), str(runs / "train2")]
    with open(runs / "compare" / "compare.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == order
    assert rows[2]["test_accuracy"] == "" and rows[0]["predict_images_per_s"] == "812.5"
    assert rows[0]["model"] == "resnet18" and rows[1]["model"] == "simple_cnn"
    page = (runs / "compare" / "compare.html").read_text()
    assert page.index("train3") < page.index("train2") and "http" not in page

    # fewest parameters first; the compare folder itself is skipped with a warning, and never overwritten
    code, out, err = cli("compare", *sorted(runs.iterdir()), "--sort", "params")
    assert code == 0 and "left out" in err and str(runs / "compare") in err
    assert out.splitlines()[-2].split()[0] == str(runs / "train3")
    assert (runs / "compare2" / "compare.csv").is_file()


def test_compare_bad_input(cli, runs, tmp_path):
    code, _, err = cli("compare", runs / "train", "--sort", "speed")
    assert code == 2 and "--sort 'speed'" in err and "val_accuracy" in err
    code, _, err = cli("compare", tmp_path / "nothing")
    assert code == 2 and "no run folder" in err
