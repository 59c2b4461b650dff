"""Needle-block recall: did a block-memory method read the blocks that hold the answer?

The engine's trace (`generate(..., trace=True)`) records every retrieval. For tasks whose
answer location is known (a needle's token span), each retrieval made while needle tokens
sat in memory blocks is checked: which of those blocks were selected.
"""

from __future__ import annotations

from collections import defaultdict


def _needle_blocks(span: tuple[int, int], memory: tuple[int, int], block_size: int) -> set[int]:
    first, end = memory
    return {first + (p - first) // block_size * block_size
            for p in range(max(span[0], first), min(span[1], end))}


def needle_block_recall(selections: list[dict], needle_spans: list[tuple[int, int]],
                        from_position: int = 0) -> dict:
    """Recall of needle blocks, per layer and averaged.

    Args:
        selections: `GenerationResult.selections` (the trace).
        needle_spans: token ranges [start, end) of the needles in the prompt.
        from_position: count only retrievals whose last query is at or after this position
            (e.g. the prompt's last token: the retrievals that answer the question).
    Returns:
        {"recall": mean over layers, "per_layer": {layer: recall}, "events": count}; recall is
        None when no retrieval saw a needle in memory.
    """
    hits, totals = defaultdict(float), defaultdict(int)
    for event in selections:
        if event["queries"][1] < from_position:
            continue
        wanted = set()
        for span in needle_spans:
            wanted |= _needle_blocks(span, event["memory_span"], event["block_size"])
        if not wanted:
            continue
        chosen = event["block_starts"]
        if chosen and isinstance(chosen[0], list):  # one choice per KV head: each must read the needle
            recall = sum(len(wanted & set(head)) for head in chosen) / (len(wanted) * len(chosen))
        else:
            recall = len(wanted & set(chosen)) / len(wanted)
        hits[event["layer"]] += recall
        totals[event["layer"]] += 1
    per_layer = {layer: hits[layer] / totals[layer] for layer in sorted(totals)}
    mean = sum(per_layer.values()) / len(per_layer) if per_layer else None
    return {"recall": mean, "per_layer": per_layer, "events": sum(totals.values())}
