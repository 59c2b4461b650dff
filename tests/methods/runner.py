"""The shared method runner: every method is checked for exactness, determinism and chunking."""

from __future__ import annotations

import torch

from tiny import all_logits, prompt_ids, tiny_hf_model, tiny_lm

# Options under which each method must equal dense on a 200-token input (context fits its window),
# and options that force it past its window.
WITHIN_WINDOW = {
    "dense": {},
    "streaming": {"n_sink": 4, "window": 256},
    "infllm": {"n_local": 224, "n_init": 4, "block_size": 8, "topk_blocks": 2, "exec_block": 32},
    "self_extend": {"window": 255, "group_size": 4},
    "snapkv": {"budget": 256, "obs_window": 8},
    "squeezed": {"positions": "true"},
}
BEYOND_WINDOW = {
    "dense": {},
    "streaming": {"n_sink": 4, "window": 40},
    "infllm": {"n_local": 32, "n_init": 4, "block_size": 8, "topk_blocks": 2, "exec_block": 16},
    "self_extend": {"window": 32, "group_size": 4},
    "snapkv": {"budget": 48, "obs_window": 8, "compress": "chunk", "positions": "renumbered"},
    "squeezed": {"n_local": 32, "n_init": 4, "block_size": 8, "topk_blocks": 2, "exec_block": 16},
}
# Chunk sizes for which the algorithm promises identical results beyond its window.
# (snapkv with compress=chunk compresses after each chunk: it depends on the chunk size by design.)
INVARIANT_CHUNKS = {"dense": [200, 64, 7, 1], "streaming": [200, 64, 7, 1], "infllm": [200, 64, 32, 16],
                    "self_extend": [200, 64, 7, 1], "snapkv": [64], "squeezed": [200, 64, 32, 16]}


def check_exact_within_window(method: str, arch: str = "llama") -> None:
    model = tiny_hf_model(arch)
    ids = prompt_ids(200)
    expected = all_logits(tiny_lm(arch, model=model), ids, 200)
    for chunk in (200, 64, 7, 1):
        got = all_logits(tiny_lm(arch, method, model=model, **WITHIN_WINDOW[method]), ids, chunk)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def check_deterministic(method: str) -> None:
    model = tiny_hf_model("llama")
    ids = prompt_ids(200)
    first = all_logits(tiny_lm(method=method, model=model, **BEYOND_WINDOW[method]), ids, 64)
    second = all_logits(tiny_lm(method=method, model=model, **BEYOND_WINDOW[method]), ids, 64)
    assert torch.equal(first, second)


def check_chunk_invariant(method: str) -> None:
    model = tiny_hf_model("llama")
    ids = prompt_ids(200)
    chunks = INVARIANT_CHUNKS[method]
    reference = all_logits(tiny_lm(method=method, model=model, **BEYOND_WINDOW[method]), ids, chunks[0])
    for chunk in chunks[1:]:
        got = all_logits(tiny_lm(method=method, model=model, **BEYOND_WINDOW[method]), ids, chunk)
        torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-5)
