"""The reference implementations a benchmark compares longreach against, on the same prompt ids in
the same run: transformers' own `generate` and llama.cpp (llama-cpp-python, when installed).

Each returns prefill tokens/s (prompt tokens over the time to the first generated token), decode
tokens/s (the tokens after the first over the time after it) and the greedy text.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import torch

from longreach.tasks import score_passkey


class _Clock:
    """A generate() streamer that timestamps each token: prefill ends when the first one arrives."""

    def __init__(self):
        self.times = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


def hf_reference(lm, sample, new_tokens: int = 10) -> dict:
    """transformers' own generate on the same weights, exactly `new_tokens` greedy tokens."""
    model = lm.adapter.hf_model
    ids = torch.tensor([sample.prompt_ids])
    clock = _Clock()
    with torch.inference_mode():
        start = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             pad_token_id=lm.tokenizer.eos_token_id, streamer=clock)
    first, last = clock.times[1], clock.times[-1]  # times[0] is the prompt itself
    tokens = out[0, ids.shape[1]:].tolist()
    text = lm.tokenizer.decode(tokens, skip_special_tokens=True)
    return {"prompt_tokens": ids.shape[1], "prompt_tps": ids.shape[1] / (first - start),
            "generation_tps": (len(clock.times) - 2) / max(last - first, 1e-9), "text": text,
            "tokens": tokens, "correct": score_passkey(text, sample.answers)}


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


class LlamaCpp:
    """llama.cpp on a GGUF file through llama-cpp-python, driven token by token with greedy picks so
    that it decodes exactly as many tokens as the other engines (EOS ignored)."""

    def __init__(self, gguf: Path, n_ctx: int, threads: int, batch: int = 512):
        from llama_cpp import Llama

        self.llm = Llama(str(gguf), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                         n_batch=batch, n_ubatch=batch, verbose=False)
        self.vocab = self.llm.n_vocab()

    def _next(self) -> int:
        import numpy as np

        # with logits for the last position only, llama.cpp's output buffer holds one row
        logits = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.vocab,))
        return int(logits.argmax())

    def run(self, ids: list[int], new_tokens: int) -> dict:
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(ids)
        tokens = [self._next()]
        first = time.perf_counter()
        for _ in range(new_tokens - 1):
            self.llm.eval([tokens[-1]])
            tokens.append(self._next())
        last = time.perf_counter()
        return {"prompt_tokens": len(ids), "prompt_tps": len(ids) / (first - start),
                "generation_tps": (new_tokens - 1) / max(last - first, 1e-9), "tokens": tokens}


def best_of(runs: list[dict]) -> dict:
    """The fastest of repeated runs (machine noise only ever slows a run down)."""
    best = dict(runs[0])
    best["prompt_tps"] = max(r["prompt_tps"] for r in runs)
    best["generation_tps"] = max(r["generation_tps"] for r in runs)
    return best
