"""Peak and steady memory, and latency, of a real `imgcls serve` under hostile and heavy uploads.

    python benchmarks/serve_memory.py WEIGHTS [--side 8900] [--requests 8] [--files 16] [--stream 1000]
                                              [--photos DIR]

Starts `imgcls serve` in its own process (uvicorn on a free loopback port) and watches its resident memory
from outside (/proc/PID/status, sampled every 20 ms, plus the kernel's peak after a reset). Then:

1. burst: ``--requests`` concurrent requests, each of ``--files`` copies of one ``--side`` x ``--side`` grey PNG
   (about 79 megapixels, highly compressible: about 0.1 MB on the wire, 79 MB once decoded). Target: peak
   RSS under 1.5 GB, every request answered 200.
2. stream: ``--stream`` requests, 8 at a time (8 senders, each over its own keep-alive connection, as browsers and
   HTTP libraries keep them; the senders' CPU time is reported, since they share the machine; ``--new-connection``:
   ``httpx.post`` for every request; ``--curl``: curl sends them, a new connection per request, at next to no
   CPU), of ordinary photos (generated 1600x1200 JPEGs and PNGs), 10% of them junk (text, truncated images, a decompression bomb, random bytes). Target: every status as expected
   (200, or the 4xx for that junk) and flat memory (RSS after the last request within 64 MB of the RSS after
   the first 100). Each answered photo's latency (request sent to answer read, one image per request) is
   recorded: p50 and p95. ``--photos DIR`` sends real photos (every image file under DIR, in turn) instead
   of the generated ones; ``--requests 0`` skips the burst.

Prints one JSON line per phase (see benchmarks/common.py) and a short table.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import report  # noqa: E402

MB = 1024 * 1024


def grey_png(side: int) -> bytes:
    """A large, highly compressible picture: grey with a darker disc (a scan, a screenshot, a render)."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (side, side), 200)
    ImageDraw.Draw(image).ellipse([side // 4, side // 4, 3 * side // 4, 3 * side // 4], fill=60)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def photo(seed: int, fmt: str) -> bytes:
    """A photo-sized image with texture (noise over gradients), as JPEG or PNG."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:1200, 0:1600]
    base = np.stack([x / 1600 * 255, y / 1200 * 255, (x + y) / 2800 * 255], axis=-1)
    pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def bomb_png() -> bytes:
    """A small valid PNG whose header claims 30,000 x 30,000 pixels."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "white").save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", 30_000, 30_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def junk_cases(good_png: bytes) -> list[tuple[str, bytes, int]]:
    """(file name, content, the status imgcls must answer)."""
    return [("notes.txt", b"these are my notes, not a picture\n" * 20, 415),
            ("cut.png", good_png[: len(good_png) // 3], 422),
            ("bomb.png", bomb_png(), 413),
            ("noise.jpg", random.Random(7).randbytes(50_000), 415),
            ("empty.jpg", b"", 422)]


class Server:
    """`imgcls serve` in a child process, with its memory read from /proc."""

    def __init__(self, weights: str, extra: list[str]):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen([sys.executable, "-m", "imgcls", "serve", "--weights", weights, "--port",
                                         str(self.port), "--device", "cpu", *extra],
                                        stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()

    def wait_ready(self, timeout: float = 300) -> None:
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"imgcls serve exited:\n{Path(self.log.name).read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        sys.exit("imgcls serve did not start in time")

    def status(self, key: str) -> int:
        """VmRSS or VmHWM of the server, in bytes."""
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(key)

    def reset_peak(self) -> bool:
        """Start the kernel's peak-RSS count (VmHWM) afresh; False where the kernel does not allow it."""
        try:
            with open(f"/proc/{self.process.pid}/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def start_sampling(self) -> None:
        def sample():
            while not self._stop.is_set():
                try:
                    self.samples.append((time.time(), self.status("VmRSS")))
                except (OSError, KeyError):
                    return
                time.sleep(0.02)

        threading.Thread(target=sample, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def burst(server: Server, big: bytes, requests: int, files: int) -> dict:
    import httpx

    server.reset_peak()
    start = time.time()
    before = server.status("VmRSS")

    def one(i: int):
        upload = [("files", (f"grey{i}-{k}.png", big, "image/png")) for k in range(files)]
        return httpx.post(server.url + "/predict", files=upload, timeout=1800)

    with ThreadPoolExecutor(max_workers=requests) as pool:
        answers = list(pool.map(one, range(requests)))
    seconds = time.time() - start
    sampled_peak = max(rss for t, rss in server.samples if t >= start)
    time.sleep(2)
    return {"requests": requests, "images_per_request": files, "image_bytes": len(big),
            "statuses": sorted({a.status_code for a in answers}), "seconds": round(seconds, 1),
            "rss_before_mb": round(before / MB), "peak_rss_mb": round(max(server.status("VmHWM"), sampled_peak) / MB),
            "rss_after_mb": round(server.status("VmRSS") / MB)}


def real_photos(folder: str) -> list[tuple[str, bytes, int]]:
    """Every image file under ``folder``, as (name, content, 200)."""
    suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in suffixes)
    if not paths:
        sys.exit(f"--photos {folder}: no image files found")
    return [(p.name, p.read_bytes(), 200) for p in paths]


def stream_plan(total: int, junk_share: float, photos: str | None) -> list[tuple[str, bytes, int]]:
    """The requests in order: (file name, content, expected status); the same plan for every client."""
    if photos:
        goods = real_photos(photos)
        pick = iter(goods * (total // len(goods) + 1))
    else:
        goods = [("photo.jpg", photo(s, "JPEG"), 200) for s in range(3)] + [("photo.png", photo(9, "PNG"), 200)]
        pick = None
    junk = junk_cases(photo(9, "PNG"))
    rng = random.Random(0)
    return [rng.choice(junk) if rng.random() < junk_share else (next(pick) if pick else rng.choice(goods))
            for _ in range(total)]


def stream(server: Server, total: int, junk_share: float, photos: str | None = None,
           new_connection: bool = False, headers: dict | None = None) -> dict:
    import httpx

    plan = stream_plan(total, junk_share, photos)
    wrong, rss_at, latencies = [], {}, []
    done = [0]
    lock = threading.Lock()

    local = threading.local()

    def one(case):
        name, data, expected = case
        if not hasattr(local, "client"):  # one keep-alive connection per sender, as a browser or an SDK keeps
            local.client = httpx.Client(timeout=600)
            with lock:
                clients.append(local.client)
        sent = time.perf_counter()
        post = functools.partial(httpx.post, timeout=600) if new_connection else local.client.post
        response = post(server.url + "/predict", files={"files": (name, data, "application/octet-stream")},
                        headers=headers)
        seconds = time.perf_counter() - sent
        ok = response.status_code == expected and response.headers.get("content-type") == "application/json"
        with lock:
            if ok and expected == 200:
                latencies.append(seconds)
            if not ok:
                wrong.append((name, expected, response.status_code, response.text[:200]))
            done[0] += 1
            if done[0] % 100 == 0:
                rss_at[done[0]] = round(server.status("VmRSS") / MB)

    clients = []
    start, client_cpu = time.time(), time.process_time()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, plan))
    seconds, client_cpu = time.time() - start, time.process_time() - client_cpu
    for client in clients:
        client.close()
    time.sleep(2)
    first, last = rss_at[min(rss_at)], round(server.status("VmRSS") / MB)
    return _stream_summary(plan, wrong, latencies, seconds, client_cpu, photos) | {
        "rss_mb_every_100": rss_at, "rss_after_mb": last, "growth_after_first_100_mb": last - first}


def stream_with_curl(server: Server, total: int, junk_share: float, photos: str | None = None) -> dict:
    """The same plan sent by curl (C, one process, 8 transfers at a time), each request on a new connection
    ("Connection: close"), so that the client's own HTTP set-up costs next to nothing on the shared cores."""
    plan = stream_plan(total, junk_share, photos)
    with tempfile.TemporaryDirectory() as tmp:
        bodies: dict[int, Path] = {}
        lines = []
        for name, data, _ in plan:
            body = bodies.setdefault(id(data), Path(tmp) / f"body{len(bodies)}")
            if not body.exists():
                body.write_bytes(data)
            lines += [f'url = "{server.url}/predict"', 'header = "Connection: close"', 'output = "/dev/null"',
                      f'form = "files=@{body};filename={name};type=application/octet-stream"',
                      'write-out = "%{urlnum} %{http_code} %{time_total} %{content_type}\\n"', "next"]
        config = Path(tmp) / "requests.curl"
        config.write_text("\n".join(lines[:-1]) + "\n")
        start = time.time()
        done = subprocess.run(["curl", "--silent", "--parallel", "--parallel-max", "8", "--config", str(config)],
                              capture_output=True, text=True, check=True)
        seconds = time.time() - start
    wrong, latencies = [], []
    for line in done.stdout.splitlines():
        index, status, took, content_type = (line.split(maxsplit=3) + [""])[:4]
        name, _, expected = plan[int(index)]
        if int(status) == expected and content_type.startswith("application/json"):
            if expected == 200:
                latencies.append(float(took))
        else:
            wrong.append((name, expected, int(status), content_type))
    tenth = start + seconds / 10
    first = next(rss for t, rss in server.samples if t >= tenth)
    last = server.status("VmRSS")
    return _stream_summary(plan, wrong, latencies, seconds, None, photos) | {
        "client": "curl, a new connection per request", "answers": len(done.stdout.splitlines()),
        "rss_after_mb": round(last / MB), "growth_after_first_tenth_mb": round((last - first) / MB)}


def _stream_summary(plan, wrong, latencies, seconds, client_cpu, photos) -> dict:
    latencies = sorted(latencies)
    p50, p95 = (latencies[int(q * (len(latencies) - 1))] * 1000 if latencies else None for q in (0.5, 0.95))
    return {"requests": len(plan), "junk": sum(1 for c in plan if c[2] != 200), "wrong_status": len(wrong),
            "photos": photos or "generated 1600x1200", "latency_p50_ms": p50 and round(p50),
            "latency_p95_ms": p95 and round(p95), "images_per_second": round(len(latencies) / seconds, 1),
            "client_cpu_seconds": client_cpu and round(client_cpu, 1), "examples_of_wrong": wrong[:3],
            "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("weights")
    parser.add_argument("--side", type=int, default=8900)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--stream", type=int, default=1000)
    parser.add_argument("--junk", type=float, default=0.1)
    parser.add_argument("--photos", help="send the photos under this folder instead of generated ones")
    parser.add_argument("--new-connection", action="store_true",
                        help="open a new HTTP connection for every request (httpx.post) instead of keeping one per sender")
    parser.add_argument("--curl", action="store_true",
                        help="send the stream with curl, a new connection per request, instead of Python senders")
    parser.add_argument("--serve-args", default="", help="extra `imgcls serve` flags, e.g. '--max-pixels 50000000'")
    args = parser.parse_args()

    big = grey_png(args.side)
    server = Server(args.weights, args.serve_args.split())
    try:
        server.wait_ready()
        import httpx

        # Warm-up with a full request of ordinary photos, so that the runtime's buffers for the largest batch
        # already exist: what the burst adds on top of that is the cost of the large uploads.
        warm = httpx.post(server.url + "/predict", timeout=300,
                          files=[("files", (f"w{k}.jpg", photo(k, "JPEG"), "image/jpeg")) for k in range(args.files)])
        assert warm.status_code == 200, warm.text
        server.start_sampling()
        idle = round(server.status("VmRSS") / MB)
        first = burst(server, big, args.requests, args.files) if args.requests else {}
        if first:
            report("serve_memory_burst", idle_rss_mb=idle, **first)
        send = stream_with_curl if args.curl else functools.partial(
            stream, new_connection=args.new_connection)
        second = send(server, args.stream, args.junk, args.photos) if args.stream else {}
        if second:
            report("serve_memory_stream", **second)
    finally:
        server.stop()
    print(f"idle after warm-up: {idle} MB RSS")
    if first:
        print(f"burst: {first['requests']} x {first['images_per_request']} grey {args.side}x{args.side} PNGs "
              f"({first['image_bytes'] / 1e3:.0f} KB each): statuses {first['statuses']}, peak RSS {first['peak_rss_mb']} MB, "
              f"after {first['rss_after_mb']} MB, {first['seconds']} s")
    if second:
        print(f"stream: {second['requests']} requests ({second['junk']} junk), {second['wrong_status']} wrong status, "
              f"RSS after {second['rss_after_mb']} MB, {second['seconds']} s; latency p50 "
              f"{second['latency_p50_ms']} ms, p95 {second['latency_p95_ms']} ms")


if __name__ == "__main__":
    main()
