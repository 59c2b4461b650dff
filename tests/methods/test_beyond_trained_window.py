"""Inputs longer than the tiny model's trained window (256 positions): 484 through the engine's path.

Each method that promises to read past the window runs, is deterministic, and keeps the rotary
positions it applies where it says. snapkv's renumbered positions are absolute, so the rotations its
policy asks for are recorded. squeezed and self_extend rotate queries and keys at true positions and
keep the *distances* in range by masks, so they are compared with brute-force references whose
matrix of (query, key) distances is explicit.
"""

import pytest
import torch
from references import FixedDistanceConfig, SelfExtendReferenceConfig
from runner import assert_acted_beyond_window

from tiny import engine_logits, prompt_ids, tiny_hf_model, tiny_lm

DOCUMENT, QUESTION, DECODE = prompt_ids(456, seed=5), prompt_ids(24, seed=6), [5, 77, 3, 120]
SMALL_INFLLM = {"n_local": 32, "n_init": 4, "block_size": 8, "topk_blocks": 2, "exec_block": 16}
LONG = {
    "squeezed": {"budget": 0.125, "cluster_size": 4, **SMALL_INFLLM},  # positions=infllm
    "self_extend": {"window": 32, "group_size": 4},
    "snapkv": {"budget": 48, "obs_window": 8, "positions": "renumbered", "compress": "chunk"},
}


@pytest.fixture(scope="module")
def model():
    return tiny_hf_model()


def _run(lm, chunk=64, session=None):
    return engine_logits(lm, DOCUMENT, QUESTION, DECODE, chunk, session)


class RecordingRope:
    """A policy's RoPE that notes, for every rotation it is asked for, the phase and the positions."""

    def __init__(self, policy):
        self.policy, self.rope, self.calls = policy, policy.rope, []

    def __getattr__(self, name):
        return getattr(self.rope, name)

    def rotate(self, x, positions):
        self.calls.append((self.policy.phase, positions.clone()))
        return self.rope.rotate(x, positions)

    def rotate_one(self, x, position):
        self.calls.append((self.policy.phase, torch.tensor([position])))
        return self.rope.rotate_one(x, position)

    def highest(self, decode: bool) -> int:
        return max(int(p.max()) for phase, p in self.calls if (phase == "decode") == decode and p.numel())


@pytest.mark.parametrize("method", list(LONG))
def test_runs_past_the_trained_window_deterministically(model, method):
    lm = tiny_lm(method=method, model=model, **LONG[method])
    first, session = _run(lm)
    second, _ = _run(lm)
    assert session.position == len(DOCUMENT) + len(QUESTION) + len(DECODE) > lm.adapter.trained_window
    assert first.shape == (session.position, 128) and bool(first.isfinite().all())
    assert torch.equal(first, second)
    assert_acted_beyond_window(method, session)  # clustered, grouped, compressed


def test_snapkv_renumbered_positions_stay_below_the_budget_plus_a_chunk_then_plus_the_generated(model):
    """compress=chunk with renumbered positions: the prefill never rotates at budget + chunk or beyond,
    decoding never at budget + generated or beyond, whatever the input length."""
    options = LONG["snapkv"]
    lm = tiny_lm(method="snapkv", model=model, **options)
    session = lm.new_session()
    rope = session.policy.rope = RecordingRope(session.policy)
    _run(lm, chunk=64, session=session)
    budget, kept = options["budget"], options["budget"] - options["obs_window"]
    assert rope.highest(decode=False) < budget + 64 < lm.adapter.trained_window
    assert rope.highest(decode=True) == budget + len(DECODE) - 1
    for layer in session.store.layers:
        assert all(torch.equal(layer.segments[f"kept.{h}"].positions, torch.arange(kept)) for h in range(2))
        assert torch.equal(layer.segments["tokens"].positions, torch.arange(kept, budget + len(DECODE)))


@pytest.mark.parametrize("method,options,reference", [
    ("squeezed", {**SMALL_INFLLM, "topk_blocks": 1000, "budget": 1.0, "cluster_size": 4},
     FixedDistanceConfig(n_local=32)),
    ("self_extend", LONG["self_extend"], SelfExtendReferenceConfig(group=4, window=32)),
])
def test_rotary_distances_stay_inside_the_trained_window(model, method, options, reference):
    """Every block and cluster read, each method equals its reference: its logits come from the same
    (query, key) distances, and the longest of those stays inside the trained window (squeezed: n_local;
    self_extend: the grouped distance (p // G + W - W // G) - t // G, at most 144 here)."""
    got, session = _run(tiny_lm(method=method, model=model, **options))
    reference_lm = tiny_lm(method=reference, model=model)
    expected, reference_session = _run(reference_lm)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    positions = torch.arange(session.position)
    distance = reference_session.policy.rotary_distance(positions, positions)
    causal = distance[positions[:, None] >= positions[None, :]]
    longest = {"squeezed": 32, "self_extend": (session.position - 1) // 4 + 32 - 32 // 4}[method]
    assert int(causal.max()) == longest < reference_lm.adapter.trained_window
