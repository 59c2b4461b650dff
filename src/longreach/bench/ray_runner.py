"""Run a sweep's cells on a Ray cluster: each worker loads the model once and runs cells it is sent.

The driver builds the prompts (so a worker needs no data files), keeps every worker busy with a
short queue, and alone writes results.jsonl, so resume works exactly as in a local run.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict

from ..errors import LongreachError
from .cells import Unit
from .results import Record, ResultsDir

IN_FLIGHT_PER_WORKER = 2


class BenchWorker:
    """A Ray actor holding one loaded model (and its with_method variants)."""

    def __init__(self, config):
        from .runner import load_model

        start = time.perf_counter()
        self.config = config
        self.lm = load_model(config)
        self.lms: dict = {}
        self.load_seconds = time.perf_counter() - start
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def ready(self) -> float:
        return self.load_seconds

    def run(self, sample, cell, methods, seed, build_seconds) -> list[dict]:
        from .runner import run_methods
        records = run_methods(self.lm, sample, cell, methods, seed, self.config.max_new_tokens,
                              build_seconds, self.lms)
        for record in records:
            record.meta["worker"] = self.name
        return [asdict(r) for r in records]


def _worker_count(ray, config) -> tuple[int, dict]:
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return config.workers or gpus, {"num_gpus": 1, "num_cpus": 1}
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    return config.workers or max(nodes, 1), {"num_cpus": 1}


def _unwrap(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return text[-1] if text else type(cause).__name__


def run_on_ray(config, source, units: list[Unit], results: ResultsDir, summary) -> None:
    """Run `units` on Ray workers, appending records to `results` as they arrive; fills `summary`."""
    try:
        import ray
    except ImportError:
        raise LongreachError("--ray needs Ray: pip install 'longreach[ray]'") from None
    from .runner import progress_bar

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = config.ray_address or "a new local instance"
            raise LongreachError(f"cannot reach the Ray cluster at {where}: {_unwrap(exc)}") from None
    workers = []
    try:
        count, options = _worker_count(ray, config)
        actor = ray.remote(BenchWorker).options(**options)
        workers = [actor.remote(config) for _ in range(count)]
        try:
            summary.load_seconds = max(ray.get([w.ready.remote() for w in workers]))
        except ray.exceptions.RayError as exc:
            raise LongreachError(f"a Ray worker could not load the model: {_unwrap(exc)}") from None
        _dispatch(ray, workers, source, units, results, summary, progress_bar(config, units))
    finally:
        for worker in workers:
            ray.kill(worker)
        if started_here:
            ray.shutdown()


def _dispatch(ray, workers, source, units, results, summary, bar) -> None:
    pending = list(reversed(units))
    running: dict = {}  # object ref -> (worker, unit)
    load = {id(w): 0 for w in workers}
    write_seconds = 0.0
    try:
        with results.appender() as appender:
            while pending or running:
                while pending and min(load.values()) < IN_FLIGHT_PER_WORKER:
                    worker = min(workers, key=lambda w: load[id(w)])
                    unit = pending.pop()
                    sample = source.sample(unit.cell)
                    ref = worker.run.remote(sample, unit.cell, unit.methods, source.seed(unit.cell),
                                            source.last_seconds)
                    running[ref] = (worker, unit)
                    load[id(worker)] += 1
                done, _ = ray.wait(list(running), num_returns=1)
                worker, unit = running.pop(done[0])
                load[id(worker)] -= 1
                try:
                    rows = ray.get(done[0])
                except ray.exceptions.RayError as exc:
                    raise LongreachError(f"a Ray worker failed on {unit.cell.key('*')}: "
                                         f"{_unwrap(exc)}") from None
                start = time.perf_counter()
                for row in rows:
                    record = Record.from_dict(row)
                    appender.write(record)
                    summary.records += 1
                    summary.model_seconds += record.seconds
                    summary.score_seconds += record.score_seconds
                    bar.update(unit.cell.length)
                write_seconds += time.perf_counter() - start
    finally:
        bar.close()
        summary.overhead_seconds = source.seconds + summary.score_seconds + write_seconds
