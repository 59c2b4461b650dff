"""A tiny random Llama with the real SmolLM2 tokenizer, saved as a model directory the CLI can load."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from longreach.models import load_tokenizer

# Small enough to prefill thousands of tokens per second on one CPU core; the vocabulary is the
# tokenizer's, so chat templates and text round-trip as with the real model.
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=True,
            rope_theta=10000.0)
# infllm options that make a ~1500-token context use memory blocks.
INFLLM_OPTIONS = {"n_local": 256, "n_init": 16, "block_size": 32, "topk_blocks": 4, "exec_block": 64}


def save_tiny_model(directory: Path, seed: int = 0) -> Path:
    """Write config, weights and tokenizer of a random tiny Llama to `directory`."""
    tokenizer = load_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, **TINY)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():  # sharper attention than the default init, so positions matter
        for name, p in model.named_parameters():
            if p.dim() == 2 and "proj" in name:
                p.mul_(4.0)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)
