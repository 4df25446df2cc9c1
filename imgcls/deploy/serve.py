"""``imgcls serve``: a local web page and REST API for a trained model (FastAPI under uvicorn).

Routes: ``GET /`` (the page), ``POST /predict`` (multipart field ``files``, one or more images),
``GET /model``, ``GET /health``, ``GET /metrics`` (Prometheus) and the OpenAPI docs at ``/docs`` and ``/redoc``
(served from the fastapi-offline package's copy of Swagger UI and ReDoc when it is installed, so they work offline).
Every bad request gets a 4xx JSON ``{"detail": "one line"}`` and the server keeps serving. With an API key
(``api_key.py``) every route but ``/health`` and the page needs it. ``--workers N`` runs N processes, each with its
own model, on one port.
"""

# No `from __future__ import annotations` here: FastAPI reads the route annotations at runtime, and the
# types they name are imported inside the functions that build the app, so importing imgcls never imports the web stack.

import logging
import os
import socket
import threading
from importlib import resources
from pathlib import Path

from ..data.images import MAX_IMAGE_PIXELS, ImageReadError
from ..errors import ImgclsError

log = logging.getLogger("imgcls")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _require_web_stack():
    from importlib.util import find_spec

    # python-multipart installs as `python_multipart` (new) or `multipart` (old); FastAPI needs it for uploads
    missing = [name for name, modules in (("fastapi", ["fastapi"]), ("uvicorn", ["uvicorn"]),
                                          ("python-multipart", ["python_multipart", "multipart"]),
                                          ("prometheus-client", ["prometheus_client"]))
               if not any(find_spec(m) for m in modules)]
    if missing:
        raise ImgclsError(f"imgcls serve needs {', '.join(missing)}: pip install 'imgcls[serve]'")


def app_class():
    """FastAPIOffline when the fastapi-offline package is installed, else plain FastAPI.

    FastAPI's own /docs and /redoc pages load Swagger UI and ReDoc from a CDN, so they are blank on an offline
    machine; FastAPIOffline is a FastAPI app whose docs pages load the same files from the package itself.
    """
    from importlib.util import find_spec

    if find_spec("fastapi_offline") is None:
        from fastapi import FastAPI

        return FastAPI
    from fastapi_offline import FastAPIOffline

    return FastAPIOffline


def status_for(reason: str) -> int:
    """The HTTP status for an image that cannot be used, from images.load_image's reason."""
    if reason.startswith("not an image"):
        return 415  # Unsupported Media Type
    if reason.startswith("decompression bomb"):
        return 413  # Content Too Large: too many pixels
    return 422      # corrupt, truncated, empty


class BodySizeLimit:
    """ASGI middleware refusing request bodies over ``max_bytes`` with 413, before or while they arrive.

    A declared Content-Length is refused without reading; a chunked body is counted as it streams, so
    an endless upload never fills the disk or memory.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return f"upload too large: the limit is {self.max_bytes / 1e6:g} MB per request (--max-upload-mb)"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from fastapi import HTTPException
        from fastapi.responses import JSONResponse

        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await JSONResponse({"detail": self._message()}, status_code=413)(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPExceptions met while parsing a body, so this becomes the 413 reply
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counted_receive, send)


def _model_card(predictor, max_upload_mb: float, max_files: int) -> dict:
    model, card = predictor.model, predictor.model.card
    return {"model_name": card.model_name, "runtime": model.runtime, "weights": model.path.name,
            "class_names": list(card.class_names), "num_classes": len(card.class_names),
            "preprocess": card.preprocess, "temperature": card.temperature, "metrics": card.metrics,
            "multi_label": card.multi_label, "thresholds": list(card.thresholds) if card.multi_label else None,
            "rejection": {"on": predictor.rejecting, "score": (model.usable_rejection or {}).get("score"),
                          "threshold": predictor.threshold, "calibrated": bool(card.rejection)},
            "limits": {"max_upload_mb": max_upload_mb, "max_files": max_files, "topk": predictor.topk,
                       "max_pixels": predictor.decode.max_pixels}}


def decode_slot_count() -> int:
    """Images decoded at once, server-wide: one per core (decoding is CPU-bound), 2 to 4.

    Each decode briefly holds one full-size image (at most --max-pixels), so this bounds the memory a burst of
    uploads can take, however the images are spread over requests.
    """
    from ..data.cores import available_cpus

    return max(2, min(4, available_cpus()))


async def _json_server_error(request, exc):
    """Anything unexpected is still one line of JSON (the traceback goes to the server's log)."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"detail": f"internal server error ({type(exc).__name__}); the server keeps serving"},
                        status_code=500)


