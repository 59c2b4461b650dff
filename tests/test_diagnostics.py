from longreach.diagnostics import needle_block_recall
from tiny import prompt_ids, tiny_lm

SMALL = dict(n_local=32, n_init=4, block_size=8, topk_blocks=2, exec_block=16)


def test_counts_a_constructed_case():
    memory = (4, 68)  # blocks start at 4, 12, 20, ...
    selections = [
        {"layer": 0, "queries": (100, 115), "block_starts": [12, 28], "block_size": 8, "memory_span": memory},
        {"layer": 0, "queries": (116, 131), "block_starts": [4, 28], "block_size": 8, "memory_span": memory},
        {"layer": 1, "queries": (116, 131), "block_starts": [[12, 20], [4, 36]], "block_size": 8,
         "memory_span": memory},
        {"layer": 1, "queries": (10, 20), "block_starts": [4], "block_size": 8, "memory_span": (4, 12)},
    ]
    needle = [(14, 22)]  # tokens 14..21: blocks starting at 12 and 20
    result = needle_block_recall(selections, needle)
    assert result["per_layer"] == {0: (0.5 + 0.0) / 2, 1: 0.5 / 1}  # layer 1, head 0 has both, head 1 none
    assert result["events"] == 3  # the last event had the needle outside memory
    assert result["recall"] == (0.25 + 0.5) / 2
    assert needle_block_recall(selections, needle, from_position=120)["events"] == 2


def test_trace_is_off_by_default_and_selecting_everything_gives_full_recall():
    lm = tiny_lm(method="infllm", **{**SMALL, "topk_blocks": 100})
    ids = prompt_ids(200)
    assert lm.generate(ids, max_new_tokens=2).selections is None
    traced = lm.generate(ids, max_new_tokens=2, trace=True)
    assert needle_block_recall(traced.selections, [(40, 48)])["recall"] == 1.0
