import pytest
import torch
from references import StreamingReferenceConfig

from tiny import all_logits, prompt_ids, tiny_hf_model, tiny_lm


@pytest.mark.parametrize("chunk", [200, 16, 1])
def test_matches_token_by_token_streaming_llm(chunk):
    model = tiny_hf_model("llama")
    ids = prompt_ids(120)
    expected = all_logits(tiny_lm(method=StreamingReferenceConfig(n_sink=4, window=40), model=model), ids, 1)
    got = all_logits(tiny_lm(method="streaming", model=model, n_sink=4, window=40), ids, chunk)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_memory_is_constant_however_long_the_input():
    lm = tiny_lm(method="streaming", n_sink=4, window=40, prefill_chunk=16)
    sizes = []
    for n in (100, 200, 400):
        session = lm.new_session()
        session.prefill(prompt_ids(n), chunk=16)
        for token in prompt_ids(20, seed=3):
            session.step(token)
        sizes.append((session.store.tokens("window") + session.store.tokens("sink"), session.store.nbytes))
    assert sizes[0] == sizes[1] == sizes[2]
    layers = lm.adapter.n_layers
    assert sizes[0][0] == layers * (4 + 40)


def test_rejects_bad_options():
    from longreach.errors import LongreachError
    from longreach.methods import method_config
    with pytest.raises(LongreachError, match="window must be >= 1"):
        method_config("streaming", {"window": 0})
    with pytest.raises(LongreachError, match="unknown option"):
        method_config("streaming", {"windows": 10})
