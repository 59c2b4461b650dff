import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from longreach.errors import LongreachError
from longreach.methods import method_config
from longreach.rope import RotaryEmbedding
from longreach.rope_scaling import scaled_rope, scaling_factor
from tiny import all_logits, engine_logits, prompt_ids, tiny_hf_model, tiny_lm


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
    ({"rope_scaling": "linear", "rope_factor": 2.0, "rope_attention_factor": 1.0},
     "rope_attention_factor needs rope_scaling=yarn"),
    ({"rope_scaling": "yarn", "rope_factor": 2.0, "rope_attention_factor": 0}, "rope_attention_factor must be > 0"),
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
    """Through the engine's path (squeezed clusters quantized keys, every method decodes from them)."""
    from runner import DECODE, DOCUMENT, QUESTION, WITHIN_WINDOW
    model = tiny_hf_model()
    ids = prompt_ids(200)
    plain_lm = tiny_lm(method=method, model=model, **WITHIN_WINDOW[method])
    quant_lm = tiny_lm(method=method, model=model, kv_quant=kv_quant, **WITHIN_WINDOW[method])
    quantized_logits, quantized_session = engine_logits(quant_lm, DOCUMENT, QUESTION, DECODE, 64)
    torch.testing.assert_close(quantized_logits, engine_logits(plain_lm, DOCUMENT, QUESTION, DECODE, 64)[0],
                               rtol=0, atol=tolerance)
    if method == "squeezed":
        assert quantized_session.policy.clustered()
    plain, quantized = plain_lm.new_session(), quant_lm.new_session()
    plain.prefill(ids, chunk=64)
    quantized.prefill(ids, chunk=64)
    kinds = {type(segment).__name__ for segment in quantized.store[0].segments.values()}
    assert kinds == {"QuantizedSegment"}

    def kv_bytes(session):  # keys, values, positions (squeezed's cluster index is kept in float32)
        return sum(seg.nbytes for layer in session.store for seg in layer.segments.values())

    # head_dim 16 here: positions and scales weigh more than at SmolLM2's 64 (0.27x for int8 there)
    assert kv_bytes(quantized) < (0.4 if kv_quant == "int8" else 0.3) * kv_bytes(plain)


# --- logit-level checks: the shared rope_scaling option against transformers and across methods ---
# 400 tokens is past the tiny model's trained window (256), so every scaling changes the logits.
LONG = prompt_ids(400)
RAISED_THETA = 10000.0 * 2.0 ** (16 / 14)  # static NTK by 2 on head_dim 16: a plain RoPE with this base


def _hf_logits(ids, **rope):
    """Logits of the tiny HF model (same weights as tiny_hf_model()) shipped with RoPE parameters `rope`."""
    model = tiny_hf_model(rope_parameters={"rope_type": "default", "rope_theta": 10000.0, **rope})
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


@pytest.mark.parametrize("kind,options,hf_rope,chunks", [
    ("linear", {"rope_factor": 2.0}, {"rope_type": "linear", "factor": 2.0}, [400, 64]),
    ("yarn", {"rope_factor": 2.0}, {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 256},
     [400, 64]),
    ("yarn", {"rope_factor": 2.0, "rope_attention_factor": 1.0},  # YaRN without its temperature
     {"rope_type": "yarn", "factor": 2.0, "attention_factor": 1.0, "original_max_position_embeddings": 256},
     [400, 64]),
    ("ntk", {"rope_factor": 2.0}, {"rope_theta": RAISED_THETA}, [400, 64]),  # transformers has no static NTK
    # HF's dynamic NTK recomputes the frequencies from the current length: the whole prompt in one
    # forward is where both apply NTK at length 400 to every position (see the step test below).
    ("dynamic", {"rope_factor": 2.0}, {"rope_type": "dynamic", "factor": 2.0}, [400]),
    ("dynamic", {"target_length": 1024}, {"rope_type": "dynamic", "factor": 1.0}, [400]),  # factor 1, see SCALINGS
])
def test_dense_with_a_scaling_matches_the_hf_model_shipped_with_it(kind, options, hf_rope, chunks):
    expected = _hf_logits(LONG, **hf_rope)
    model = tiny_hf_model()
    plain = all_logits(tiny_lm(model=model), LONG, 400)
    assert (expected - plain).abs().max() > 0.1  # the scaling matters on this input
    for chunk in chunks:
        got = all_logits(tiny_lm(model=model, rope_scaling=kind, **options), LONG, chunk)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=f"{kind} {options} chunk {chunk}")


