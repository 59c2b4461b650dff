"""benchmarks/common.py: result files stamp each cell with its machine and resume under the same config."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
from common import ResultFile, machines_line  # noqa: E402

from longreach.machine import machine_label  # noqa: E402


def test_cells_name_their_machine_and_the_file_resumes(tmp_path):
    path = tmp_path / "r.json"
    results = ResultFile(path, {"chunk": 512})
    results.put("a", {"correct": 1.0})
    results.put("b", {"correct": 0.0, "machine": "measured elsewhere"})  # a cell that says where it ran keeps it
    again = ResultFile(path, {"chunk": 512})
    assert again.done("a") and not again.done("c")
    cells = json.loads(path.read_text())["cells"]
    assert cells["a"]["machine"] == machine_label() and cells["b"]["machine"] == "measured elsewhere"
    assert machines_line(list(cells.values()) + [{}]) == (
        f"Measured on: {machine_label()}: 1 cells; measured elsewhere: 1 cells; not recorded: 1 cells.")


def test_another_config_is_refused_and_the_file_kept(tmp_path):
    path = tmp_path / "r.json"
    ResultFile(path, {"chunk": 512}).put("a", {"correct": 1.0})
    before = path.read_text()
    with pytest.raises(SystemExit, match="another configuration"):
        ResultFile(path, {"chunk": 256})
    assert path.read_text() == before
