"""``imgcls predict --ray``: the Predictor as a Ray Data ``map_batches`` stage over the file list, one model per
Ray worker (an actor that keeps its model for the whole run).

The results stream back to the command in source order, so ``predict`` writes them with the same
PredictionsWriter, the same summary and the same error entries for files that cannot be read. Every path
must be readable where the workers run: on a cluster, images and weights on storage every node mounts.
This module knows the Predictor only as the factory predict.py hands it, so the import goes one way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator

from ..errors import ImgclsError

BLOCKS_PER_WORKER = 4  # enough blocks that each worker always has the next batch of paths waiting
BATCHES_PER_BLOCK = 16  # at most: results come back a block at a time, so memory and the first rows stay close


class PredictorWorker:
    """One Ray worker's model: a Predictor built once by ``make``, then called on batches of paths."""

    def __init__(self, make: Callable):
        self.predictor = make()

    def __call__(self, batch: dict) -> dict:
        names = [str(name) for name in batch["name"]]
        found = self.predictor.predict_stream([str(path) for path in batch["path"]])
        return {"prediction": [json.dumps(dataclasses.asdict(dataclasses.replace(p, path=name)))
                               for p, name in zip(found, names, strict=True)]}


def rebuilt(text: str, prediction: type):
    """A worker's result, whole, as the ``prediction`` class (Prediction) again: its tuples (topk, labels,
    probabilities) come back from JSON as lists."""
    def tuples(value):
        return tuple(tuples(item) for item in value) if isinstance(value, list) else value

    return prediction(**{name: tuples(value) for name, value in json.loads(text).items()})


def ray_workers(requested: int | None, cpus: int) -> tuple[int, float]:
    """(workers, CPUs reserved by each): one worker per CPU by default; more workers than CPUs share them, since a
    worker that waits for CPUs Ray cannot give would wait for ever."""
    if requested is not None and requested < 1:
        raise ImgclsError(f"--workers {requested}: with --ray, the number of Ray workers (one model each); "
                          "1 or more")
    workers = requested or max(1, cpus)
    return workers, min(1.0, cpus / workers)


def ray_predictions(paths: Iterable[str], total: int, make: Callable, prediction: type, *, batch_size: int,
                    workers: int, cpus_each: float) -> Iterator:
    """The results for ``paths`` (``total`` of them) of the Predictor ``make()`` builds in each of ``workers`` Ray
    workers, as ``prediction`` objects (the Prediction class), in order. Ray must be running
    (ray_cluster.ray_session)."""
    import ray
    import ray.data

    from .ray_cluster import quiet_ray_logs, worker_failure

    quiet_ray_logs()  # again: importing ray.data gave it its console handler
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the files' order, as `imgcls predict` writes them
    context.enable_progress_bars = False             # predict draws its own bar
    context.print_on_execution_start = False
    batches = math.ceil(total / batch_size)
    blocks = max(1, min(batches, max(workers * BLOCKS_PER_WORKER, math.ceil(batches / BATCHES_PER_BLOCK))))
    # absolute paths for the workers, whatever their working folder; the results keep the names the source gave
    rows = [{"path": os.path.abspath(path), "name": path} for path in paths]
    dataset = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        PredictorWorker, fn_constructor_args=(make,), batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(workers, blocks)), num_cpus=cpus_each)
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for text in batch["prediction"]:
                yield rebuilt(text, prediction)
    except ray.exceptions.RayError as e:
        raise worker_failure(e) from None
