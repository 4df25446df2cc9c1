"""imgcls compare: several runs in one table, sorted by a chosen metric."""

from __future__ import annotations

import csv
import json
import shutil

import pytest


def write_benchmark(run_dir, rows, name="benchmark"):
    """A benchmark.json laid out as imgcls.benchmark.benchmark writes it."""
    folder = run_dir / name
    folder.mkdir()
    table = {"weights": str(run_dir / "weights" / "best.pt"), "model": "simple_cnn", "input_size": [3, 32, 32],
             "seconds_per_measurement": 0.2, "machine": {"cpu": "x86_64", "cores": 2},
             "results": [{"backend": backend, "batch": batch, "img_per_s": speed, "p50_ms": 1.0, "p95_ms": 2.0,
                          "runs": 10} for backend, batch, speed in rows],
             "skipped": {}}
    (folder / "benchmark.json").write_text(json.dumps(table))


@pytest.fixture
def runs(trained_run, tmp_path):
    """Three runs: the trained one, one with a worse val accuracy and no test split, one bigger model."""
    parent = tmp_path / "runs"
    first = shutil.copytree(trained_run, parent / "train")
    results = json.loads((first / "results.json").read_text())
    best = f"epoch:{results['best epoch']}"
    # the tiny fixture run may reach val accuracy 1.0; pin it so that the order below is known
    results[best]["valid info"]["accuracy"] = 0.9
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
    (third / "results.json").write_text(json.dumps(r3))
    # an older benchmark, then a newer one: the newest counts, torch at its largest batch (not the faster onnx)
    write_benchmark(third, [("torch", 1, 90.0), ("torch", 32, 400.0)])
    write_benchmark(third, [("torch", 1, 100.0), ("torch", 8, 812.5), ("onnx", 8, 2000.0)], name="benchmark2")
    return parent


def test_compare_sorts_by_the_chosen_metric_and_writes_csv_and_html(cli, runs):
    code, out, err = cli("compare", *sorted(runs.iterdir()))
    assert code == 0, err
    lines = out.splitlines()
    assert "best val acc" in lines[0] and "torch img/s*" in lines[0] and "FLOPs" in lines[0]
    assert any(line.startswith("* torch img/s:") and "largest batch" in line for line in lines)
    order = [line.split()[0] for line in lines[1:4]]
    assert order == [str(runs / "train3"), str(runs / "train"), str(runs / "train2")]
    with open(runs / "compare" / "compare.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == order
    assert rows[2]["test_accuracy"] == ""
    assert (rows[0]["predict_images_per_s"], rows[0]["predict_batch"]) == ("812.5", "8")
    assert rows[1]["predict_images_per_s"] == rows[1]["predict_batch"] == ""  # no benchmark: blank
    assert rows[0]["model"] == "resnet18" and rows[1]["model"] == "simple_cnn"
    page = (runs / "compare" / "compare.html").read_text()
    assert page.index("train3") < page.index("train2") and "http" not in page and "largest batch" in page

    # fewest parameters first; the compare folder itself is skipped with a warning, and never overwritten
    code, out, err = cli("compare", *sorted(runs.iterdir()), "--sort", "params")
    assert code == 0 and "left out" in err and str(runs / "compare") in err
    assert out.splitlines()[-3].split()[0] == str(runs / "train3")
    assert (runs / "compare2" / "compare.csv").is_file()


def test_compare_bad_input(cli, runs, tmp_path):
    code, _, err = cli("compare", runs / "train", "--sort", "speed")
    assert code == 2 and "--sort 'speed'" in err and "val_accuracy" in err
    code, _, err = cli("compare", tmp_path / "nothing")
    assert code == 2 and "no run folder" in err


def test_compare_takes_the_speed_from_a_real_imgcls_benchmark(cli, trained_run, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "runs" / "train")
    code, _, err = cli("benchmark", "--weights", run / "weights" / "best.pt", "--backends", "torch",
                       "--batch", "1,2", "--seconds", "0.2")
    assert code == 0, err
    measured = json.loads((run / "benchmark" / "benchmark.json").read_text())["results"]
    at_batch_2 = next(r["img_per_s"] for r in measured if r["batch"] == 2)

    code, _, err = cli("compare", run, "--out", tmp_path / "table")
    assert code == 0, err
    with open(tmp_path / "table" / "compare.csv", newline="") as f:
        [row] = list(csv.DictReader(f))
    assert float(row["predict_images_per_s"]) == pytest.approx(at_batch_2) and at_batch_2 > 0
    assert row["predict_batch"] == "2"


def test_compare_skips_a_damaged_benchmark_with_a_warning(cli, trained_run, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "runs" / "train")
    write_benchmark(run, [("torch", 4, 250.0)])
    (run / "benchmark2").mkdir()
    (run / "benchmark2" / "benchmark.json").write_text("{not json")
    code, _, err = cli("compare", run, "--out", tmp_path / "table")
    assert code == 0 and "benchmark2" in err and "damaged" in err
    with open(tmp_path / "table" / "compare.csv", newline="") as f:
        [row] = list(csv.DictReader(f))
    assert (row["predict_images_per_s"], row["predict_batch"]) == ("250.0", "4")
