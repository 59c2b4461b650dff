"""Selection strategies: deterministic, exact when they select every block, question-aware at the end."""

import pytest
import torch
from references import FixedDistanceConfig

from longreach.methods.selection import SELECTORS
from tiny import all_logits, prompt_ids, tiny_hf_model, tiny_lm

SMALL = dict(n_local=32, n_init=4, block_size=8, topk_blocks=2, exec_block=16)


@pytest.mark.parametrize("selection", list(SELECTORS))
def test_deterministic(selection):
    model = tiny_hf_model("llama")
    ids = prompt_ids(200)
    runs = [tiny_lm(method="infllm", model=model, selection=selection, **SMALL).generate(ids, 6, trace=True)
            for _ in range(2)]
    assert runs[0].token_ids == runs[1].token_ids and runs[0].selections == runs[1].selections


@pytest.mark.parametrize("selection", list(SELECTORS))
def test_selecting_every_block_reproduces_fixed_distance_attention(selection):
    model = tiny_hf_model("llama")
    ids = prompt_ids(200)
    expected = all_logits(tiny_lm(method=FixedDistanceConfig(n_local=32), model=model), ids, 16)
    got = all_logits(tiny_lm(method="infllm", model=model, selection=selection,
                             **{**SMALL, "topk_blocks": 1000}), ids, 16)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("selection", list(SELECTORS))
def test_selecting_every_block_equals_dense_while_the_context_fits(selection):
    model = tiny_hf_model("llama")
    ids = prompt_ids(200)
    expected = all_logits(tiny_lm(model=model), ids, 200)
    got = all_logits(tiny_lm(method="infllm", model=model, selection=selection, n_local=224, n_init=4,
                             block_size=8, topk_blocks=1000, exec_block=32), ids, 32)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_question_selection_is_made_at_the_end_of_the_prompt_and_kept_for_decoding():
    lm = tiny_lm(method="infllm", selection="question", prefill_chunk=64, **SMALL)
    result = lm.generate(prompt_ids(200), max_new_tokens=4, trace=True)
    layer0 = [e for e in result.selections if e["layer"] == 0]
    final = [e for e in layer0 if e["queries"][1] == 199][0]
    decode = [e for e in layer0 if e["queries"][0] >= 200]
    assert decode and all(e["block_starts"] == final["block_starts"] for e in decode)


def test_question_selection_picks_the_blocks_the_question_attends_to():
    """Layer 0's queries depend only on the embeddings: recompute its choice by brute force."""
    lm = tiny_lm(method="infllm", selection="question", question_tokens=4, **SMALL)
    ids = prompt_ids(200)
    session = lm.new_session()
    session.prefill(ids, chunk=64)
    adapter, layer = lm.adapter, lm.adapter.layers[0]
    with torch.no_grad():
        hidden = layer.input_layernorm(adapter.embed_tokens(torch.tensor([ids[-4:]])))
        q = layer.self_attn.q_proj(hidden).view(1, 4, adapter.n_heads, adapter.head_dim).transpose(1, 2)
    q = adapter.rope.rotate_one(q, 32)
    memory = session.store[0].segments["memory"].keys.repeat_interleave(2, dim=1)  # [1, H, n, d]
    probs = torch.softmax(q @ memory.transpose(-1, -2) * adapter.scale, dim=-1)  # [1, H, 4, n]
    block_mass = probs.sum(dim=(0, 1, 2)).view(-1, 8).sum(-1)
    expected = block_mass.topk(2).indices.sort().values
    assert session.policy.selector.chosen[0].tolist() == expected.tolist()


def test_per_head_selection_gathers_per_kv_head():
    lm = tiny_lm(method="infllm", selection="question_per_head", **SMALL)
    result = lm.generate(prompt_ids(200), max_new_tokens=2, trace=True)
    final = [e for e in result.selections if e["queries"][1] == 199]
    assert final and all(len(e["block_starts"]) == 2 for e in final)  # Hkv = 2 lists
    assert all(isinstance(e["block_starts"][0], list) for e in final)
