"""predict --ray against imgcls predict, and serve --ray's soak with a replica killed mid-way.

    python benchmarks/ray_scale.py predict --weights RUN/weights/best.pt --data flowers5 --images 2000 --rounds 2
    python benchmarks/ray_scale.py simulate --images 2000 --workers 1,2,4,8
    python benchmarks/ray_scale.py serve --weights RUN/weights/best.pt --photos flowers5/daisy --requests 1000

predict: the whole command (process start to exit) on the same list of images, the contenders alternating so that
the load of the shared cores falls on both alike; Ray's start-up as the command logs it; the predictions.csv of
every Ray run compared with the first plain run (path, class, confidence within 1e-5).
simulate: the same Ray Data pipeline with a stand-in model that waits instead of computing, on 1 to 8 workers.
serve: `imgcls serve --ray --replicas 2`; a soak of single uploads (8 in flight, 10% junk with its expected 4xx);
then a second soak during which one replica's process is killed (SIGKILL) after half the requests: the requests
that fail, and whether Ray starts a replacement replica (a new process id in /health).
One JSON row per run on stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.serve_memory import Server, stream_plan  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SUFFIXES = {".jpg", ".jpeg", ".png"}


def load() -> float:
    return os.getloadavg()[0]


def image_list(data: str, count: int, folder: Path) -> Path:
    paths = sorted(str(p) for p in Path(data).rglob("*") if p.suffix.lower() in SUFFIXES)[:count]
    listing = folder / "images.txt"
    listing.write_text("\n".join(paths) + "\n")
    return listing


def run_predict(weights: str, listing: Path, out: Path, extra: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    load_before = load()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "imgcls", "predict", "--weights", weights, "--source", str(listing),
                           "--out", str(out), "--topk", "1", *extra], capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    ray_start = re.search(r"Ray: .* ready in ([\d.]+)s", done.stderr)
    images = sum(1 for _ in listing.open())
    return {"seconds": round(seconds, 2), "img_per_s": round(images / seconds, 2), "images": images,
            "ray_start_s": float(ray_start.group(1)) if ray_start else None, "load_1min": round(load_before, 2),
            "console_lines": len(done.stderr.strip().splitlines())}


def same_csv(a: Path, b: Path) -> dict:
    def rows(path):
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    x, y = rows(a), rows(b)
    same = len(x) == len(y) and all(r["path"] == s["path"] and r["predicted"] == s["predicted"] for r, s in zip(x, y))
    worst = max((abs(float(r["confidence"] or 0) - float(s["confidence"] or 0)) for r, s in zip(x, y)), default=0.0)
    return {"same_paths_and_classes": same, "max_confidence_diff": worst}


def predict_bench(args) -> None:
    folder = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    listing = image_list(args.data, args.images, folder)
    contenders = [("imgcls predict", []), ("imgcls predict --ray", ["--ray"])]
    if args.scaling:
        contenders.append(("imgcls predict --ray --workers 1", ["--ray", "--workers", "1"]))
    reference = None
    for round_ in range(args.rounds):
        for name, extra in contenders:
            out = folder / f"{len(list(folder.iterdir()))}"
            row = {"benchmark": "ray_predict", "contender": name, "round": round_ + 1,
                   **run_predict(args.weights, listing, out, extra)}
            reference = reference or out / "predictions.csv"
            if "--ray" in extra:
                row |= same_csv(reference, out / "predictions.csv")
            print(json.dumps(row), flush=True)


class WaitingPredictor:
    """A stand-in for a model on a node of its own: each batch takes ``seconds`` of waiting, not of this machine's
    cores, so that several workers on 2 cores show how Ray Data's pipeline scales with them."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def predict_stream(self, paths: list[str]):
        from imgcls.deploy.predict import Prediction

        time.sleep(self.seconds)
        return [Prediction(path=p, label="a", confidence=1.0, class_index=0, topk=(("a", 1.0),)) for p in paths]


