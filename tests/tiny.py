"""Tiny random decoders built in-process (no network), one per supported architecture."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

from longreach.engine import LongLM, Session
from longreach.methods import method_config
from longreach.models import DecoderAdapter

COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              rms_norm_eps=1e-5, tie_word_embeddings=False)

CONFIGS = {
    "llama": lambda: LlamaConfig(**COMMON, rope_theta=10000.0),
    "mistral": lambda: MistralConfig(**COMMON, rope_theta=10000.0, sliding_window=None),
    "qwen2": lambda: Qwen2Config(**COMMON, rope_theta=10000.0, use_sliding_window=False),
    "qwen3": lambda: Qwen3Config(**COMMON, head_dim=16, rope_theta=10000.0, use_sliding_window=False),
}


def tiny_hf_model(arch: str = "llama", seed: int = 0, **overrides):
    config = CONFIGS[arch]()
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():  # larger weights than the init gives, so attention is not near-uniform
        for name, p in model.named_parameters():
            if p.dim() == 2 and "proj" in name:
                p.mul_(4.0)
    return model


class IdTokenizer:
    """Token ids written as text ("5 17 3 "), enough for the engine's decoding and stop strings."""

    eos_token_id = None
    chat_template = None

    def __call__(self, text: str) -> dict:
        return {"input_ids": [int(t) for t in text.split()]}

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(f"{i} " for i in ids)


def tiny_lm(arch: str = "llama", method="dense", prefill_chunk: int = 512, seed: int = 0,
            model=None, **options) -> LongLM:
    """A LongLM over a tiny model; `method` is a registered name or a MethodConfig instance."""
    model = model if model is not None else tiny_hf_model(arch, seed)
    model.generation_config.eos_token_id = None
    model.config.eos_token_id = None
    config = method if not isinstance(method, str) else method_config(method, options)
    return LongLM(DecoderAdapter(model), IdTokenizer(), config, prefill_chunk)


def prompt_ids(n: int, seed: int = 1, vocab: int = 128) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=g).tolist()


def all_logits(lm: LongLM, ids: list[int], chunk: int) -> torch.Tensor:
    """Logits at every position [n, V], prefilling in chunks of `chunk`.

    Raw forward passes: no phase is set and `end_prefill` is never called, so a method that acts at
    the prompt's end (squeezed clusters, snapkv compress=end compresses) does not act here; use
    `engine_logits` for the engine's own path."""
    session = lm.new_session()
    out = []
    t = torch.tensor(ids)
    for a in range(0, len(ids), chunk):
        hidden = session._forward(t[a:a + chunk])
        out.append(lm.adapter.logits(hidden)[0])
    return torch.cat(out)


def engine_logits(lm: LongLM, document: list[int], question: list[int], decode: list[int],
                  chunk: int, session: Session | None = None) -> tuple[torch.Tensor, Session]:
    """Logits [len(document) + len(question) + len(decode), V] through the engine's own path.

    The document is prefilled as a fixed context (final=False), the question ends the prompt
    (phases set, `end_prefill` called, the last token replayed if the method asks), then each
    `decode` token is forced as a decoding step. Row i predicts the token after input i.
    `session`: a fresh session of `lm` to use (e.g. one whose policy is observed) instead of a new one.
    """
    session = session if session is not None else lm.new_session()
    rows = [session.prefill(document, chunk, all_logits=True, final=False),
            session.prefill(question, chunk, all_logits=True)]
    rows += [session.step(token)[None] for token in decode]
    return torch.cat(rows), session
