"""``imgcls serve --ray``: the same FastAPI app (serve.create_app) as a Ray Serve deployment, one model per replica,
between ``--replicas`` and ``--max-replicas`` replicas scaled by Ray Serve on the requests in flight.

Ray Serve's HTTP proxy takes the port and hands each request to a replica; a replica whose process dies is
replaced by Ray. Every replica builds the app itself, so the API key and the upload limits hold as in
``imgcls serve``; /metrics and /health answer for the replica that receives the request.
This module gets the app as the factory serve.py hands it, so the import goes one way.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable

from ..errors import ImgclsError

log = logging.getLogger("imgcls")

APP_NAME = "imgcls"
TARGET_ONGOING_REQUESTS = 4  # per replica: Ray Serve adds a replica when the requests in flight pass this


def replica_limits(replicas: int | None, max_replicas: int | None) -> tuple[int, int]:
    """(minimum, maximum) replicas from --replicas and --max-replicas, each checked."""
    low = 1 if replicas is None else replicas
    if low < 1:
        raise ImgclsError(f"--replicas {low}: must be 1 or more")
    high = low if max_replicas is None else max_replicas
    if high < low:
        raise ImgclsError(f"--max-replicas {high}: must be at least --replicas ({low})")
    return low, high


def app_deployment(build: Callable, low: int, high: int, cpus_each: float):
    """The bound Ray Serve application: the app ``build()`` makes (serve.create_app with the command's settings),
    built in each replica's own process, fixed at ``low`` replicas or scaled between ``low`` and ``high``."""
    from ray import serve

    def app():
        return build()

    scaling = {"num_replicas": low} if low == high else {"autoscaling_config": {
        "min_replicas": low, "initial_replicas": low, "max_replicas": high,
        "target_ongoing_requests": TARGET_ONGOING_REQUESTS}}
    deployment = serve.deployment(serve.ingress(app)(), name=APP_NAME, ray_actor_options={"num_cpus": cpus_each},
                                  **scaling)
    return deployment.bind()


def serve_on_ray(build: Callable, *, address: str, host: str, port: int, replicas: int, max_replicas: int,
                 announce: Callable[[str], None]) -> None:
    """Deploy the app on Ray (ray_cluster.ray_session) and serve until Ctrl+C or SIGTERM; then Serve and a Ray
    started here stop."""
    from .ray_cluster import LOCAL, quiet_ray_logs, ray_session

    with ray_session(address) as cluster:
        from ray import serve

        quiet_ray_logs()
        # on this machine the replicas share its cores: a replica waiting for a CPU Ray cannot give never starts
        cpus_each = min(1.0, cluster["cpus"] / max_replicas) if address == LOCAL else 1.0
        serve.start(http_options={"host": host, "port": port},
                    logging_config={"log_level": "WARNING", "enable_access_log": False})
        try:
            started = time.perf_counter()
            serve.run(app_deployment(build, replicas, max_replicas, cpus_each), name=APP_NAME, route_prefix="/")
            scaled = f"{replicas}" if replicas == max_replicas else f"{replicas} to {max_replicas}"
            log.info(f"Ray Serve: {scaled} replica(s) ready in {time.perf_counter() - started:.1f}s")
            announce(f"{scaled} Ray Serve replica(s)")
            _wait_for_stop()
        except RuntimeError as e:
            raise ImgclsError(f"--ray: Ray Serve could not start the app ({str(e).strip().splitlines()[-1]})") \
                from None
        finally:
            serve.shutdown()


def _wait_for_stop() -> None:
    """Sleep until Ctrl+C, or SIGTERM (a container's stop), which ends the same way so that Ray stops too."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    import threading

    main = threading.current_thread() is threading.main_thread()  # only the main thread may set a handler
    previous = signal.signal(signal.SIGTERM, stop) if main else None
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        log.info("Stopping Ray Serve")
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