def simulate_bench(args) -> None:
    """ray_predict.ray_predictions, the pipeline predict --ray runs, with WaitingPredictor in each worker."""
    import functools

    import ray

    from imgcls.deploy.predict import Prediction
    from imgcls.deploy.ray_cluster import ray_session
    from imgcls.deploy.ray_predict import ray_predictions

    paths = [f"image_{i:05d}.jpg" for i in range(args.images)]
    ray.init(num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    with ray_session("local"):
        for workers in args.workers:
            started = time.perf_counter()
            found = list(ray_predictions(paths, len(paths), functools.partial(WaitingPredictor, args.batch_seconds),
                                         Prediction, batch_size=32, workers=workers, cpus_each=1.0))
            seconds = time.perf_counter() - started
            assert [p.path for p in found] == paths  # in order, none lost
            print(json.dumps({"benchmark": "ray_predict_simulated", "workers": workers, "images": len(paths),
                              "batch_seconds": args.batch_seconds, "seconds": round(seconds, 2),
                              "img_per_s": round(len(paths) / seconds, 1), "load_1min": round(load(), 2)}),
                  flush=True)
    ray.shutdown()


def replicas(url: str, asks: int = 24) -> set[int]:
    import httpx

    def one(_):
        try:
            return httpx.get(url + "/health", timeout=10).json()["worker"]
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    with ThreadPoolExecutor(6) as pool:
        return {pid for pid in pool.map(one, range(asks)) if pid is not None}


def soak(url: str, plan: list, kill_at: int | None, victim: int | None) -> dict:
    import httpx

    wrong, done, lock, local = [], [0], threading.Lock(), threading.local()

    def one(case):
        name, data, expected = case
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=120)
        try:
            status = local.client.post(url + "/predict", files={"files": (name, data, "application/octet-stream")}
                                       ).status_code
        except httpx.HTTPError as e:
            status = type(e).__name__
        with lock:
            if status != expected:
                wrong.append((name, expected, status, done[0]))
            done[0] += 1
            if kill_at is not None and done[0] == kill_at:
                os.kill(victim, signal.SIGKILL)

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, plan))
    seconds = time.perf_counter() - started
    return {"requests": len(plan), "wrong_statuses": len(wrong), "wrong": [list(map(str, w)) for w in wrong][:20],
            "seconds": round(seconds, 1), "requests_per_s": round(len(plan) / seconds, 1)}


def serve_bench(args) -> None:
    server = Server(args.weights, ["--ray", "--replicas", "2"])
    try:
        server.wait_ready(timeout=600)
        plan = stream_plan(args.requests, 0.1, args.photos)
        before = replicas(server.url)
        row = {"benchmark": "ray_serve", "replicas_seen": len(before), "load_1min": round(load(), 2)}
        print(json.dumps(row | {"soak": "plain"} | soak(server.url, plan, None, None)), flush=True)
        victim = min(before)
        row = row | {"soak": "one replica killed", "killed_pid": victim, "load_1min": round(load(), 2)}
        result = soak(server.url, plan, args.requests // 2, victim)
        deadline, seen = time.time() + 120, set()
        while time.time() < deadline and not seen - before:
            seen |= replicas(server.url, 6)
            time.sleep(1)
        print(json.dumps(row | result | {"replaced_by": sorted(seen - before)}), flush=True)
    finally:
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("predict")
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--scaling", action="store_true", help="also --ray --workers 1 (against the default 2)")
    p = sub.add_parser("simulate")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--workers", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2, 4, 8])
    p.add_argument("--batch-seconds", type=float, default=0.25, help="each batch of 32 takes this long")
    p = sub.add_parser("serve")
    p.add_argument("--weights", required=True)
    p.add_argument("--photos", required=True)
    p.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    {"predict": predict_bench, "simulate": simulate_bench, "serve": serve_bench}[args.what](args)


if __name__ == "__main__":
    main()
