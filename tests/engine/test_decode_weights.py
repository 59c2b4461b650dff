"""decode_weights=float16: one-token passes read float16 copies of the weights; prompts stay float32."""

import pytest
import torch

from longreach.engine import LongLM
from longreach.errors import LongreachError
from longreach.methods import method_config
from longreach.models import DecoderAdapter
from tiny import IdTokenizer, prompt_ids, tiny_hf_model


def _run(adapter, ids, forced):
    lm = LongLM(adapter, IdTokenizer(), method_config("dense", {}), 16)
    session = lm.new_session()
    logits = [session.prefill(ids, chunk=16)]
    logits += [session.step(token) for token in forced]
    return torch.stack(logits), session.store.state_dict()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])  # qwen2: projection biases; qwen3: head norms
def test_decode_with_float16_weights_stays_close_and_leaves_the_prompt_alone(arch):
    model = tiny_hf_model(arch)
    ids, forced = prompt_ids(40), prompt_ids(8, seed=3)
    full, full_kv = _run(DecoderAdapter(model), ids, forced)
    half, half_kv = _run(DecoderAdapter(model, decode_weights="float16"), ids, forced)
    for name, tensor in full_kv.items():  # the prompt's stored KV is float32 work, bit for bit
        expected = tensor[..., :40, :] if tensor.dim() == 4 else tensor[:40]
        got = half_kv[name][..., :40, :] if tensor.dim() == 4 else half_kv[name][:40]
        assert torch.equal(got, expected), name
    assert not torch.equal(half, full)  # the float16 weights were used
    torch.testing.assert_close(half, full, rtol=2e-2, atol=2e-2)
    assert torch.equal(half.argmax(-1), full.argmax(-1))
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32  # the model is untouched


def test_decode_weights_need_a_float32_model_and_a_known_value():
    with pytest.raises(LongreachError, match="needs a float32 model"):
        DecoderAdapter(tiny_hf_model().to(torch.bfloat16), decode_weights="float16")
    with pytest.raises(LongreachError, match="decode_weights must be float16"):
        DecoderAdapter(tiny_hf_model(), decode_weights="int4")