async def _one_line_validation_error(request, exc):
    """FastAPI's validation errors as one line that says how to send images."""
    from fastapi.responses import JSONResponse

    errors = exc.errors()
    missing = [str(e["loc"][-1]) for e in errors if e.get("type") == "missing"]
    if missing:
        message = (f"missing form field {missing[0]!r}: send images as multipart/form-data, "
                   "each in a field named 'files'")
    elif any(e["loc"][:2] == ("body", "files") for e in errors):
        message = "form field 'files' must hold uploaded files (with a filename), not text"
    else:
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": message}, status_code=422)


def check_limits(max_upload_mb: float, max_files: int) -> None:
    if not max_upload_mb > 0:
        raise ImgclsError(f"--max-upload-mb {max_upload_mb:g}: must be above 0")
    if max_files < 1:
        raise ImgclsError(f"--max-files {max_files}: must be 1 or more")


def create_app(weights, *, max_upload_mb: float = 20, max_files: int = 16, topk: int = 5, device: str = "auto",
               runtime: str = "auto", max_pixels: int = MAX_IMAGE_PIXELS, reject: bool | float = False,
               api_key: str | None = None):
    """The FastAPI application for a .pt checkpoint or an .onnx export (testable with TestClient).

    ``api_key`` (else ``$IMGCLS_API_KEY``; none when neither is set) is required by every route but ``/health`` and
    the page, as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.
    """
    _require_web_stack()
    from fastapi.exceptions import RequestValidationError

    from ..version import __version__
    from .api_key import RequireApiKey, declare_api_key, resolve_api_key
    from .predict import Predictor
    from .serve_metrics import CountRequests, ServeMetrics

    key = resolve_api_key(api_key)
    check_limits(max_upload_mb, max_files)
    predictor = Predictor(weights, device=device, topk=topk, runtime=runtime, max_pixels=max_pixels, reject=reject)
    card = predictor.model.card
    metrics = ServeMetrics()
    metrics.describe_model(card.model_name, predictor.model.path.name, predictor.runtime, __version__)
    predictor.watch_batches(metrics.batch.observe)

    app = app_class()(title="imgcls", version=__version__,
                      description=f"Image classification with {card.model_name} ({len(card.class_names)} classes).",
                      # null turns off Swagger UI's badge, which would fetch an image from validator.swagger.io
                      swagger_ui_parameters={"validatorUrl": None})
    app.state.predictor = predictor
    app.state.metrics = metrics
    # the last added runs first: count every request, then check its key, then its size
    app.add_middleware(BodySizeLimit, max_bytes=int(max_upload_mb * 1e6))
    if key is not None:
        app.add_middleware(RequireApiKey, key=key)
        declare_api_key(app)
    app.add_middleware(CountRequests, metrics=metrics)

    app.add_exception_handler(RequestValidationError, _one_line_validation_error)
    app.add_exception_handler(Exception, _json_server_error)
    _add_information_routes(app, predictor, metrics, _model_card(predictor, max_upload_mb, max_files))
    _add_predict_route(app, predictor, metrics, max_files)
    return app


def _add_information_routes(app, predictor, metrics, model_info: dict) -> None:
    from fastapi.responses import HTMLResponse, Response

    page = resources.files("imgcls.deploy").joinpath("static/index.html").read_text(encoding="utf-8")
    model_name = predictor.model_name

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return HTMLResponse(page)

    @app.get("/health", summary="Liveness check (needs no API key); `worker` is the answering process's id")
    def health():
        return {"status": "ok", "model_name": model_name, "worker": os.getpid()}

    @app.get("/model", summary="Classes, preprocessing, metrics and limits of the served model")
    def model_card():
        return model_info

    @app.get("/metrics", summary="Prometheus metrics: requests, latency, images, batch sizes, the model",
             response_class=Response)
    def prometheus_metrics():
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)


