"""Issue 4's targets, judged from methods_compare cells: one row per target, measured value, verdict.

Comparisons between two configurations use only the cells both have (same length, task and
sample), so a grid run in parts never compares different samples. A target without the cells
it needs says "not measured" instead of passing.
"""

from __future__ import annotations

from collections import defaultdict

IN_WINDOW = (4096, 8192)          # SmolLM2's trained window is 8K
LONG = 32768                      # 4x the window
REPORTED_LENGTHS = (4096, 8192, 16384, 32768, 49152, 65536)


def _index(cells: list[dict]) -> dict[str, dict[tuple, dict]]:
    """config -> {(length, sample key): cell}."""
    out: dict[str, dict[tuple, dict]] = defaultdict(dict)
    for cell in cells:
        out[cell["config"]][(cell["length"], cell["sample"])] = cell
    return out


def _paired(index, a: str, b: str, lengths, task: str | None = None) -> list[tuple[dict, dict]]:
    """Cells of configs a and b on the same (length, sample), restricted to lengths and a task."""
    pairs = []
    for key, cell in index.get(a, {}).items():
        other = index.get(b, {}).get(key)
        if other is not None and key[0] in lengths and (task is None or cell["task"] == task):
            pairs.append((cell, other))
    return pairs


def _accuracy(cells) -> float:
    return 100 * sum(c["correct"] for c in cells) / len(cells)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _row(target: str, measured: str, ok: bool | None) -> list[str]:
    verdict = "not measured" if ok is None else "met" if ok else "missed"
    return [target, measured, verdict]


def _within_points(index, a, b, lengths, limit, label) -> list[str]:
    pairs = _paired(index, a, b, lengths)
    if not pairs:
        return _row(label, "", None)
    loss = _accuracy([p[1] for p in pairs]) - _accuracy([p[0] for p in pairs])
    return _row(label, f"{a} {_accuracy([p[0] for p in pairs]):.1f}% vs {b} {_accuracy([p[1] for p in pairs]):.1f}% "
                       f"({len(pairs)} cells): {loss:+.1f} points lost", loss <= limit)


def _passkey_at(index, config, length, floor) -> list[str]:
    cells = [c for (le, _), c in index.get(config, {}).items() if le == length and c["task"] == "passkey"]
    label = f"{config}: passkey >= {floor:.0f}% at {length // 1024}K"
    if not cells:
        return _row(label, "", None)
    return _row(label, f"{_accuracy(cells):.0f}% ({len(cells)} cells)", _accuracy(cells) >= floor)


def breaks_at(index, config, floor: float = 90.0) -> str:
    """The first measured length where passkey accuracy falls below `floor`, or "not within ..."."""
    measured = []
    for length in REPORTED_LENGTHS:
        cells = [c for (le, _), c in index.get(config, {}).items() if le == length and c["task"] == "passkey"]
        if cells:
            measured.append((length, _accuracy(cells)))
            if _accuracy(cells) < floor:
                return f"{length // 1024}K ({_accuracy(cells):.0f}%)"
    if not measured:
        return ""
    return f"not within {measured[-1][0] // 1024}K"


def _bytes_ratio(index, a, b, lengths, limit, label) -> list[str]:
    pairs = _paired(index, a, b, lengths)
    if not pairs:
        return _row(label, "", None)
    ratio = _mean(p[0]["kv_bytes"] for p in pairs) / _mean(p[1]["kv_bytes"] for p in pairs)
    return _row(label, f"{ratio:.3f}x ({len(pairs)} cells)", None if limit is None else ratio <= limit)


def _decode_cost(index, config, limit, kernel_cells: dict | None = None) -> list[list[str]]:
    """Keys touched and time per layer call, whole context / lookup. At 32K the time is judged from
    `benchmarks/decode_kernels.py`'s cell when given (24 steps after an untimed one, the CPU
    kernels): a grid cell decodes a handful of tokens and its average includes one-time work."""
    rows = []
    for length in REPORTED_LENGTHS:
        cells = [c for (le, _), c in index.get(config, {}).items()
                 if le == length and "decode_cost_ratio" in c]
        if not cells:
            continue
        keys = _mean(c["decode_cost_ratio"] for c in cells)
        time = _mean(c["decode_attention_whole_us"] for c in cells) / _mean(c["decode_attention_us"] for c in cells)
        row = _row(f"{config}: decode attention >= {limit:.0f}x cheaper than the whole context at "
                   f"{length // 1024}K", f"keys {keys:.1f}x, time {time:.1f}x", keys >= limit and time >= limit)
        if length != LONG:  # judged on the long context; shorter ones (mostly unclustered window) are reported
            row[2] = "reported"
        kernel_cell = (kernel_cells or {}).get(f"{config}|{length}")
        if length == LONG and kernel_cell and "kernels_whole_us" in kernel_cell:
            row[2] = "reported"
            time = kernel_cell["kernels_whole_us"] / kernel_cell["kernels_lookup_us"]
            rows.append(row)
            row = _row(f"{config}: decode attention >= {limit:.0f}x cheaper than the whole context at "
                       f"{length // 1024}K (decode_kernels)", f"keys {keys:.1f}x, time {time:.1f}x "
                       f"({kernel_cell['kernels_whole_us']:.0f} / {kernel_cell['kernels_lookup_us']:.0f} us)",
                       keys >= limit and time >= limit)
        rows.append(row)
    return rows or [_row(f"{config}: decode attention >= {limit:.0f}x cheaper than the whole context", "", None)]


def target_rows(cells: list[dict], kernel_cells: dict | None = None) -> list[list[str]]:
    """The targets' rows from methods_compare cells (and decode_kernels cells, keyed method|length,
    for squeezed's decode time at 32K)."""
    index = _index(cells)
    rows = [_within_points(index, "squeezed", "dense", IN_WINDOW, 2.0,
                           "squeezed (1/8 budget) within 2 points of dense inside the window (4K, 8K)"),
            _passkey_at(index, "squeezed", LONG, 95.0),
            *_decode_cost(index, "squeezed", 4.0, kernel_cells)]
    # dense is compared inside its window (past it, both fail); infllm at every length both reached
    for quant, base in (("dense+int8", "dense"), ("infllm+int8", "infllm")):
        lengths = IN_WINDOW if base == "dense" else REPORTED_LENGTHS
        rows.append(_within_points(index, quant, base, lengths, 1.0, f"{quant}: <= 1 point lost vs {base}"))
        rows.append(_bytes_ratio(index, quant, base, lengths, 0.27, f"{quant}: KV bytes <= 0.27x of {base}"))
    for quant, base in (("dense+int4", "dense"), ("infllm+int4", "infllm")):
        lengths = IN_WINDOW if base == "dense" else REPORTED_LENGTHS
        loss = _within_points(index, quant, base, lengths, float("inf"), f"{quant}: accuracy lost vs {base} (reported)")
        rows.append([*loss[:2], "reported" if loss[1] else "not measured"])
        ratio = _bytes_ratio(index, quant, base, lengths, None, f"{quant}: KV bytes vs {base} (reported)")
        rows.append([*ratio[:2], "reported" if ratio[1] else "not measured"])
    for config in ("self_extend", "self_extend-g6", "self_extend-g16", "yarn", "yarn-t1"):
        rows.append(_passkey_at(index, config, LONG, 90.0))
        where = breaks_at(index, config)
        rows.append([f"{config}: where passkey falls below 90%", where, "reported" if where else "not measured"])
    return rows
