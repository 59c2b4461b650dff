"""A sweep on a local Ray instance: one worker loads the model once and runs every cell."""

import os

import pytest
from bench_helpers import records, tiny_model_dir

from longreach.bench.cells import parse_methods
from longreach.bench.runner import BenchConfig, run_bench
from longreach.bench.sources import SweepSpec

ray = pytest.importorskip("ray")


@pytest.fixture
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_sweep_on_local_ray_then_resume(tmp_path, local_ray):
    out = tmp_path / "ray"
    sweep = SweepSpec("ruler", ["niah_single_1", "vt"], [1024], samples=2)
    config = BenchConfig(sweep, out, parse_methods(["dense,streaming:window=256"]), model=tiny_model_dir(),
                         max_new_tokens=2, ray=True, workers=1, progress=False)
    summary = run_bench(config)
    assert summary.records == 8 and summary.load_seconds > 0
    rows = records(out)
    assert len({r["key"] for r in rows}) == 8
    assert {r["method"] for r in rows} == {"dense", "streaming[window=256]"}
    assert all(r["kv_bytes"] > 0 for r in rows)
    workers = {r["meta"]["worker"] for r in rows}
    assert len(workers) == 1 and not workers.pop().endswith(f":{os.getpid()}")  # one remote model
    assert ray.is_initialized()  # the runner leaves a Ray instance it did not start
    again = run_bench(config)
    assert again.records == 0 and again.already_done == 8
