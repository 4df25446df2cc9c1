"""imgcls serve on a network: the API key, /metrics (Prometheus), the open-host warning and --workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from conftest import REPO  # noqa: E402
from imagegen import CLASSES, shape_image  # noqa: E402
from test_serve import _free_port, png_bytes  # noqa: E402

KEY = "team-key-0123456789abcdef"


@pytest.fixture(scope="module")
def weights(trained_run) -> Path:
    return trained_run / "weights" / "best.pt"


@pytest.fixture(scope="module")
def keyed(weights):
    from fastapi.testclient import TestClient

    from imgcls.deploy.serve import create_app

    return TestClient(create_app(weights, topk=2, max_upload_mb=1, api_key=KEY))


@pytest.fixture
def never_serving(monkeypatch):
    """uvicorn.run fails the test instead of serving for ever, for commands that must be refused first."""
    import uvicorn

    def refuse(*args, **kwargs):
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn, "run", refuse)


def image(name: str = "a.png", kind: str = "circle", seed: int = 5):
    return ("files", (name, png_bytes(kind, seed=seed), "image/png"))


def metric_samples(text: str) -> dict:
    """{(sample name, sorted labels): value} of a /metrics answer, read by prometheus-client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def requests_counted(samples: dict) -> dict:
    """{(endpoint, status): count} from imgcls_http_requests_total."""
    return {(dict(labels)["endpoint"], dict(labels)["status"]): value
            for (name, labels), value in samples.items() if name == "imgcls_http_requests_total"}


# ---------------------------------------------------------------------------------------------------------
# The API key


def test_requests_without_the_key_get_401_and_no_predictions(keyed):
    for headers, words in (({}, "this server needs an API key"), ({"X-API-Key": "x" * 24}, "wrong API key"),
                           ({"Authorization": "Bearer " + KEY[:-1] + "X"}, "wrong API key"),
                           ({"Authorization": KEY}, "this server needs an API key")):  # no "Bearer": not sent
        response = keyed.post("/predict", files=[image()], headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"] == "application/json"
        assert response.headers["www-authenticate"].startswith('Bearer realm="imgcls"')
        detail = response.json()["detail"]
        assert words in detail and "\n" not in detail and "predictions" not in response.json()
        assert "Authorization: Bearer KEY" in detail and "X-API-Key: KEY" in detail and KEY not in detail
    for path in ("/model", "/metrics", "/docs", "/redoc", "/openapi.json", "/no/such/route"):
        assert keyed.get(path).status_code == 401, path


def test_the_key_in_either_header_gets_predictions(keyed):
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}, {"authorization": f"bearer {KEY}"}):
        response = keyed.post("/predict", files=[image()], headers=headers)
        assert response.status_code == 200 and response.json()["predictions"][0]["predicted"] == "circle"
    assert keyed.get("/model", headers={"X-API-Key": KEY}).json()["model_name"] == "simple_cnn"


def test_health_and_the_page_need_no_key(keyed):
    health = keyed.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok", "model_name": "simple_cnn",
                                                           "worker": os.getpid()}
    page = keyed.get("/")
    assert page.status_code == 200 and 'id="key-form"' in page.text


def test_a_keyless_upload_is_refused_before_its_body_is_read(keyed):
    """401, not 413: without the key a client learns nothing about the server's limits, and sends for nothing."""
    big = [("files", ("big.png", b"\x89PNG" + os.urandom(1_100_000), "image/png"))]
    assert keyed.post("/predict", files=big).status_code == 401
    assert keyed.post("/predict", files=big, headers={"X-API-Key": KEY}).status_code == 413


