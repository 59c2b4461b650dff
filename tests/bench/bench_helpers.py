"""Shared by the bench tests: a tiny random model saved with the real tokenizer, a CLI runner, and a
sample's prompt split at its context_end."""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import torch

from longreach.cli.main import main

FAST_INFLLM = "infllm:n_local=256,block_size=32,topk_blocks=2,n_init=16,exec_block=64"


@functools.lru_cache(maxsize=1)
def tiny_model_dir() -> str:
    """A 2-layer random Llama with SmolLM2's tokenizer, saved once per session (loads in < 1 s)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from longreach.models import load_tokenizer

    tokenizer = load_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, rope_theta=10000.0, tie_word_embeddings=True,
                         eos_token_id=None)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = None
    path = Path(tempfile.mkdtemp(prefix="longreach-tiny-")) / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run `longreach ARGV...` in-process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def split_prompt(tokenizer, sample) -> tuple[str, str]:
    """The decoded document (prompt_ids[:context_end]) and question part (the rest) of a sample."""
    assert sample.context_end is not None and 0 < sample.context_end < len(sample.prompt_ids)
    return (tokenizer.decode(sample.prompt_ids[:sample.context_end]),
            tokenizer.decode(sample.prompt_ids[sample.context_end:]))


def records(directory: Path) -> list[dict]:
    path = Path(directory) / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
