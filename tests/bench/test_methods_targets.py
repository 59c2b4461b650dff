"""benchmarks/methods_targets.py: issue 4's targets judged on hand-made methods_compare cells."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
from methods_targets import _index, breaks_at, target_rows  # noqa: E402


def cell(config, length, sample, correct, task="passkey", kv=1000, **extra):
    return {"config": config, "length": length, "sample": sample, "task": task, "correct": correct,
            "kv_bytes": kv, **extra}


def rows_by_target(cells):
    return {row[0]: row[1:] for row in target_rows(cells)}


def test_squeezed_compared_with_dense_on_shared_cells_only():
    cells = [cell("dense", 4096, f"passkey|{d}|0", 1.0) for d in (0.1, 0.5, 0.9)]
    cells += [cell("squeezed", 4096, "passkey|0.1|0", 1.0), cell("squeezed", 4096, "passkey|0.5|0", 0.0),
              cell("squeezed", 4096, "passkey|0.5|1", 1.0)]  # a seed dense lacks: not compared
    measured, verdict = rows_by_target(cells)[
        "squeezed (1/8 budget) within 2 points of dense inside the window (4K, 8K)"]
    assert verdict == "missed" and "(2 cells): +50.0 points lost" in measured


def test_passkey_floor_decode_cost_and_missing_cells():
    cells = [cell("squeezed", 32768, f"passkey|{d}|0", 1.0, decode_cost_ratio=6.0, decode_attention_us=10.0,
                  decode_attention_whole_us=45.0) for d in (0.1, 0.5, 0.9)]
    rows = rows_by_target(cells)
    assert rows["squeezed: passkey >= 95% at 32K"] == ["100% (3 cells)", "met"]
    assert rows["squeezed: decode attention >= 4x cheaper than the whole context at 32K"] == [
        "keys 6.0x, time 4.5x", "met"]
    short = [cell("squeezed", 8192, "passkey|0.5|0", 1.0, decode_cost_ratio=2.0, decode_attention_us=10.0,
                  decode_attention_whole_us=15.0)]
    assert rows_by_target(short)["squeezed: decode attention >= 4x cheaper than the whole context at 8K"] == [
        "keys 2.0x, time 1.5x", "reported"]  # judged at 32K only
    assert rows["self_extend: passkey >= 90% at 32K"] == ["", "not measured"]
    assert rows["yarn-t1: passkey >= 90% at 32K"] == ["", "not measured"]  # YaRN without its temperature
    assert rows["dense+int8: KV bytes <= 0.27x of dense"] == ["", "not measured"]


def test_decode_time_at_32k_judged_from_decode_kernels_when_measured():
    cells = [cell("squeezed", 32768, f"passkey|{d}|0", 1.0, decode_cost_ratio=6.0, decode_attention_us=10.0,
                  decode_attention_whole_us=45.0) for d in (0.1, 0.5, 0.9)]
    kernel_cells = {"squeezed|32768": {"kernels_whole_us": 2000.0, "kernels_lookup_us": 1000.0},
                    "dense|32768": {"kernels_tps": 9.0}}
    rows = {row[0]: row[1:] for row in target_rows(cells, kernel_cells)}
    assert rows["squeezed: decode attention >= 4x cheaper than the whole context at 32K"] == [
        "keys 6.0x, time 4.5x", "reported"]  # the grid's few steps: reported beside the longer run
    assert rows["squeezed: decode attention >= 4x cheaper than the whole context at 32K (decode_kernels)"] == [
        "keys 6.0x, time 2.0x (2000 / 1000 us)", "missed"]


def test_quantization_loss_and_bytes():
    cells = []
    for s in range(4):
        cells.append(cell("dense", 8192, f"passkey|0.5|{s}", 1.0, kv=4000))
        cells.append(cell("dense+int8", 8192, f"passkey|0.5|{s}", 1.0, kv=1000))
        cells.append(cell("dense+int4", 8192, f"passkey|0.5|{s}", 1.0 if s else 0.0, kv=600))
    rows = rows_by_target(cells)
    assert rows["dense+int8: <= 1 point lost vs dense"][1] == "met"
    assert rows["dense+int8: KV bytes <= 0.27x of dense"] == ["0.250x (4 cells)", "met"]
    assert rows["dense+int4: accuracy lost vs dense (reported)"] == [
        "dense+int4 75.0% vs dense 100.0% (4 cells): +25.0 points lost", "reported"]
    assert rows["dense+int4: KV bytes vs dense (reported)"] == ["0.150x (4 cells)", "reported"]


def test_infllm_quantization_is_judged_at_every_length_both_reached_dense_inside_the_window():
    cells = []
    for length in (4096, 32768):
        for name, kv in (("dense", 4000), ("dense+int8", 1000), ("infllm", 4000), ("infllm+int8", 1000)):
            cells.append(cell(name, length, "passkey|0.5|0", 1.0 if length == 4096 or name == "infllm" else 0.0,
                              kv=kv))
    rows = rows_by_target(cells)
    assert rows["dense+int8: <= 1 point lost vs dense"] == [
        "dense+int8 100.0% vs dense 100.0% (1 cells): +0.0 points lost", "met"]  # 32K left out
    assert rows["infllm+int8: <= 1 point lost vs infllm"] == [
        "infllm+int8 50.0% vs infllm 100.0% (2 cells): +50.0 points lost", "missed"]


def test_where_a_method_breaks():
    cells = [cell("yarn", length, "passkey|0.5|0", ok) for length, ok in ((4096, 1.0), (32768, 1.0), (49152, 0.0))]
    assert breaks_at(_index(cells), "yarn") == "48K (0%)"
    assert breaks_at(_index(cells[:2]), "yarn") == "not within 32K"
    assert rows_by_target(cells)["yarn: where passkey falls below 90%"] == ["48K (0%)", "reported"]