def test_the_schema_names_both_ways_to_send_the_key(keyed):
    schema = keyed.get("/openapi.json", headers={"X-API-Key": KEY}).json()
    assert schema["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    assert schema["paths"]["/health"]["get"]["security"] == []
    assert keyed.get("/docs", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_keys_are_compared_in_constant_time(keyed, monkeypatch):
    import hmac

    from imgcls.deploy import api_key

    compared, real = [], hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api_key.hmac, "compare_digest", spy)
    assert keyed.get("/model", headers={"X-API-Key": KEY}).status_code == 200
    assert keyed.get("/model", headers={"X-API-Key": "y" * 30}).status_code == 401
    assert compared == [(KEY.encode(), KEY.encode()), (b"y" * 30, KEY.encode())]


def test_the_environment_gives_the_key_and_the_flag_wins(weights, monkeypatch):
    from fastapi.testclient import TestClient

    from imgcls.deploy.serve import create_app

    other = "another-key-abcdefghijkl"
    monkeypatch.setenv("IMGCLS_API_KEY", KEY)
    from_environment = TestClient(create_app(weights))
    assert from_environment.get("/model").status_code == 401
    assert from_environment.get("/model", headers={"X-API-Key": KEY}).status_code == 200
    flag = TestClient(create_app(weights, api_key=other))
    assert flag.get("/model", headers={"X-API-Key": KEY}).status_code == 401
    assert flag.get("/model", headers={"X-API-Key": other}).status_code == 200


@pytest.mark.parametrize("key, message", [
    ("", "--api-key is empty: give a key of 16 or more characters"),
    ("short-key", "--api-key has 9 characters: use 16 or more, a short key can be guessed"),
    ("sixteen chars with spaces", "--api-key: the key must be printable ASCII without spaces"),
    ("ключ-ключ-ключ-ключ", "--api-key: the key must be printable ASCII without spaces"),
])
def test_unusable_keys_are_refused_in_one_line(key, message, weights, cli, never_serving):
    from imgcls.deploy.serve import create_app
    from imgcls.errors import ImgclsError

    with pytest.raises(ImgclsError) as refused:
        create_app(weights, api_key=key)
    assert str(refused.value).startswith(message) and (not key or key not in str(refused.value))
    code, _, err = cli("serve", "--weights", weights, "--api-key", key)
    assert code == 2 and err.strip().splitlines() == [f"imgcls: error: {refused.value}"]


def test_an_empty_environment_key_is_refused_by_name(weights, cli, monkeypatch, never_serving):
    monkeypatch.setenv("IMGCLS_API_KEY", "")
    code, _, err = cli("serve", "--weights", weights)
    assert code == 2 and err.strip().splitlines() == [
        ("imgcls: error: IMGCLS_API_KEY is empty: give a key of 16 or more characters "
         "(python -c 'import secrets; print(secrets.token_urlsafe(32))' makes one)")]


def test_an_open_host_without_a_key_warns_in_one_line_that_says_how(weights, cli, monkeypatch):
    import uvicorn

    ran = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **settings: ran.append(settings))
    port = _free_port()
    code, _, err = cli("serve", "--weights", weights, "--host", "0.0.0.0", "--port", port)
    warnings = [line for line in err.splitlines() if "WARNING" in line]
    assert code == 0 and ran and warnings == [
        ("WARNING: --host 0.0.0.0 opens the model to other computers with no API key; add one with --api-key KEY or "
         "IMGCLS_API_KEY=KEY (16 or more characters)")]
    code, _, err = cli("serve", "--weights", weights, "--host", "0.0.0.0", "--port", port, "--api-key", KEY)
    assert code == 0 and "WARNING" not in err and "every request but /health needs the API key" in err
    code, _, err = cli("serve", "--weights", weights, "--port", port)  # loopback: no warning
    assert code == 0 and "WARNING" not in err and len(ran) == 3


def test_workers_below_one_are_refused(weights, cli, never_serving):
    code, _, err = cli("serve", "--weights", weights, "--workers", "0")
    assert code == 2 and err.strip() == "imgcls: error: --workers 0: must be 1 or more"


# ---------------------------------------------------------------------------------------------------------
# /metrics


