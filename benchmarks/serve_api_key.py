"""The API key and /metrics of a real `imgcls serve` under load (issue 35, part 2).

    python benchmarks/serve_api_key.py WEIGHTS [--requests 1000] [--junk 0.1] [--photos DIR] [--rounds 2]
                                               [--workers N]

Starts `imgcls serve` in its own process on a free loopback port (benchmarks/serve_memory.py's Server), with the
key in IMGCLS_API_KEY or without one, and sends serve_memory's soak: ``--requests`` requests of one upload each,
8 at a time over kept connections, ``--junk`` of them junk (text, truncated, a decompression bomb, random bytes,
empty) with their expected 4xx. In rounds of A B B A (no key, key, key, no key) so that the shared cores' drift
falls on both sides. Targets:

1. keyless: the soak sent without a key to the keyed server: none answered with predictions (every status 401).
2. keyed soak: the soak with ``Authorization: Bearer KEY``: 0 wrong statuses, p50 no worse than without a key.
3. /metrics (scraped with the key, parsed with prometheus-client): ``imgcls_http_requests_total`` of /predict by
   status equals what was sent (warm-up, keyless and soak), ``imgcls_images_predicted_total`` the photos answered.

``--workers N`` compares the keyed soak on one worker with the keyed soak on ``--workers N`` instead (A B B A
again), /metrics then summing the N workers.

Prints one JSON line per soak and per check (benchmarks/common.py) and a short table.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import report  # noqa: E402
from benchmarks.serve_memory import Server, photo, stream, stream_plan  # noqa: E402


def start(weights: str, key: str | None, workers: int = 1) -> Server:
    """A server with ``key`` in its environment (not on its command line, where `ps` shows it), or none."""
    environment = {k: v for k, v in os.environ.items() if k != "IMGCLS_API_KEY"}
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environment | ({"IMGCLS_API_KEY": key} if key else {}))
    try:
        server = Server(weights, ["--workers", str(workers)])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    server.wait_ready()
    return server


def warm_up(server: Server, headers: dict) -> int:
    """One request of 8 photos, so the runtime's buffers exist before the timing; the images it sent."""
    import httpx

    files = [("files", (f"w{k}.jpg", photo(k, "JPEG"), "image/jpeg")) for k in range(8)]
    answer = httpx.post(server.url + "/predict", files=files, headers=headers, timeout=300)
    assert answer.status_code == 200, answer.text
    return len(files)


def keyless(server: Server, total: int, junk: float, photos: str | None) -> dict:
    """The soak's plan without a key, 8 in flight: statuses, and how many answers held predictions."""
    import httpx

    plan = stream_plan(total, junk, photos)
    statuses, answered, lock, local = Counter(), [0], threading.Lock(), threading.local()
    clients = []

    def one(case):
        name, data, _ = case
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=600)
            with lock:
                clients.append(local.client)
        response = local.client.post(server.url + "/predict", files={"files": (name, data, "application/octet-stream")})
        with lock:
            statuses[response.status_code] += 1
            answered[0] += "predictions" in response.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, plan))
    for client in clients:
        client.close()
    return {"requests": total, "statuses": dict(statuses), "answered_with_predictions": answered[0]}


def metrics_check(server: Server, headers: dict, sent: Counter, images: int) -> dict:
    """/metrics against what was sent: /predict requests by status, and images predicted."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    scrape = httpx.get(server.url + "/metrics", headers=headers, timeout=30)
    counted, predicted = Counter(), None
    for family in text_string_to_metric_families(scrape.text):
        for sample in family.samples:
            if sample.name == "imgcls_http_requests_total" and sample.labels["endpoint"] == "/predict":
                counted[int(sample.labels["status"])] += int(sample.value)
            elif sample.name == "imgcls_images_predicted_total":
                predicted = int(sample.value)
    return {"parsed": True, "predict_requests_sent": dict(sorted(sent.items())),
            "predict_requests_counted": dict(sorted(counted.items())), "images_sent": images,
            "images_counted": predicted, "match": counted == sent and predicted == images}


def soak(weights: str, key: str | None, workers: int, args) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    server = start(weights, key, workers)
    try:
        sent, images = Counter({200: 1}), warm_up(server, headers)
        if key:
            refused = keyless(server, args.requests, args.junk, args.photos)
            report("serve_api_keyless", **refused)
            sent.update(refused["statuses"])
        load_before = os.getloadavg()[0]
        result = stream(server, args.requests, args.junk, args.photos, headers=headers)
        plan = stream_plan(args.requests, args.junk, args.photos)
        sent.update(Counter(expected for _, _, expected in plan))
        images += sum(1 for _, _, expected in plan if expected == 200)
        check = metrics_check(server, headers, sent, images)
    finally:
        server.stop()
    result |= {"key": bool(key), "workers": workers,
               "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
               "metrics": check}
    report("serve_api_soak", **{k: v for k, v in result.items() if k != "rss_mb_every_100"})
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("weights")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--junk", type=float, default=0.1)
    parser.add_argument("--photos", help="send the photos under this folder instead of generated ones")
    parser.add_argument("--rounds", type=int, default=2, help="A B B A rounds: no key, key, key, no key (default 2)")
    parser.add_argument("--workers", type=int, help="compare 1 worker with N (both keyed) instead of key with none")
    args = parser.parse_args()

    key = secrets.token_urlsafe(32)
    a, b = ((key, 1), (key, args.workers)) if args.workers else ((None, 1), (key, 1))
    order = [a, b, b, a] * (args.rounds // 2) + ([a, b] if args.rounds % 2 else [])
    rows = [soak(args.weights, k, workers, args) for k, workers in order]
    print("key  workers  wrong  p50 ms  p95 ms  img/s  metrics match  load")
    for row in rows:
        print(f"{'yes' if row['key'] else 'no ':4} {row['workers']:7}  {row['wrong_status']:5}  "
              f"{row['latency_p50_ms']:6}  {row['latency_p95_ms']:6}  {row['images_per_second']:5}  "
              f"{row['metrics']['match']!s:13}  {row['load_average']}")


if __name__ == "__main__":
    main()