def _add_predict_route(app, predictor, metrics, max_files: int) -> None:
    from fastapi import File, HTTPException, Query, UploadFile

    decode_slots = threading.BoundedSemaphore(decode_slot_count())  # counts images, not requests
    model_name = predictor.model_name

    def decode_upload(upload, name: str):
        """One upload to the model's input, decoded in one of the server's decode slots and reduced as it is
        read: only the small tensor outlives this call, so a request's images never coexist at full size."""
        try:
            with decode_slots:
                return predictor.decode(upload.file.read())
        except ImageReadError as e:
            hint = " (the server's --max-pixels)" if str(e).startswith("decompression bomb") else ""
            raise HTTPException(status_for(str(e)), f"{name}: {e}{hint}") from None
        finally:
            upload.file.close()  # a spooled upload's buffer goes now, not when the whole request ends

    @app.post("/predict", summary="Classify one or more images",
              description="multipart/form-data with one or more image files in fields named `files`.")
    def predict(files: list[UploadFile] = File(..., description="image files (JPEG, PNG, WebP, BMP, GIF, TIFF)"),
                topk: int | None = Query(None, ge=1, description="classes per image (default: the server's "
                                         "--topk; a multi-label model gives every label's probability)")):
        if len(files) > max_files:
            raise HTTPException(413, f"too many files: {len(files)} sent, at most {max_files} per request "
                                     "(--max-files)")
        names = [upload.filename or f"file {number + 1}" for number, upload in enumerate(files)]
        inputs = [decode_upload(upload, name) for upload, name in zip(files, names)]
        results = predictor.predict_decoded(inputs, names, topk=topk)
        metrics.images.inc(len(results))
        return {
            "model_name": model_name,
            "predictions": [answer(r) for r in results],
        }


def answer(r) -> dict:
    """One image in the REST answer; with --reject also ``unknown`` and the open-set ``score``. A multi-label model's
    answer is ``labels`` (those present; ``["unknown"]`` when rejected) and ``probabilities`` (every label's)."""
    if r.multi_label:
        found = {"filename": r.path, "labels": list(r.labels), "probabilities": dict(r.probabilities)}
    else:
        found = {"filename": r.path, "predicted": r.label, "confidence": r.confidence,
                 "topk": [{"class": c, "probability": p} for c, p in r.topk]}
    return found if r.score is None else found | {"unknown": r.unknown, "score": r.score}


