"""Selection strategies: deterministic, exact when they select every block, question-aware at the end."""

from types import SimpleNamespace

import pytest
import torch
from references import FixedDistanceConfig

from longreach.kv import KVStore, QuantSpec
from longreach.methods.selection import SELECTORS, SelectionRequest, block_mass_z, block_match_z, consensus
from tiny import all_logits, prompt_ids, tiny_hf_model, tiny_lm

SMALL = dict(n_local=32, n_init=4, block_size=8, topk_blocks=2, exec_block=16)


@pytest.mark.parametrize("selection", [*SELECTORS, "question_global:match"])
def test_deterministic(selection):
    model = tiny_hf_model("llama")
    ids = prompt_ids(200)
    selection, _, score = selection.partition(":")
    options = {**SMALL, "question_score": score} if score else SMALL
    runs = [tiny_lm(method="infllm", model=model, selection=selection, **options).generate(ids, 6, trace=True)
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


@pytest.mark.parametrize("selection", ["paper", "question_global"])
def test_packed_memory_reading_every_block_is_dense_attention(selection):
    """Packed positions keep each token's true distance when nothing is left out."""
    model = tiny_hf_model("llama")
    ids = prompt_ids(200)
    expected = all_logits(tiny_lm(model=model), ids, 200)
    got = all_logits(tiny_lm(method="infllm", model=model, selection=selection, memory_positions="packed",
                             **{**SMALL, "topk_blocks": 1000}), ids, 16)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def _request(q, keys, topk=2, block_size=4):
    return SelectionRequest(layer=0, q_global=q, memory_keys=keys, reprs=None, topk=topk,
                            block_size=block_size, scale=1.0, phase="final", last_block_of_chunk=True)


def test_block_match_z_is_each_heads_best_logit_per_block_standardised():
    torch.manual_seed(0)
    q, keys = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 40, 8)  # H=4, Hkv=2, 10 blocks of 4
    got = block_match_z(_request(q, keys), n_queries=3, key_chunk=12)
    expanded = keys[0].repeat_interleave(2, dim=0)  # [H, n, d]
    best = torch.einsum("hqd,hnd->hqn", q[0, :, -3:], expanded).amax(dim=1).view(4, 10, 4).amax(-1)
    expected = (best - best.median(dim=1, keepdim=True).values) / best.std(dim=1, keepdim=True)
    torch.testing.assert_close(got, expected)


def test_block_mass_z_is_each_heads_best_query_z_of_log_block_mass():
    torch.manual_seed(0)
    q, keys = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 40, 8)  # H=4, Hkv=2, 10 blocks of 4
    request = _request(q, keys)
    request.scale = 0.5
    got = block_mass_z(request, n_queries=3, key_chunk=12)
    expanded = keys[0].repeat_interleave(2, dim=0)  # [H, n, d]
    logits = torch.einsum("hqd,hnd->hqn", q[0, :, -3:], expanded) * 0.5  # [H, 3, 40]
    mass = logits.view(4, 3, 10, 4).exp().sum(-1).log()  # [H, queries, blocks]
    z = (mass - mass.median(dim=-1, keepdim=True).values) / mass.std(dim=-1, keepdim=True)
    torch.testing.assert_close(got, z.amax(dim=1))


@pytest.mark.parametrize("score", [block_match_z, block_mass_z])
def test_block_scores_read_a_stored_memory_in_parts_and_any_chunk_size(score):
    """Keys adopted from a stored context plus keys evicted since score as one memory."""
    torch.manual_seed(0)
    q, keys = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 48, 8)  # 12 blocks of 4
    expected = score(_request(q, keys), n_queries=3)
    memory = KVStore(1, 2, 8, torch.float32, "cpu")[0].segment("memory")
    memory.load_state_dict({"keys": keys[:, :, :32], "values": keys[:, :, :32], "positions": torch.arange(32)})
    memory.append(keys[:, :, 32:], keys[:, :, 32:], torch.arange(32, 48))
    request = _request(q, None)
    request.memory = memory
    assert [run.shape[2] for run in request.key_runs(8)] == [8, 8, 8, 8, 8, 8] and request.n_tokens == 48
    for chunk in (10, 8, 4096):  # 10 is not a multiple of the block size
        torch.testing.assert_close(score(request, n_queries=3, key_chunk=chunk), expected)
    assert len(memory.key_parts()) == 2  # scoring did not join the parts


