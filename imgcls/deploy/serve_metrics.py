"""``GET /metrics`` of ``imgcls serve``: Prometheus metrics through prometheus-client.

Requests by endpoint and status, their latency, images answered, the images of each model call (the Batcher
merges requests in flight, so this is the batch size the model saw) and which model is served. With
``--workers`` each worker process writes its numbers to files in ``PROMETHEUS_MULTIPROC_DIR`` and whichever worker
answers ``/metrics`` sums them all (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
import time

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A fixed set keeps the endpoint label's values few, whatever paths clients make up.
ENDPOINTS = frozenset({"/", "/health", "/model", "/predict", "/metrics", "/docs", "/redoc", "/openapi.json"})
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def endpoint_label(path: str) -> str:
    return path if path in ENDPOINTS else "other"


class ServeMetrics:
    """The metrics of one server process, in a registry of its own (several apps may live in one process)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        # prometheus-client picks file-backed values when this is set before its first metric is made
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))
        self.registry = CollectorRegistry()
        own = {"registry": self.registry}
        self.requests = Counter("imgcls_http_requests", "HTTP requests answered, by endpoint and status",
                                ["endpoint", "status"], **own)
        self.latency = Histogram("imgcls_http_request_duration_seconds",
                                 "Time from a request's arrival to the end of its answer", ["endpoint"], **own)
        self.images = Counter("imgcls_images_predicted", "Images answered with a prediction", **own)
        self.batch = Histogram("imgcls_model_batch_images", "Images per model call (requests in flight are merged)",
                               buckets=BATCH_BUCKETS, **own)
        self.model = Gauge("imgcls_model_info", "The served model (value 1)",
                           ["model_name", "weights", "runtime", "imgcls_version"], multiprocess_mode="max", **own)

    def describe_model(self, model_name: str, weights: str, runtime: str, version: str) -> None:
        self.model.labels(model_name, weights, runtime, version).set(1)

    def exposition(self) -> tuple[bytes, str]:
        """The text format of every metric (of all worker processes in multiprocess mode) and its content type."""
        from prometheus_client import (
            CONTENT_TYPE_LATEST,
            CollectorRegistry,
            generate_latest,
        )

        registry = self.registry
        if self.multiprocess:
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST


class CountRequests:
    """ASGI middleware counting every HTTP request by endpoint and status, and timing it.

    It wraps the API key check, so refused requests are counted too. An exception that escapes the app is
    counted as the 500 that Starlette's outermost middleware turns it into.
    """

    def __init__(self, app, metrics: ServeMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status, start = [500], time.perf_counter()

        async def watched_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            endpoint = endpoint_label(scope["path"])
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