def test_dense_dynamic_ntk_rerotates_every_key_when_the_length_grows():
    """Dynamic NTK follows the current length: once a chunk or step passes the trained window, every
    stored key is rotated again at the new frequencies, as HF's forward over the whole prefix does.

    One layer, so that pre-RoPE keys and values depend on the tokens alone: a re-rotated cache then
    equals HF's recomputation exactly. (With more layers the stored keys of later layers come from
    hidden states computed at the earlier frequencies, so only the whole prompt at once matches HF.)
    """
    rope = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    hf = tiny_hf_model(num_hidden_layers=1, rope_parameters=rope)
    lm = tiny_lm(model=tiny_hf_model(num_hidden_layers=1), rope_scaling="dynamic", rope_factor=2.0)
    ids = prompt_ids(276)
    session = lm.new_session()
    session.prefill(ids[:240], chunk=240, final=False)  # inside the window: the model's own frequencies
    crossing = session.prefill(ids[240:272], chunk=32, all_logits=True)  # positions 240..271
    steps = torch.stack([session.step(token) for token in ids[272:]])
    with torch.no_grad():  # increasing lengths: HF's rotary keeps the longest length it has seen
        expected_crossing = hf(torch.tensor([ids[:272]])).logits[0, 240:]
        expected_steps = torch.stack([hf(torch.tensor([ids[:n]])).logits[0, -1] for n in range(273, 277)])
    torch.testing.assert_close(crossing, expected_crossing, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(steps, expected_steps, rtol=1e-4, atol=1e-5)



def test_dynamic_ntk_frequencies_belong_to_each_sequence():
    """Dynamic NTK's frequencies follow the length of the sequence being run, not of another one:
    neither an earlier, longer request on the same LongLM nor a longer question on another fork of
    the same context may change them."""
    short = LONG[:300]
    dynamic_model = tiny_hf_model(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    lm = tiny_lm(model=dynamic_model)  # a model shipped with dynamic NTK: every session starts from its RoPE
    first = all_logits(lm, short, 300)
    torch.testing.assert_close(first, _hf_logits(short, rope_type="dynamic", factor=2.0), rtol=1e-4, atol=1e-5)
    all_logits(lm, LONG, 400)
    torch.testing.assert_close(all_logits(lm, short, 300), first, rtol=0, atol=0)

    lm = tiny_lm(model=tiny_hf_model(), rope_scaling="dynamic", rope_factor=2.0)
    context = lm.new_session()
    context.prefill(LONG[:280], chunk=64, final=False)
    alone = context.fork().prefill(LONG[280:300], all_logits=True)
    context.fork().prefill(LONG[280:400], chunk=64)  # a longer question first
    torch.testing.assert_close(context.fork().prefill(LONG[280:300], all_logits=True), alone, rtol=0, atol=0)

# Options under which each method must equal dense on a 400-token run: every context fits the window,
# which the factor-2 scaling (512) makes possible for infllm (n_local + exec_block = 480 > 256) and for
# squeezed at true positions (positions up to 399). self_extend refuses any scaling (tested below).
WITHIN_SCALED_WINDOW = {
    "streaming": {"n_sink": 4, "window": 448},
    "infllm": {"n_local": 448, "n_init": 4, "block_size": 8, "topk_blocks": 2, "exec_block": 32},
    "snapkv": {"budget": 512, "obs_window": 8},
    "squeezed": {"positions": "true", "budget": 1.0, "cluster_size": 4, "obs_window": 8},
}
DOCUMENT, QUESTION, DECODE = LONG[:360], LONG[360:396], LONG[396:]


@pytest.mark.parametrize("kind", ["linear", "yarn", "ntk"])
def test_methods_within_their_window_equal_dense_with_the_same_scaling(kind):
    model = tiny_hf_model()
    expected, _ = engine_logits(tiny_lm(model=model, rope_scaling=kind, rope_factor=2.0),
                                DOCUMENT, QUESTION, DECODE, 64)
    unscaled, _ = engine_logits(tiny_lm(model=model), DOCUMENT, QUESTION, DECODE, 64)
    assert (expected - unscaled).abs().max() > 0.1  # a method that dropped the scaling would fail below
    for method, options in WITHIN_SCALED_WINDOW.items():
        lm = tiny_lm(method=method, model=model, rope_scaling=kind, rope_factor=2.0, **options)
        got, session = engine_logits(lm, DOCUMENT, QUESTION, DECODE, 64)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=f"{method} with {kind}")
        assert session.policy.ctx.trained_window == 512
        if method == "squeezed":  # the document was clustered and every key read through the lookup
            touched = session.policy.touched
            assert session.policy.clustered() and touched["selected"] == touched["context"] > 0


@pytest.mark.parametrize("kind,hf_rope", [
    ("linear", {"rope_type": "linear", "factor": 4.0}),
    ("yarn", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}),
    ("ntk", {"rope_theta": 10000.0 * 4.0 ** (16 / 14)}),
])
def test_target_length_sets_the_factor(kind, hf_rope):
    assert scaling_factor(None, 1024, 256) == 4.0
    model = tiny_hf_model()
    lm = tiny_lm(model=model, rope_scaling=kind, target_length=1024)
    session = lm.new_session()
    assert session.policy.ctx.trained_window == 1024
    explicit = all_logits(tiny_lm(model=model, rope_scaling=kind, rope_factor=4.0), LONG, 400)
    got = all_logits(lm, LONG, 400)
    torch.testing.assert_close(got, explicit, rtol=0, atol=0)
    torch.testing.assert_close(got, _hf_logits(LONG, **hf_rope), rtol=1e-4, atol=1e-5)
    twice = all_logits(tiny_lm(model=model, rope_scaling=kind, rope_factor=2.0), LONG, 400)
    assert (got - twice).abs().max() > 0.05  # the factor shows in the logits


