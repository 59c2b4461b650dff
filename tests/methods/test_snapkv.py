import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig

from longreach.kv import KVStore
from longreach.methods import MethodContext, method_config
from longreach.rope import RotaryEmbedding
from tiny import prompt_ids, tiny_hf_model, tiny_lm

H, HKV, D, N, WINDOW, BUDGET = 4, 2, 16, 100, 8, 40


def _policy(**options):
    config = LlamaConfig(hidden_size=H * D, num_attention_heads=H, max_position_embeddings=256)
    rope = RotaryEmbedding(config, D)
    store = KVStore(1, HKV, D, torch.float32, "cpu")
    ctx = MethodContext(n_layers=1, n_heads=H, n_kv_heads=HKV, head_dim=D, scale=D ** -0.5,
                        trained_window=256, rope=rope, store=store, device=torch.device("cpu"))
    config = method_config("snapkv", {"budget": BUDGET, "obs_window": WINDOW, **options})
    return config.build(ctx), rope


def _inputs(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, H, n, D, generator=g), torch.randn(1, HKV, n, D, generator=g) * 2,
            torch.randn(1, HKV, n, D, generator=g))


def _probabilities(rope, q, k, scale):
    """Causal softmax of every query over every key: [H, n, n]."""
    positions = torch.arange(q.shape[2])
    keys = rope.rotate(k, positions).repeat_interleave(H // HKV, 1)
    logits = rope.rotate(q, positions) @ keys.transpose(-1, -2)
    mask = torch.ones(len(positions), len(positions), dtype=torch.bool).tril()
    return torch.softmax((logits * scale).masked_fill(~mask, float("-inf")), -1)[0]


def _expected_kept(score, probabilities):
    prefix = N - WINDOW
    if score == "snapkv":
        votes = probabilities[:, -WINDOW:, :prefix].sum(1)
        votes = F.max_pool1d(votes.view(HKV, H // HKV, prefix).sum(1)[:, None], 7, 1, 3)[:, 0]
    elif score == "h2o":
        votes = probabilities[:, :, :prefix].sum(1).view(HKV, H // HKV, prefix).sum(1)
    else:
        votes = probabilities[:, -1, :prefix].view(HKV, H // HKV, prefix).sum(1)
    return votes.topk(BUDGET - WINDOW, dim=-1).indices.sort(dim=-1).values


@pytest.mark.parametrize("score", ["snapkv", "h2o", "tova"])
@torch.inference_mode()
def test_kept_tokens_match_brute_force_scores_and_decode_attends_them(score):
    policy, rope = _policy(score=score)
    q, k, v = _inputs()
    for a in range(0, N, 30):  # chunked prefill
        b = min(a + 30, N)
        policy.phase = "final" if b == N else "prefill"  # as the session marks the prompt's last chunk
        policy.attend(0, q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], torch.arange(a, b))
    policy.end_prefill()
    expected = _expected_kept(score, _probabilities(rope, q, k, policy.ctx.scale))
    layer = policy.store[0]
    for h in range(HKV):
        assert torch.equal(layer.segments[f"kept.{h}"].positions, expected[h])
    assert len(layer.segments["tokens"]) == WINDOW  # budget = kept + window, exactly

    q1, k1, v1 = _inputs(1, seed=1)
    out = policy.attend(0, q1, k1, v1, torch.tensor([N]))
    for h in range(HKV):
        index = torch.cat((expected[h], torch.arange(N - WINDOW, N)))
        at = torch.cat((index, torch.tensor([N])))
        keys = rope.rotate(torch.cat((k[:, h:h + 1, index], k1[:, h:h + 1]), 2), at)
        values = torch.cat((v[:, h:h + 1, index], v1[:, h:h + 1]), 2)
        query = rope.rotate(q1[:, 2 * h:2 * h + 2], torch.tensor([N]))
        reference = torch.softmax(query @ keys.transpose(-1, -2) * policy.ctx.scale, -1) @ values
        torch.testing.assert_close(out[:, 2 * h:2 * h + 2], reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("positions", ["original", "renumbered"])
@pytest.mark.parametrize("compress", ["end", "chunk"])
def test_budget_is_honoured_exactly_per_kv_head(positions, compress):
    lm = tiny_lm(method="snapkv", budget=48, obs_window=8, positions=positions, compress=compress,
                 first_token="full")  # the prompt's last token is then part of the compressed prefill
    session = lm.new_session()
    session.prefill(prompt_ids(200), chunk=32)
    for layer in session.store.layers:
        kept = [layer.segments[f"kept.{h}"] for h in range(2)]
        assert [len(s) for s in kept] == [40, 40] and len(layer.segments["tokens"]) == 8
        assert all(s.keys.shape[1] == 1 for s in kept)  # one head each: GQA keeps its saving
        if positions == "renumbered":
            assert torch.equal(kept[0].positions, torch.arange(40))
            assert torch.equal(layer.segments["tokens"].positions, torch.arange(40, 48))
    session.step(3)
    assert len(session.store[0].segments["tokens"]) == 9  # generated tokens are not compressed


def test_compressed_memory_survives_a_save_and_load():
    lm = tiny_lm(method="snapkv", budget=48, obs_window=8, kv_quant="int8")
    session = lm.new_session()
    session.prefill(prompt_ids(200), chunk=64)
    restored = lm.new_session()
    restored.store.load_state_dict(session.store.state_dict())
    restored.position = session.position
    torch.testing.assert_close(restored.step(5), session.step(5))


def test_rejects_bad_options():
    from longreach.errors import LongreachError
    with pytest.raises(LongreachError, match="obs_window"):
        method_config("snapkv", {"budget": 8, "obs_window": 8})
    with pytest.raises(LongreachError, match="kernel"):
        method_config("snapkv", {"kernel": 4})


def test_a_stored_document_waits_for_its_question_before_compressing():
    lm = tiny_lm(method="snapkv", budget=48, obs_window=8, first_token="full")
    session = lm.new_session()
    session.prefill(prompt_ids(200), chunk=64, final=False)
    assert len(session.store[0].segments["tokens"]) == 200 and not len(session.store[0].segments["kept.0"])
    session.prefill(prompt_ids(10, seed=2), chunk=64)  # the question: now compressed, question-aware
    assert len(session.store[0].segments["kept.0"]) == 40 and len(session.store[0].segments["tokens"]) == 8


def test_the_first_answer_token_reads_the_compressed_memory():
    """Default: the prompt's last token is fed after compression, as a decoding step; `full` (the
    official code) predicts the first token from the uncompressed prefill."""
    ids = prompt_ids(200)
    compressed = tiny_lm(method="snapkv", budget=48, obs_window=8)
    session = compressed.new_session()
    first = session.prefill(ids, chunk=64)
    assert len(session.store[0].segments["kept.0"]) == 40 and len(session.store[0].segments["tokens"]) == 9
    by_hand = tiny_lm(method="snapkv", budget=48, obs_window=8, first_token="full").new_session()
    by_hand.prefill(ids[:-1], chunk=64)  # compressed at its end
    torch.testing.assert_close(first, by_hand.step(ids[-1]))
    full = tiny_lm(method="snapkv", budget=48, obs_window=8, first_token="full").new_session()
    dense = tiny_lm().new_session()
    torch.testing.assert_close(full.prefill(ids, chunk=64), dense.prefill(ids, chunk=64), rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="first_token"):
        method_config("snapkv", {"first_token": "later"})


def test_compressing_at_the_end_does_not_depend_on_the_prefill_chunk():
    model = tiny_hf_model()
    ids = prompt_ids(200)
    runs = []
    for chunk in (200, 64, 7):
        session = tiny_lm(method="snapkv", model=model, budget=48, obs_window=8).new_session()  # compress=end
        logits = [session.prefill(ids, chunk=chunk)]
        for _ in range(5):
            logits.append(session.step(int(logits[-1].argmax())))
        kept = session.store[0].segments["tokens"].positions
        runs.append((torch.stack(logits), kept))
    for logits, kept in runs[1:]:
        assert torch.equal(kept, runs[0][1])
        torch.testing.assert_close(logits, runs[0][0], rtol=1e-4, atol=1e-5)
