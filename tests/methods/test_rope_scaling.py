import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from longreach.errors import LongreachError
from longreach.methods import method_config
from longreach.rope import RotaryEmbedding
from longreach.rope_scaling import scaled_rope, scaling_factor
from tiny import all_logits, prompt_ids, tiny_hf_model, tiny_lm


def _config(**rope):
    return LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=256,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0, **rope})


@pytest.mark.parametrize("kind,params", [
    ("linear", {"rope_type": "linear", "factor": 4.0}),
    ("yarn", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}),
])
def test_frequencies_match_a_model_shipped_with_that_scaling(kind, params):
    ours = scaled_rope(RotaryEmbedding(_config(), 16), kind, 4.0)
    theirs = LlamaRotaryEmbedding(_config(**params))
    positions = torch.arange(0, 1000, 37)
    x = torch.ones(1, 1, len(positions), 16)
    cos, sin = theirs(x, positions[None])
    ours_cos, ours_sin = ours.cos_sin(positions, torch.float32)
    torch.testing.assert_close(ours_cos, cos[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_sin, sin[0], rtol=1e-5, atol=1e-5)


def test_ntk_raises_the_base_and_dynamic_follows_the_length():
    base = RotaryEmbedding(_config(), 16)
    ntk = scaled_rope(base, "ntk", 4.0)
    assert ntk.params["rope_theta"] == pytest.approx(10000.0 * 4.0 ** (16 / 14))
    dynamic = scaled_rope(base, "dynamic", 1.0)
    inside = torch.arange(0, 200)
    torch.testing.assert_close(dynamic.cos_sin(inside, torch.float32)[0],
                               base.cos_sin(inside, torch.float32)[0])
    dynamic.cos_sin(torch.arange(0, 1024), torch.float32)  # 4x the window: NTK at factor 4
    torch.testing.assert_close(dynamic.inv_freq, ntk.inv_freq, rtol=1e-6, atol=0)


def test_dynamic_ntk_with_a_factor_matches_transformers_at_a_longer_input():
    ours = scaled_rope(RotaryEmbedding(_config(), 16), "dynamic", 2.0)
    theirs = LlamaRotaryEmbedding(_config(rope_type="dynamic", factor=2.0))
    positions = torch.arange(0, 1000)
    cos, sin = theirs(torch.ones(1, 1, len(positions), 16), positions[None])
    ours_cos, ours_sin = ours.cos_sin(positions, torch.float32)
    torch.testing.assert_close(ours_cos, cos[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_sin, sin[0], rtol=1e-5, atol=1e-5)
    ntk_at_length = scaled_rope(RotaryEmbedding(_config(), 16), "ntk", 2.0 * 1000 / 256 - 1.0)
    torch.testing.assert_close(ours.inv_freq, ntk_at_length.inv_freq, rtol=1e-6, atol=0)


def test_factor_comes_from_the_target_length():
    assert scaling_factor(None, 32768, 8192) == 4.0
    assert scaling_factor(3.0, 32768, 8192) == 3.0
    with pytest.raises(ValueError, match="within the trained window"):
        scaling_factor(None, 4096, 8192)


def test_scaling_composes_with_any_method_and_extends_its_window():
    # infllm's n_local + exec_block must fit the window: 2x YaRN makes room for 400.
    with pytest.raises(LongreachError, match="exceeds the model's trained window"):
        tiny_lm(method="infllm", n_local=384, exec_block=16).new_session()
    lm = tiny_lm(method="infllm", n_local=384, exec_block=16, rope_scaling="yarn", target_length=512)
    assert lm.new_session().policy.rope.rope_type == "yarn"
    model = tiny_hf_model()
    ids = prompt_ids(64)
    dense = all_logits(tiny_lm(model=model), ids, 64)
    scaled = all_logits(tiny_lm(method="streaming", model=model, window=300, rope_scaling="linear",
                                rope_factor=2.0), ids, 16)
    assert not torch.allclose(scaled, dense, atol=1e-3)  # positions are interpolated


@pytest.mark.parametrize("options,message", [
    ({"rope_factor": 2.0}, "need rope_scaling"),
    ({"rope_scaling": "magic", "rope_factor": 2.0}, "rope_scaling must be one of"),
    ({"rope_scaling": "yarn", "rope_factor": 0.5}, "rope_factor must be >= 1"),
    ({"kv_quant": "int3"}, "kv_quant must be one of"),
])
def test_bad_shared_options_are_refused(options, message):
    with pytest.raises(LongreachError, match=message):
        method_config("dense", options)


def test_invalid_combinations_are_refused_with_the_options_before_any_model():
    with pytest.raises(LongreachError, match="rope_factor or target_length"):
        method_config("dense", {"rope_scaling": "yarn"})
    for method in ("snapkv", "squeezed", "infllm", "streaming"):
        with pytest.raises(LongreachError, match="dynamic NTK"):
            method_config(method, {"rope_scaling": "dynamic", "rope_factor": "2"})
    for scaling in ("yarn", "dynamic"):
        with pytest.raises(LongreachError, match="self_extend assigns positions itself"):
            method_config("self_extend", {"rope_scaling": scaling, "rope_factor": "2"})
    # a model whose own config declares dynamic NTK is refused when the session is built
    dynamic_model = tiny_hf_model(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    for method in ("infllm", "self_extend"):
        with pytest.raises(LongreachError, match="dynamic NTK"):
            tiny_lm(method=method, model=dynamic_model).new_session()


def test_int8_kv_composes_with_infllm():
    model = tiny_hf_model()
    ids = prompt_ids(200)
    within = dict(n_local=224, n_init=4, block_size=8, topk_blocks=2, exec_block=32)
    plain = all_logits(tiny_lm(model=model), ids, 32)
    quantized = all_logits(tiny_lm(method="infllm", model=model, kv_quant="int8", **within), ids, 32)
    torch.testing.assert_close(quantized, plain, rtol=0, atol=0.02)
    lm = tiny_lm(method="infllm", model=model, kv_quant="int8", n_local=32, n_init=4, block_size=8,
                 topk_blocks=2, exec_block=16)
    session = lm.new_session()
    session.prefill(ids, chunk=16)
    assert type(session.store[0].segments["memory"]).__name__ == "QuantizedSegment"


@pytest.mark.parametrize("kind", ["yarn", "linear", "ntk"])
def test_a_query_rotated_at_a_distance_scores_unrotated_keys_as_both_rotated(kind):
    """InfLLM-style fixed distances: rotate_one(q, n) . k == rotate(q, p) . rotate(k, p - n),
    including YaRN's attention scaling, which cos/sin carry on both sides."""
    rope = scaled_rope(RotaryEmbedding(_config(), 16), kind, 4.0)
    q, k = torch.randn(1, 1, 3, 16), torch.randn(1, 1, 5, 16)
    expected = rope.rotate(q, torch.full((3,), 900)) @ rope.rotate(k, torch.full((5,), 900 - 37)).transpose(-1, -2)
    torch.testing.assert_close(rope.rotate_one(q, 37) @ k.transpose(-1, -2), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["dense", "streaming", "infllm", "self_extend", "snapkv", "squeezed"])
@pytest.mark.parametrize("kv_quant,tolerance", [("int8", 0.02), ("int4", 0.3)])
def test_kv_quantization_composes_with_every_method(method, kv_quant, tolerance):
    from runner import WITHIN_WINDOW
    model = tiny_hf_model()
    ids = prompt_ids(200)
    plain_lm = tiny_lm(method=method, model=model, **WITHIN_WINDOW[method])
    quant_lm = tiny_lm(method=method, model=model, kv_quant=kv_quant, **WITHIN_WINDOW[method])
    torch.testing.assert_close(all_logits(quant_lm, ids, 64), all_logits(plain_lm, ids, 64), rtol=0, atol=tolerance)
    plain, quantized = plain_lm.new_session(), quant_lm.new_session()
    plain.prefill(ids, chunk=64)
    quantized.prefill(ids, chunk=64)
    kinds = {type(segment).__name__ for segment in quantized.store[0].segments.values()}
    assert kinds == {"QuantizedSegment"}

    def kv_bytes(session):  # keys, values, positions (squeezed's cluster index is kept in float32)
        return sum(seg.nbytes for layer in session.store for seg in layer.segments.values())

    # head_dim 16 here: positions and scales weigh more than at SmolLM2's 64 (0.27x for int8 there)
    assert kv_bytes(quantized) < (0.4 if kv_quant == "int8" else 0.3) * kv_bytes(plain)