def test_metrics_count_the_requests_sent(weights):
    """What the test sent, by endpoint and status, is what /metrics counts; images and model calls too."""
    from fastapi.testclient import TestClient

    from imgcls.deploy.serve import create_app

    client = TestClient(create_app(weights, topk=2, api_key=KEY))
    key = {"X-API-Key": KEY}
    for files in ([image()], [image("b.png", "square", 6), image("c.png", "triangle", 7)], [image(seed=8)]):
        assert client.post("/predict", files=files, headers=key).status_code == 200
    assert client.post("/predict", files=[("files", ("a.txt", b"text", "text/plain"))], headers=key).status_code == 415
    assert client.post("/predict", headers=key).status_code == 422
    assert client.post("/predict", files=[image()]).status_code == 401
    for _ in range(2):
        assert client.get("/health").status_code == 200
    assert client.get("/metrics").status_code == 401

    scrape = client.get("/metrics", headers=key)
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    samples = metric_samples(scrape.text)
    assert requests_counted(samples) == {("/predict", "200"): 3, ("/predict", "415"): 1, ("/predict", "422"): 1,
                                         ("/predict", "401"): 1, ("/health", "200"): 2, ("/metrics", "401"): 1}
    assert samples[("imgcls_images_predicted_total", ())] == 4
    assert samples[("imgcls_model_batch_images_count", ())] == 3  # one model call per request, sent one by one
    assert samples[("imgcls_model_batch_images_sum", ())] == 4
    assert samples[("imgcls_model_batch_images_bucket", (("le", "2.0"),))] == 3
    assert samples[("imgcls_http_request_duration_seconds_count", (("endpoint", "/predict"),))] == 6
    [(labels, value)] = [(dict(k[1]), v) for k, v in samples.items() if k[0] == "imgcls_model_info"]
    assert value == 1 and labels["model_name"] == "simple_cnn" and labels["weights"] == "best.pt"
    assert set(labels) == {"model_name", "weights", "runtime", "imgcls_version"}


def test_metrics_are_open_without_a_key_and_count_merged_batches(weights):
    """Concurrent requests are merged into fewer model calls: the batch sizes add up to the images sent."""
    from fastapi.testclient import TestClient

    from imgcls.deploy.serve import create_app

    client = TestClient(create_app(weights))
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda i: client.post("/predict", files=[image(f"{i}.png", seed=i)]), range(16)))
    assert all(a.status_code == 200 for a in answers)
    samples = metric_samples(client.get("/metrics").text)
    assert samples[("imgcls_model_batch_images_sum", ())] == 16 == samples[("imgcls_images_predicted_total", ())]
    assert 1 <= samples[("imgcls_model_batch_images_count", ())] <= 16
    assert requests_counted(samples) == {("/predict", "200"): 16}


# ---------------------------------------------------------------------------------------------------------
# --workers: a real `imgcls serve --workers 2` on a free loopback port


