"""The shared method runner: every method is checked for exactness, determinism and chunking.

Every run takes the engine's own path (`engine_logits`): a 176-token document prefilled as a fixed
context (final=False), a 24-token question that ends the prompt, then 4 forced decoding steps; the
logits of every position are compared. The engine's phases and `end_prefill` are what make squeezed
cluster the document and snapkv (compress=end) compress once the question is in, so each check
first asserts that the method really acted: no comparison may silently be dense against dense.
"""

from __future__ import annotations

import torch

from tiny import engine_logits, prompt_ids, tiny_hf_model, tiny_lm

DOCUMENT, QUESTION, DECODE = prompt_ids(176), prompt_ids(24, seed=2), [5, 77, 3, 120]
SMALL_INFLLM = {"n_local": 32, "n_init": 4, "block_size": 8, "topk_blocks": 2, "exec_block": 16}

# Options under which each method must equal dense on this input (the context fits its window).
WITHIN_WINDOW = {
    "dense": {},
    "streaming": {"n_sink": 4, "window": 256},
    "infllm": {"n_local": 224, "n_init": 4, "block_size": 8, "topk_blocks": 2, "exec_block": 32},
    "self_extend": {"window": 255, "group_size": 4},
    "snapkv": {"budget": 256, "obs_window": 8},
    # every cluster read (budget 1.0) at true positions: exact attention over the clustered document
    "squeezed": {"positions": "true", "budget": 1.0, "cluster_size": 4, "obs_window": 8},
}
# Options that force each method past its window, by label ("method" or "method:variant").
BEYOND_WINDOW = {
    "dense": {},
    "streaming": {"n_sink": 4, "window": 40},
    "infllm": SMALL_INFLLM,
    "self_extend": {"window": 32, "group_size": 4},
    "snapkv": {"budget": 48, "obs_window": 8, "compress": "end"},
    "snapkv:chunk": {"budget": 48, "obs_window": 8, "compress": "chunk", "positions": "renumbered"},
    "squeezed": {"budget": 0.125, "cluster_size": 4, **SMALL_INFLLM},
}
# Chunk sizes for which the algorithm promises identical results beyond its window (every label
# but snapkv:chunk, which compresses after each chunk and so depends on the chunk size by design).
# infllm retrieves once per execution block of 16 queries, counted from each chunk's start: only
# chunks that are multiples of 16 (or the whole input) cut the same blocks. squeezed prefills its
# document with that InfLLM; its lookup, after the document, is per query.
INVARIANT_CHUNKS = {"dense": [200, 64, 7, 1], "streaming": [200, 64, 7, 1], "infllm": [200, 64, 32, 16],
                    "self_extend": [200, 64, 7, 1], "snapkv": [200, 64, 7, 1], "squeezed": [200, 64, 32, 16]}


def method_of(label: str) -> str:
    return label.split(":")[0]


def run(lm, chunk: int):
    """(logits [204, V], session) of the document, question and decoding steps in chunks of `chunk`."""
    return engine_logits(lm, DOCUMENT, QUESTION, DECODE, chunk)


def assert_acted_beyond_window(label: str, session) -> None:
    """What shows, in the session's store, that the method went past its window in this run."""
    method, policy, layer = method_of(label), session.policy, session.store[0]
    config = getattr(policy, "config", None)
    if method == "streaming":
        assert len(layer.segments["window"]) == config.window  # older tokens were evicted
    elif method == "infllm":
        assert len(layer.segments["memory"]) > config.topk_blocks * config.block_size  # blocks were chosen
    elif method == "self_extend":
        assert len(layer.buffers["grouped"]) > 0  # far keys were read at grouped positions
    elif method == "snapkv":
        assert [len(layer.segments[f"kept.{h}"]) for h in range(2)] == [config.budget - config.obs_window] * 2
    elif method == "squeezed":  # the document was clustered and each decoding step read part of it
        assert policy.clustered() and 0 < policy.touched["selected"] < policy.touched["context"]


def check_exact_within_window(method: str, arch: str = "llama") -> None:
    model = tiny_hf_model(arch)
    expected, _ = run(tiny_lm(arch, model=model), 200)
    for chunk in (200, 64, 7, 1):
        got, session = run(tiny_lm(arch, method, model=model, **WITHIN_WINDOW[method]), chunk)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    if method == "squeezed":  # exact through the lookup: the document was clustered, every key read
        touched = session.policy.touched
        assert session.policy.clustered() and touched["selected"] == touched["context"] > 0


def check_deterministic(label: str) -> None:
    model = tiny_hf_model("llama")
    first, session = run(tiny_lm(method=method_of(label), model=model, **BEYOND_WINDOW[label]), 64)
    second, _ = run(tiny_lm(method=method_of(label), model=model, **BEYOND_WINDOW[label]), 64)
    assert torch.equal(first, second)
    assert_acted_beyond_window(label, session)
    if label != "dense":  # past its window the method approximates: the answer's logits move
        dense, _ = run(tiny_lm(model=model), 64)
        answer = slice(len(DOCUMENT) + len(QUESTION) - 1, None)
        assert not torch.allclose(first[answer], dense[answer], atol=1e-3)


def check_chunk_invariant(label: str) -> None:
    model = tiny_hf_model("llama")
    chunks = INVARIANT_CHUNKS[label]
    assert len(chunks) >= 2, "an invariance needs at least two chunk sizes to compare"
    reference, session = run(tiny_lm(method=method_of(label), model=model, **BEYOND_WINDOW[label]), chunks[0])
    assert_acted_beyond_window(label, session)
    for chunk in chunks[1:]:
        got, _ = run(tiny_lm(method=method_of(label), model=model, **BEYOND_WINDOW[label]), chunk)
        torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-5)
