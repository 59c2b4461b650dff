"""benchmarks/peer_speed.py: ratios against transformers and llama.cpp from the cells of one run."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
from peer_speed import summarise  # noqa: E402


def _cell(engine, prefill, decode, tokens):
    return {"engine": engine, "length": 4096, "prompt_tps": prefill, "generation_tps": decode, "tokens": tokens}


def test_ratios_bytes_and_greedy_agreement():
    cells = {"a": _cell("transformers", 400.0, 10.0, [1, 2, 3]), "b": _cell("dense", 440.0, 25.0, [1, 2, 4]),
             "c": _cell("llama.cpp", 200.0, 50.0, [1, 2, 3])}
    weights = {"transformers": 2**30, "dense": 2**29, "llama.cpp": 2**27}
    rows = {line.split(" | ")[1]: line.split(" | ") for line in summarise(cells, weights).splitlines()[2:]}
    # prefill / HF, decode / HF, prefill / llama.cpp, decode / llama.cpp, MiB, GB/s, greedy tokens as HF
    assert rows["dense"][4:11] == ["1.10", "2.50", "2.20", "0.50", "512", "13.4", "2/3 |"]
    assert rows["llama.cpp"][4:8] == ["0.50", "5.00", "1.00", "1.00"] and rows["llama.cpp"][10] == "yes |"


def test_without_llama_cpp_its_ratios_say_so():
    cells = {"a": _cell("transformers", 400.0, 10.0, [1]), "b": _cell("dense", 400.0, 10.0, [1])}
    table = summarise(cells, {"transformers": 1, "dense": 1, "llama.cpp": 1})
    assert "| 4K | llama.cpp |" not in table and "| n/a | n/a |" in table
