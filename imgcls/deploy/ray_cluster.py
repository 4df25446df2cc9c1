"""The Ray that ``imgcls predict --ray`` and ``imgcls serve --ray`` run on: one started by the command itself on
this machine's cores (``--ray`` alone), or a running cluster given by its address (``--ray HOST:6379``).

A Ray already running in this process (a script's or a test's ``ray.init``) is used as it is and left running.
"""

from __future__ import annotations

import logging
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

from ..errors import ImgclsError

log = logging.getLogger("imgcls")

LOCAL = "local"  # --ray with no address: a Ray started by the command on this machine, stopped when it ends
INSTALL = 'pip install "imgcls[ray]"'
CONNECT_TIMEOUT_S = 5.0  # an address where nothing answers fails after this, not after Ray's own retries


def require_ray(flag: str, *modules: str) -> None:
    """One line naming the extra when Ray, or a package that Ray Data or Ray Serve needs (``modules``, top-level
    names), is not installed."""
    from importlib.util import find_spec

    missing = [name for name in ("ray", *modules) if find_spec(name) is None]
    if missing:
        raise ImgclsError(f"{flag} needs {', '.join(missing)} (not installed here): {INSTALL}")


def _quiet_settings() -> dict:
    """Ray's own start-up messages, dashboard and worker output stay off the console; a worker's error still comes
    back to this process as the exception it raised."""
    return {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
            "configure_logging": True}


def quiet_ray_logs() -> None:
    """Ray's console output (its Python loggers, and its C++ core, which writes to this process's stderr) shows
    errors only; Ray's log files under /tmp/ray keep everything."""
    import warnings

    warnings.filterwarnings("ignore", module=r"ray\..*")
    for name in ("ray", "ray.data", "ray.serve"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.ERROR) if name == "ray" else None
        # Ray Data and Serve log to their files at every level and to the console through their own handlers
        for handler in logger.handlers:
            if type(handler).__name__ in ("PlainRayHandler", "StreamHandler"):
                handler.setLevel(logging.ERROR)


def _same_imgcls() -> dict:
    """A local Ray's workers import the imgcls this process runs (a source checkout on PYTHONPATH, or the
    installed one), never another copy on the machine."""
    import os

    package_parent = str(Path(__file__).resolve().parents[2])  # the folder holding this imgcls/
    search = [package_parent, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(dict.fromkeys(search))}}


def check_reachable(address: str, flag: str = "--ray") -> None:
    """Fail in one line, within seconds, when nothing listens at a cluster address (Ray itself retries for
    about 20 seconds and prints a warning a second). ``auto`` is left to Ray: it finds a cluster started on
    this machine with ``ray start``."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ImgclsError(f"{flag} {address}: give a Ray cluster's address as HOST:PORT (e.g. 10.0.0.5:6379, the "
                          "address `ray start --head` prints), or --ray alone for a Ray on this machine")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ImgclsError(f"{flag} {address}: no Ray cluster answers there ({reason}); start one with "
                          "`ray start --head` and give the address it prints, or --ray alone for a Ray on this "
                          "machine") from None


@contextmanager
def ray_session(address: str, flag: str = "--ray") -> Iterator[dict]:
    """Ray, ready for the block: started here (``LOCAL``, on the cores this process may use) or connected to
    ``address``; stopped or disconnected after it. Yields what was done: address, CPUs, start-up seconds."""
    import ray

    from ..data.cores import available_cpus

    quiet_ray_logs()
    if address != LOCAL:
        check_reachable(address, flag)
    if ray.is_initialized():
        yield {"address": "the running Ray", "cpus": int(ray.cluster_resources().get("CPU", 1)), "seconds": 0.0}
        return
    started = time.perf_counter()
    if address == LOCAL:
        ray.init(num_cpus=available_cpus(), runtime_env=_same_imgcls(), **_quiet_settings())
    else:
        try:
            ray.init(address=address, **_quiet_settings())
        except (ConnectionError, RuntimeError) as e:
            raise ImgclsError(f"{flag} {address}: cannot join that Ray cluster ({str(e).splitlines()[0]})") from None
    try:
        seconds = time.perf_counter() - started
        cpus = int(ray.cluster_resources().get("CPU", 1))
        where = f"a local Ray on {cpus} CPUs" if address == LOCAL else f"the Ray cluster at {address} ({cpus} CPUs)"
        log.info(f"Ray: {where}, ready in {seconds:.1f}s")
        yield {"address": address, "cpus": cpus, "seconds": round(seconds, 2)}
    finally:
        ray.shutdown()


def worker_failure(error: Exception, flag: str = "--ray") -> ImgclsError:
    """A Ray worker's failure as one line: the worker's own ImgclsError where it raised one, else its last line."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, ImgclsError):
        return ImgclsError(str(cause))
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return ImgclsError(f"{flag}: a Ray worker failed ({lines[-1].strip() if lines else type(error).__name__})")