def test_dynamic_ntk_from_a_target_length_is_ntk_at_the_current_length():
    # the target sets the window a method may assume (4x); the frequencies follow the length (factor 1)
    session = tiny_lm(rope_scaling="dynamic", target_length=1024).new_session()
    assert session.policy.ctx.trained_window == 1024
    assert session.policy.rope.params["factor"] == 1.0
    assert tiny_lm(rope_scaling="dynamic", rope_factor=4.0).new_session().policy.rope.params["factor"] == 4.0


@pytest.mark.parametrize("kind", ["linear", "ntk", "yarn", "dynamic"])
def test_self_extend_refuses_every_scaling(kind):
    with pytest.raises(LongreachError, match="self_extend assigns positions itself"):
        method_config("self_extend", {"rope_scaling": kind, "rope_factor": "2"})


def test_refusals_when_the_session_is_built():
    dynamic_model = tiny_hf_model(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    for method in ("streaming", "snapkv", "squeezed"):  # a model's own dynamic NTK (infllm, self_extend above)
        with pytest.raises(LongreachError, match=f"method '{method}': {method} .*dynamic NTK"):
            tiny_lm(method=method, model=dynamic_model).new_session()
    linear_model = tiny_hf_model(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
    with pytest.raises(LongreachError, match="already uses 'linear' RoPE scaling; rope_scaling would replace it"):
        tiny_lm(model=linear_model, rope_scaling="yarn", rope_factor=2.0).new_session()
    with pytest.raises(LongreachError, match=r"target_length \(200\) is within the trained window \(256\)"):
        tiny_lm(rope_scaling="linear", target_length=200).new_session()