def return_freed_memory_to_the_system() -> None:
    """Make large buffers freed after a decode go back to the operating system (glibc only; else nothing).

    glibc raises its mmap threshold each time a large block is freed, so later image buffers come from the
    heap, where a burst of uploads leaves them fragmented and the server's RSS stays at its peak for good.
    A fixed threshold keeps every block of 1 MB or more in its own mapping, unmapped as soon as it is freed.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise ImgclsError(f"--host {host} --port {port}: cannot listen there ({e.strerror}); "
                              "choose another --port") from None


def serve(weights, *, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 20, max_files: int = 16,
          topk: int = 5, device: str = "auto", runtime: str = "auto", max_pixels: int = MAX_IMAGE_PIXELS,
          reject: bool | float = False, api_key: str | None = None, workers: int = 1, ray: str | None = None,
          replicas: int | None = None, max_replicas: int | None = None) -> None:
    """Serve the page and API with uvicorn until Ctrl+C.

    ``api_key`` (else ``$IMGCLS_API_KEY``) is required by every route but /health and the page. ``workers`` > 1 runs
    that many processes, each loading its own model, on one port (from a script, call this under
    ``if __name__ == "__main__":``, as for any multiprocessing).

    ``ray`` deploys the same app on Ray Serve instead (ray_serve.py): ``"local"`` for a Ray started on this
    machine, else a cluster's address; ``replicas`` (default 1) to ``max_replicas`` (default ``replicas``)
    replicas, each with its own model.
    """
    _require_web_stack()
    from ..console import setup_logging
    from .api_key import resolve_api_key

    setup_logging()
    if workers < 1:
        raise ImgclsError(f"--workers {workers}: must be 1 or more")
    settings = {"weights": str(weights), "max_upload_mb": max_upload_mb, "max_files": max_files, "topk": topk,
                "device": device, "runtime": runtime, "max_pixels": max_pixels, "reject": reject,
                "api_key": resolve_api_key(api_key)}
    check_limits(max_upload_mb, max_files)
    if ray is not None or replicas is not None or max_replicas is not None:
        _serve_on_ray(settings, host, port, ray, workers, replicas, max_replicas)
    elif workers == 1:
        _serve_one_process(settings, host, port)
    else:
        _serve_workers(settings, host, port, workers)


def _serve_on_ray(settings: dict, host: str, port: int, ray: str | None, workers: int, replicas: int | None,
                  max_replicas: int | None) -> None:
    """The app on Ray Serve, after every flag is checked and the app built once here (a bad setting fails in
    one line before Ray starts)."""
    import functools

    from .ray_cluster import LOCAL, require_ray
    from .ray_serve import replica_limits, serve_on_ray

    if ray is None:
        raise ImgclsError("--replicas and --max-replicas are for Ray Serve: add --ray (a Ray on this machine) or "
                          "--ray ADDRESS (a cluster)")
    if workers != 1:
        raise ImgclsError(f"--workers {workers}: with --ray, give --replicas instead (each replica is a process "
                          "with its own model)")
    low, high = replica_limits(replicas, max_replicas)
    require_ray("--ray", "aiohttp", "aiohttp_cors")
    create_app(**settings)
    if ray == LOCAL:
        _check_port_free(host, port)
    build = functools.partial(create_app, **settings)
    announce = functools.partial(_announce, host, port, settings["api_key"] is not None)
    serve_on_ray(build, address=ray, host=host, port=port, replicas=low, max_replicas=high, announce=announce)


def _announce(host: str, port: int, keyed: bool, what: str) -> None:
    if host not in LOOPBACK_HOSTS and not keyed:
        log.warning(f"WARNING: --host {host} opens the model to other computers with no API key; add one with "
                    "--api-key KEY or IMGCLS_API_KEY=KEY (16 or more characters)")
    shown = f"[{host}]" if ":" in host else host
    address = f"http://{shown}:{port}"
    needs = "; every request but /health needs the API key" if keyed else ""
    log.info(f"Serving {what} at {address}/  (API docs: {address}/docs{needs}; Ctrl+C stops)")


def _serve_one_process(settings: dict, host: str, port: int) -> None:
    import uvicorn

    app = create_app(**settings)
    return_freed_memory_to_the_system()
    _check_port_free(host, port)
    predictor = app.state.predictor
    _announce(host, port, settings["api_key"] is not None, f"{predictor.model_name} on {predictor.runtime}")
    uvicorn.run(app, host=host, port=port, log_level="info")


SETTINGS_ENV = "IMGCLS_SERVE_SETTINGS"   # serve() -> the worker processes' app factory; not a user setting


def _serve_workers(settings: dict, host: str, port: int, workers: int) -> None:
    """``workers`` uvicorn worker processes sharing one port, each building its own app and model.

    uvicorn's workers load the app from an import string, so the settings reach them through the environment
    they inherit. Their metrics go to files in a temporary folder (prometheus-client's multiprocess mode), so
    /metrics sums every worker; the folder is removed when the server stops. A worker that cannot build its
    app writes why to that folder and exits as a startup failure, which stops uvicorn instead of restarting it.
    """
    import json
    import shutil
    import tempfile

    import uvicorn

    from .serve_metrics import MULTIPROCESS_ENV

    if tuple(int(part) for part in uvicorn.__version__.split(".")[:2]) < (0, 50):
        # older ones restart a worker that cannot load the model for ever, and load the app in the parent too
        raise ImgclsError(f"--workers needs uvicorn 0.50 or newer (this is {uvicorn.__version__}): "
                          "pip install -U 'imgcls[serve]'")
    _check_port_free(host, port)
    folder = Path(tempfile.mkdtemp(prefix="imgcls-serve-"))
    failure = folder / "startup-error.txt"
    (folder / "metrics").mkdir()
    environment = {SETTINGS_ENV: json.dumps({"app": settings, "startup_error": str(failure)}),
                   MULTIPROCESS_ENV: str(folder / "metrics")}
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        _announce(host, port, settings["api_key"] is not None, f"{Path(settings['weights']).name} with {workers} "
                  "worker processes")
        uvicorn.run("imgcls.deploy.serve:app_from_environment", factory=True, workers=workers, host=host, port=port,
                    log_level="info")
        reason = failure.read_text(encoding="utf-8") if failure.exists() else None
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)
    if reason is not None:
        raise ImgclsError(reason)


def app_from_environment():
    """uvicorn's app factory in each worker process of ``--workers``: the app for the settings serve() left in
    the environment."""
    import json

    from ..console import setup_logging

    setup_logging()
    settings = json.loads(os.environ[SETTINGS_ENV])
    try:
        app = create_app(**settings["app"])
    except Exception as e:  # any failure here would fail the same way in every restarted worker
        from uvicorn.config import STARTUP_FAILURE

        if not isinstance(e, ImgclsError):
            log.exception("a worker could not start")
        reason = str(e) if isinstance(e, ImgclsError) else f"a worker could not start ({type(e).__name__}: {e})"
        Path(settings["startup_error"]).write_text(reason, encoding="utf-8")
        raise SystemExit(STARTUP_FAILURE) from None
    return_freed_memory_to_the_system()
    predictor = app.state.predictor
    log.info(f"worker {os.getpid()}: {predictor.model_name} on {predictor.runtime}")
    return app