def _start(args: list[str], tmp: Path) -> tuple[subprocess.Popen, Path]:
    log_path = tmp / "serve.log"
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", TMPDIR=str(tmp))
    with open(log_path, "w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "imgcls", "serve", *args, "--device", "cpu"],
                                   stdout=log_file, stderr=subprocess.STDOUT, env=env)
    return process, log_path


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_two_workers_serve_one_port_and_metrics_sum_both(weights, tmp_path):
    import httpx

    port = _free_port()
    process, log_path = _start(["--weights", str(weights), "--port", str(port), "--workers", "2",
                                "--api-key", KEY], tmp_path)
    url, key = f"http://127.0.0.1:{port}", {"X-API-Key": KEY}
    try:
        def health(_):
            try:
                return httpx.get(url + "/health", timeout=30)
            except httpx.HTTPError:  # not listening yet; a refused request is never counted by the server
                return None

        deadline, workers, health_answers = time.time() + 60, set(), 0
        while len(workers) < 2:  # each /health on a new connection; both workers accept on the one socket
            assert process.poll() is None and time.time() < deadline, log_path.read_text()
            with ThreadPoolExecutor(max_workers=4) as pool:
                answers = [a for a in pool.map(health, range(4)) if a is not None]
            if not answers:
                time.sleep(0.3)
            health_answers += len(answers)  # each answer, also those beside a refused one
            workers |= {a.json()["worker"] for a in answers}
        [folder] = list(tmp_path.glob("imgcls-serve-*"))
        assert list((folder / "metrics").glob("*.db"))
        with ThreadPoolExecutor(max_workers=4) as pool:
            predictions = list(pool.map(lambda i: httpx.post(url + "/predict", headers=key, timeout=30,
                                                             files=[image(f"{i}.png", CLASSES[i % 3], i)]), range(8)))
        assert all(p.status_code == 200 for p in predictions)
        assert httpx.post(url + "/predict", files=[image()], timeout=30).status_code == 401
        samples = metric_samples(httpx.get(url + "/metrics", headers=key, timeout=10).text)
        counted = requests_counted(samples)
        assert counted[("/health", "200")] == health_answers  # both workers' answers, whichever one was scraped
        assert counted[("/predict", "200")] == 8 and counted[("/predict", "401")] == 1
        assert samples[("imgcls_images_predicted_total", ())] == 8
        assert [v for k, v in samples.items() if k[0] == "imgcls_model_info"] == [1.0]
    finally:
        _stop(process)
    assert process.returncode == 0, log_path.read_text()
    assert list(tmp_path.glob("imgcls-serve-*")) == []  # the metrics folder goes with the server
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_workers_that_cannot_load_the_model_stop_the_server_in_one_line(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    process, log_path = _start(["--weights", str(broken), "--port", str(_free_port()), "--workers", "2"], tmp_path)
    try:
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            _stop(process)
    errors = [line for line in log_path.read_text().splitlines() if line.startswith("imgcls: error:")]
    assert process.returncode == 2 and len(errors) == 1 and "broken.onnx" in errors[0], log_path.read_text()
    assert list(tmp_path.glob("imgcls-serve-*")) == []


# ---------------------------------------------------------------------------------------------------------
# The page asks for the key


def test_the_page_asks_for_the_key_once_and_keeps_it(weights, browser, tmp_path):
    import threading

    import uvicorn
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from imgcls.deploy.serve import create_app

    shape_image("circle", size=160, seed=41).save(tmp_path / "circle.png")
    server = uvicorn.Server(uvicorn.Config(create_app(weights, api_key=KEY), host="127.0.0.1", port=0,
                                           log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        WebDriverWait(None, 60, poll_frequency=0.1).until(lambda _: server.started)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/"
        browser.get(url)
        wait = WebDriverWait(browser, 30)
        wait.until(ec.visibility_of_element_located((By.ID, "key-form")))
        assert browser.find_element(By.ID, "key-message").text == "This server needs an API key."
        browser.find_element(By.ID, "key-input").send_keys("wrong-key-wrong-key-wrong")
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "key-message"), "refused"))
        assert browser.find_element(By.ID, "key-form").is_displayed()
        browser.find_element(By.ID, "key-input").send_keys(KEY)
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "model-name"), "simple_cnn"))
        assert not browser.find_element(By.ID, "key-form").is_displayed()

        browser.find_element(By.ID, "file-input").send_keys(str(tmp_path / "circle.png"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".predicted-label"))
        assert browser.find_element(By.CSS_SELECTOR, ".predicted-label").text == "circle"

        browser.refresh()  # the tab keeps the key: no second question
        wait.until(ec.text_to_be_present_in_element((By.ID, "model-name"), "simple_cnn"))
        assert not browser.find_element(By.ID, "key-form").is_displayed()
        assert browser.find_element(By.ID, "key-note").is_displayed()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
