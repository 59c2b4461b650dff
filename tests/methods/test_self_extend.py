import pytest
import torch
from references import SelfExtendReferenceConfig

from longreach.errors import LongreachError
from tiny import all_logits, prompt_ids, tiny_hf_model, tiny_lm


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_matches_the_two_logit_reference_for_any_chunk_size(arch):
    model = tiny_hf_model(arch)
    ids = prompt_ids(200)
    expected = all_logits(tiny_lm(arch, SelfExtendReferenceConfig(), model=model), ids, 200)
    for chunk in (200, 33, 1):
        got = all_logits(tiny_lm(arch, "self_extend", model=model, group_size=4, window=32), ids, chunk)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_int8_keys_stay_close_and_skip_the_grouped_cache():
    model = tiny_hf_model()
    ids = prompt_ids(120)
    expected = all_logits(tiny_lm(method=SelfExtendReferenceConfig(), model=model), ids, 120)
    lm = tiny_lm(method="self_extend", model=model, group_size=4, window=32, kv_quant="int8")
    torch.testing.assert_close(all_logits(lm, ids, 16), expected, rtol=0, atol=0.02)
    session = lm.new_session()
    session.prefill(ids, chunk=16)
    assert "grouped" not in session.store[0].buffers


def test_refuses_rope_scaling_and_a_window_past_the_trained_one():
    with pytest.raises(LongreachError, match="does not combine with RoPE scaling"):
        tiny_lm(method="self_extend", rope_scaling="yarn", rope_factor=2.0).new_session()
    with pytest.raises(LongreachError, match="smaller than the trained window"):
        tiny_lm(method="self_extend", window=256).new_session()
