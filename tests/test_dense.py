"""`dense` is an exact re-implementation: logits match the HF model for every architecture and chunking."""

import pytest
import torch

from tiny import CONFIGS, all_logits, prompt_ids, tiny_hf_model, tiny_lm


@pytest.mark.parametrize("arch", list(CONFIGS))
@pytest.mark.parametrize("chunk", [200, 64, 7, 1])
def test_dense_matches_hf(arch, chunk):
    model = tiny_hf_model(arch)
    ids = prompt_ids(200)
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0]
    got = all_logits(tiny_lm(arch, model=model), ids, chunk)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_greedy_generation_matches_hf_generate(arch):
    model = tiny_hf_model(arch)
    ids = prompt_ids(50)
    lm = tiny_lm(arch, model=model, prefill_chunk=16)
    ours = lm.generate(ids, max_new_tokens=20).token_ids
    with torch.no_grad():
        input_ids = torch.tensor([ids])
        theirs = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=20,
                                do_sample=False, eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
    assert ours == theirs


def test_rope_scaling_types_match_hf():
    """RoPE types declared in the config are honoured exactly (linear, dynamic, yarn, llama3)."""
    scalings = {
        "linear": {"rope_type": "linear", "factor": 2.0},
        "dynamic": {"rope_type": "dynamic", "factor": 2.0},
        "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
        "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 64},
    }
    ids = prompt_ids(150)
    for name, params in scalings.items():
        model = tiny_hf_model("llama", rope_parameters={"rope_theta": 10000.0, **params},
                              max_position_embeddings=128 if name == "dynamic" else 256)
        with torch.no_grad():
            expected = model(torch.tensor([ids])).logits[0]
        got = all_logits(tiny_lm("llama", model=model), ids, 150)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=name)