def test_consensus_follows_the_few_heads_that_single_out_a_block():
    z = torch.zeros(3, 9, 20)
    z[:, :, 4] = 0.8  # every head mildly likes block 4
    z[1, 6, 11], z[2, 7, 11] = 4.5, 4.0  # two retrieval heads point at block 11
    assert consensus(z, heads=3).argmax().item() == 11


def test_question_global_every_layer_reads_one_choice_from_the_last_prompt_token():
    lm = tiny_lm(method="infllm", selection="question_global", prefill_chunk=64, **SMALL)
    result = lm.generate(prompt_ids(200), max_new_tokens=4, trace=True)
    answer = [e for e in result.selections if e["queries"][0] >= 199]
    assert {e["queries"] for e in answer} >= {(199, 199), (200, 200)}  # the last prompt token, replayed
    assert len({tuple(e["block_starts"]) for e in answer}) == 1
    before = [e for e in result.selections if e["queries"][1] == 198]
    assert len({tuple(e["block_starts"]) for e in before}) > 1  # the prompt's end: each layer its own


def test_question_global_keeps_reading_blocks_evicted_after_the_question_scored():
    torch.manual_seed(0)
    q, keys = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 48, 8)  # 12 blocks of 4
    selector = SELECTORS["question_global"](SimpleNamespace(question_tokens=3, question_score="mass"))
    scored = _request(q, keys[:, :, :40])  # the question saw 10 blocks in memory
    chosen = selector.select(scored)
    decode = _request(q, keys)
    decode.phase = "decode"  # two more blocks were evicted from the window since
    got = selector.select(decode)
    assert got[-2:].tolist() == [10, 11] and len(got) == scored.topk + 2
    assert set(chosen.tolist()) <= set(range(10)) and set(got[:-2].tolist()) <= set(range(10))


def test_cluster_scores_equal_exact_key_scores_when_every_key_is_its_own_centroid():
    torch.manual_seed(0)
    q, keys = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 40, 8)  # 10 blocks of 4 keys
    config = SimpleNamespace(repr_tokens=4, question_tokens=3)
    selector = SELECTORS["cluster"](config)
    scores = torch.zeros(4, 1, 4)
    reprs = torch.stack([selector.representative(keys[:, :, b * 4:(b + 1) * 4], scores) for b in range(10)])
    request = _request(q, keys)
    request.reprs = reprs  # [n, B, H, r, d]
    torch.testing.assert_close(selector.question_z(request), block_match_z(request, n_queries=3))


@pytest.mark.parametrize("score", [block_match_z, block_mass_z])
def test_block_scores_of_a_quantized_memory_are_those_of_its_dequantized_keys(score):
    torch.manual_seed(0)
    q, keys = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 64, 8)  # 16 blocks of 4
    store = KVStore(1, 2, 8, torch.float32, "cpu", quant=QuantSpec(8, 8))
    memory = store[0].segment("memory")
    memory.append(keys[:, :, :40], keys[:, :, :40], torch.arange(40))
    restored = KVStore(1, 2, 8, torch.float32, "cpu", quant=QuantSpec(8, 8))[0].segment("memory")
    restored.load_state_dict({name: t.clone() for name, t in memory.state_dict().items()})
    restored.append(keys[:, :, 40:], keys[:, :, 40:], torch.arange(40, 64))
    assert type(restored).__name__ == "QuantizedSegment" and not torch.equal(restored.keys, keys)
    expected = score(_request(q, restored.keys), n_queries=3)
    request = _request(q, None)
    request.memory = restored
    for chunk in (8, 12, 4096):
        torch.testing.assert_close(score(request, n_queries=3, key_chunk=chunk), expected)
