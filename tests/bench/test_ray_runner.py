"""A sweep on a local Ray instance: one worker loads the model once and runs every cell."""

import os

import pytest
from bench_helpers import cli, records, tiny_model_dir

from longreach.bench.cells import parse_methods
from longreach.bench.runner import BenchConfig, run_bench
from longreach.bench.sources import SweepSpec
from longreach.cli.bench_commands import bench_config
from longreach.cli.main import build_parser

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


def test_cli_ray_flag_runs_on_the_workers(tmp_path, local_ray, capsys):
    out = tmp_path / "cli"
    code, _, err = cli(capsys, "bench", "--task", "ruler", "--subtasks", "vt", "--lengths", "1k", "--samples", 2,
                       "--method", "dense", "--ray", "--workers", 1, "--model", tiny_model_dir(), "--out", out,
                       "--max-new-tokens", 2, "--no-progress")
    assert code == 0, err
    rows = records(out)
    assert len(rows) == 2 and "2 samples run" in err
    workers = {r["meta"]["worker"] for r in rows}
    assert len(workers) == 1 and not workers.pop().endswith(f":{os.getpid()}")


def test_cli_ray_address_implies_ray():
    argv = ["bench", "--task", "ruler", "--out", "x", "--ray-address", "ray://head:10001", "--workers", "3"]
    config = bench_config(build_parser().parse_args(argv))
    assert config.ray and config.ray_address == "ray://head:10001" and config.workers == 3
    assert not bench_config(build_parser().parse_args(argv[:5])).ray
