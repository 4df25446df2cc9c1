"""predict --ray and serve --ray: the same results and the same app on Ray, and one line for every bad flag.

The tests that run on Ray share one local Ray (2 CPUs), started once for this module. Without the ray extra they
skip on a developer's machine and fail in CI, which installs it with the dev extra.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from imagegen import make_class_folders
from test_serve import _free_port, png_bytes

MISSING = importlib.util.find_spec("ray") is None
needs_ray = pytest.mark.skipif(MISSING and os.environ.get("CI") != "true",
                               reason="ray is not installed (the ray extra)")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    if MISSING:
        pytest.fail("CI=true but ray (in the dev extra) is not installed")
    from imgcls.deploy.ray_cluster import ray_session

    with ray_session("local") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Shapes in class folders, and one file that is not an image."""
    folder = make_class_folders(tmp_path_factory.mktemp("ray-photos") / "photos", per_class=8)
    (folder / "circle" / "broken.png").write_bytes(b"not an image")
    return folder


def _rows(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@needs_ray
def test_predict_on_ray_writes_what_predict_writes(local_ray, trained_run, photos, tmp_path, cli):
    weights = trained_run / "weights" / "best.pt"
    code, _, err = cli("predict", "--weights", weights, "--source", photos, "--out", tmp_path / "plain", "--topk", "2")
    assert code == 0, err
    code, _, err = cli("predict", "--weights", weights, "--source", photos, "--out", tmp_path / "ray", "--topk", "2",
                       "--ray", "--workers", "2")
    assert code == 0, err
    assert "on 2 Ray worker(s)" in err and "1 failed" in err
    plain, on_ray = _rows(tmp_path / "plain" / "predictions.csv"), _rows(tmp_path / "ray" / "predictions.csv")
    assert [r["path"] for r in on_ray] == [r["path"] for r in plain] and len(plain) == 25  # same files, same order
    for a, b in zip(plain, on_ray):
        assert (a["predicted"], a["top2"], a["error"]) == (b["predicted"], b["top2"], b["error"])
        assert a["confidence"] == b["confidence"] or abs(float(a["confidence"]) - float(b["confidence"])) <= 1e-5
    broken = [r for r in on_ray if r["path"].endswith("broken.png")]
    assert broken[0]["predicted"] == "" and "not an image" in broken[0]["error"]
    written = json.loads((tmp_path / "ray" / "predictions.json").read_text())
    assert written["ray"]["workers"] == 2 and written["summary"]["failed"] == 1
    assert len(written["predictions"]) == 25


def test_a_workers_results_travel_whole():
    """What a Ray worker sends back rebuilds the same Prediction, one-label or multi-label, under the source's name."""
    from imgcls.deploy.predict import Prediction
    from imgcls.deploy.ray_predict import PredictorWorker, rebuilt

    sent = [Prediction(path="/abs/a.jpg", label="cat", confidence=0.9, class_index=1,
                       topk=(("cat", 0.9), ("dog", 0.1)), unknown=False, score=3.5),
            Prediction(path="/abs/b.jpg", labels=("sky", "water"),
                       probabilities=(("sky", 0.91), ("tree", 0.1), ("water", 0.77))),
            Prediction(path="/abs/c.jpg", error="not an image")]

    class Stub:
        def predict_stream(self, paths):
            assert paths == [p.path for p in sent]
            return sent

    worker = PredictorWorker(Stub)
    out = worker({"path": [p.path for p in sent], "name": ["a.jpg", "b.jpg", "c.jpg"]})
    back = [rebuilt(text, Prediction) for text in out["prediction"]]
    assert back == [dataclasses.replace(p, path=name) for p, name in zip(sent, ["a.jpg", "b.jpg", "c.jpg"])]


@needs_ray
def test_serve_on_ray_two_replicas_survive_a_killed_one(local_ray, trained_run, tmp_path):
    """Two replicas of the same app (API key included) answer; one replica's process is killed and Ray replaces
    it while the other keeps answering."""
    import functools
    import signal

    import httpx
    from ray import serve

    from imgcls.deploy.ray_serve import app_deployment
    from imgcls.deploy.serve import create_app

    key = "a-long-enough-test-key"
    build = functools.partial(create_app, weights=str(trained_run / "weights" / "best.pt"), api_key=key)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(app_deployment(build, 2, 2, 1.0), name="imgcls", route_prefix="/")
        url, headers = f"http://127.0.0.1:{port}", {"X-API-Key": key}
        image = {"files": ("c.png", png_bytes("circle"), "image/png")}
        assert httpx.post(url + "/predict", files=image).status_code == 401  # the key holds behind Ray
        answer = httpx.post(url + "/predict", files=image, headers=headers, timeout=30)
        assert answer.status_code == 200 and answer.json()["predictions"][0]["predicted"]

        def workers(n=24) -> set[int]:
            with ThreadPoolExecutor(6) as pool:
                return {r.json()["worker"] for r in pool.map(lambda _: httpx.get(url + "/health", timeout=30),
                                                             range(n))}

        first = workers()
        assert len(first) == 2  # both replicas answer
        os.kill(min(first), signal.SIGKILL)
        deadline, seen = time.time() + 90, set()
        while time.time() < deadline and not seen - first:
            seen |= workers(6)  # the survivor answers meanwhile
            time.sleep(0.5)
        assert seen - first, "Ray did not replace the killed replica"
        assert httpx.post(url + "/predict", files=image, headers=headers, timeout=30).status_code == 200
    finally:
        serve.shutdown()


def test_bad_ray_flags_are_one_line(trained_run, photos, tmp_path, cli, monkeypatch):
    weights = trained_run / "weights" / "best.pt"
    serve = ["serve", "--weights", weights, "--port", str(_free_port())]
    # --replicas 0, --replicas without --ray and predict --ray --workers 0: test_api_cli_agree.py
    for args, expected in [(serve + ["--ray", "--replicas", "3", "--max-replicas", "2"], "--max-replicas 2"),
                           (serve + ["--ray", "--workers", "2"], "give --replicas instead")]:
        code, _, err = cli(*args)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    predict = ["predict", "--weights", weights, "--source", photos, "--out", tmp_path / "p"]

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else
                        real_find_spec(name, *a))
    code, _, err = cli(*predict, "--ray")
    assert code == 2 and 'pip install "imgcls[ray]"' in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()


@needs_ray
def test_unreachable_ray_address_is_one_line(trained_run, photos, tmp_path, cli):
    predict = ["predict", "--weights", trained_run / "weights" / "best.pt", "--source", photos,
               "--out", tmp_path / "p"]
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    code, _, err = cli(*predict, "--ray", address)
    assert code == 2 and f"--ray {address}: no Ray cluster answers there" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "p").exists()
    code, _, err = cli(*predict, "--ray", "head-node")
    assert code == 2 and "HOST:PORT" in err
