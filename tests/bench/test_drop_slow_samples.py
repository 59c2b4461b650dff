"""benchmarks/drop_slow_samples.py: slow samples leave the results (kept in dropped.jsonl), per group."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "drop_slow_samples.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def row(key, length, method, tps, options=None, machine=None):
    return {"key": key, "task": "ruler", "length": length, "method": method,
            "method_options": options or {}, "prefill_tps": tps, **({"machine": machine} if machine else {})}


def test_results_dir_drops_slow_samples_per_group(tmp_path):
    rows = [row("a", 4096, "dense", 300), row("b", 4096, "dense", 310), row("c", 4096, "dense", 200),
            # another group: slow on the whole, none below 0.8 x its own median
            row("d", 32768, "infllm", 150), row("e", 32768, "infllm", 160), row("f", 32768, "infllm", 155),
            # same method, other options: a group of its own
            row("g", 4096, "dense", 100, {"kv_quant": "int8"}),
            # a slower machine: compared with its own samples only
            row("h", 4096, "dense", 150, machine="old CPU"), row("i", 4096, "dense", 140, machine="old CPU")]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    dry = run(tmp_path, "--dry-run")
    assert dry.returncode == 0 and "would drop c " in dry.stdout
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 9

    done = run(tmp_path)
    assert done.returncode == 0, done.stderr
    kept = [json.loads(line)["key"] for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert kept == ["a", "b", "d", "e", "f", "g", "h", "i"]
    assert [json.loads(line)["key"] for line in (tmp_path / "dropped.jsonl").read_text().splitlines()] == ["c"]


def test_result_file_groups_by_config_and_length(tmp_path):
    cells = {"x|4096|p": {"config": "x", "length": 4096, "prompt_tps": 300},
             "x|4096|q": {"config": "x", "length": 4096, "prompt_tps": 100},
             "x|4096|r": {"config": "x", "length": 4096, "prompt_tps": 290},
             "y|4096|p": {"config": "y", "length": 4096, "prompt_tps": 100}}
    path = tmp_path / "compare.json"
    path.write_text(json.dumps({"config": {}, "cells": cells}))
    assert run(path).returncode == 0
    assert sorted(json.loads(path.read_text())["cells"]) == ["x|4096|p", "x|4096|r", "y|4096|p"]
    assert json.loads((tmp_path / "compare.dropped.jsonl").read_text())["key"] == "x|4096|q"


def test_only_some_configurations_slow_or_all_of_them(tmp_path):
    cells = {"x|4096|p": {"config": "x", "length": 4096, "prompt_tps": 300},
             "x|4096|q": {"config": "x", "length": 4096, "prompt_tps": 100},
             "x|4096|r": {"config": "x", "length": 4096, "prompt_tps": 290},
             "y|4096|p": {"config": "y", "length": 4096, "prompt_tps": 300},
             "y|4096|q": {"config": "y", "length": 4096, "prompt_tps": 100},
             "y|4096|r": {"config": "y", "length": 4096, "prompt_tps": 300},
             "z|4096|p": {"config": "z", "length": 4096, "prompt_tps": 300}}
    path = tmp_path / "compare.json"
    path.write_text(json.dumps({"config": {}, "cells": cells}))
    assert run(path, "--only", "y").returncode == 0  # x's slow cell stays
    assert sorted(json.loads(path.read_text())["cells"]) == [
        "x|4096|p", "x|4096|q", "x|4096|r", "y|4096|p", "y|4096|r", "z|4096|p"]
    done = run(path, "--only", "x,z", "--all")
    assert done.returncode == 0 and "4 selected sample(s)" in done.stdout
    assert sorted(json.loads(path.read_text())["cells"]) == ["y|4096|p", "y|4096|r"]
    dropped = [json.loads(line)["key"] for line in (tmp_path / "compare.dropped.jsonl").read_text().splitlines()]
    assert sorted(dropped) == ["x|4096|p", "x|4096|q", "x|4096|r", "y|4096|q", "z|4096|p"]


def test_bad_input_is_one_line_exit_2(tmp_path):
    missing = run(tmp_path / "nothing")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    (tmp_path / "results.jsonl").write_text('{"key": "a"}\n')
    malformed = run(tmp_path)
    assert malformed.returncode == 2 and "not a longreach result file" in malformed.stderr
    assert (tmp_path / "results.jsonl").read_text() == '{"key": "a"}\n'
    assert run(tmp_path, "--below", "0").returncode == 2
    refused = run(tmp_path, "--all")  # without --only it would empty the results
    assert refused.returncode == 2 and "--all needs --only" in refused.stderr
