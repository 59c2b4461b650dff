import pytest
import torch
from references import FixedDistanceConfig

from longreach.errors import LongreachError
from longreach.methods import method_config
from longreach.methods.infllm import _representatives
from tiny import all_logits, prompt_ids, tiny_hf_model, tiny_lm

SMALL = dict(n_local=32, n_init=4, block_size=8, topk_blocks=2, exec_block=16)


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_all_blocks_retrieved_equals_fixed_distance_attention(arch):
    """With every block retrieved, InfLLM is exact attention with memory at distance n_local."""
    model = tiny_hf_model(arch)
    ids = prompt_ids(200)
    expected = all_logits(tiny_lm(arch, FixedDistanceConfig(n_local=32), model=model), ids, 16)
    got = all_logits(tiny_lm(arch, "infllm", model=model, **{**SMALL, "topk_blocks": 1000}), ids, 16)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_retrieves_topk_blocks_per_execution_block():
    lm = tiny_lm(method="infllm", **SMALL)
    result = lm.generate(prompt_ids(200), max_new_tokens=3, trace=True)
    assert result.selections, "the trace records selections"
    scored_end = max(s["memory_span"][1] for s in result.selections if s["queries"][1] == 198)
    for selection in result.selections:
        starts, (first, end) = selection["block_starts"], selection["memory_span"]
        expected = min(2, (end - first) // 8)  # distinct, topk or all
        if selection["queries"][0] >= 199:  # answer steps also read blocks evicted since the question
            assert set(range(scored_end, end, 8)) <= set(starts)
            expected += (end - scored_end) // 8
        assert len(set(starts)) == len(starts) == expected
        assert all(start % 8 == 4 and first <= start < end for start in starts)  # blocks after the 4 sinks
    # 200 prompt tokens + 3 decoded: 4 init, 32..39 local+remainder, the rest in blocks of 8
    session = lm.new_session()
    session.prefill(prompt_ids(200), chunk=16)
    layer = session.store[0]
    assert len(layer.segments["init"]) == 4
    assert len(layer.segments["memory"]) % 8 == 0
    assert len(layer.segments["init"]) + len(layer.segments["memory"]) + len(layer.segments["recent"]) == 200
    assert 32 <= len(layer.segments["recent"]) < 40
    assert layer.buffers["repr"].data.shape[0] == len(layer.segments["memory"]) // 8


def test_memory_blocks_live_on_the_offload_tier():
    lm = tiny_lm(method="infllm", **SMALL)
    session = lm.new_session()
    session.prefill(prompt_ids(200), chunk=16)
    assert "memory" in session.store[0].offloaded
    assert session.store[0].segments["memory"].device == session.store.offload_device


def test_representative_is_mean_of_most_attended_keys():
    lm = tiny_lm(method="infllm", **{**SMALL, "repr_tokens": 8})  # all keys of the block
    session = lm.new_session()
    session.prefill(prompt_ids(100), chunk=16)
    layer = session.store[0]
    first_block = layer.segments["memory"].keys[:, :, :8]  # [B, Hkv, 8, d]
    expected = first_block.repeat_interleave(2, dim=1).mean(dim=2)  # H = 2 * Hkv
    torch.testing.assert_close(layer.buffers["repr"].data[0], expected)


def test_a_quantized_store_keeps_int8_representatives():
    """With int8 KV the representatives are int8 too (codes, float16 scale and zero per vector),
    read back within a quantization step of the mean of the block's keys."""
    lm = tiny_lm(method="infllm", kv_quant="int8", kv_group=8, **{**SMALL, "repr_tokens": 8})
    session = lm.new_session()
    session.prefill(prompt_ids(100), chunk=16)
    layer = session.store[0]
    assert "repr" not in layer.buffers and layer.buffers["repr_codes"].data.dtype == torch.uint8
    representatives = _representatives(layer)
    assert representatives.shape[0] == len(layer.segments["memory"]) // 8
    expected = layer.segments["memory"].keys[:, :, :8].repeat_interleave(2, dim=1).mean(dim=2)
    step = (expected.amax(-1) - expected.amin(-1)) / 255
    assert ((representatives[0] - expected).abs() <= step[..., None] * 0.5 + 0.02).all()


def test_float_representatives_of_an_older_quantized_context_are_read():
    from longreach.kv import KVStore
    from longreach.kv.quant import QuantSpec
    layer = KVStore(1, 2, 8, torch.float32, "cpu", quant=QuantSpec(8, 8))[0]
    layer.buffer("repr", torch.zeros(1, 1, 4, 8)).append(torch.ones(3, 1, 4, 8))
    assert torch.equal(_representatives(layer), torch.ones(3, 1, 4, 8))


@pytest.mark.parametrize("repr_score", ["attention", "dot"])
def test_both_representative_scores_run_and_differ_from_dense(repr_score):
    model = tiny_hf_model("llama")
    ids = prompt_ids(200)
    dense = all_logits(tiny_lm(model=model), ids, 16)
    got = all_logits(tiny_lm(method="infllm", model=model, repr_score=repr_score, **SMALL), ids, 16)
    torch.testing.assert_close(got[:32], dense[:32], rtol=1e-4, atol=1e-5)  # within the local window
    assert not torch.allclose(got[-1], dense[-1], atol=1e-3)  # beyond it, memory is approximate


def test_option_validation():
    with pytest.raises(LongreachError, match="repr_tokens"):
        method_config("infllm", {"repr_tokens": 0})
    with pytest.raises(LongreachError, match="selection"):
        method_config("infllm", {"selection": "magic"})
    with pytest.raises(LongreachError, match="exceeds the model's trained window"):
        tiny_lm(method="infllm", n_local=250, exec_block=16).new_session()
    with pytest.raises(LongreachError, match="exec_block"):
        tiny_lm(method="infllm", n_local=8, exec_block=16).new_session()


def test_default_local_window_is_a_sixteenth_of_the_trained_window():
    session = tiny_lm(method="infllm").new_session()
    assert session.policy.n_local == 256 // 16 and session.policy.exec_block == 16  # exec_block <= n_local
