"""Next-token choice: greedy, or temperature / top-k / top-p sampling, with a repetition penalty."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import LongreachError


@dataclass(slots=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0        # 0 means greedy
    top_k: int = 0                  # 0 disables
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        if self.max_new_tokens < 0:
            raise LongreachError("max_new_tokens must be >= 0")
        if self.temperature < 0:
            raise LongreachError("temperature must be >= 0")
        if self.top_k < 0:
            raise LongreachError("top_k must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise LongreachError("top_p must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise LongreachError("repetition_penalty must be > 0")
        self.stop = tuple(s for s in (self.stop or ()) if s)


def apply_repetition_penalty(logits: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    if penalty == 1.0 or history.numel() == 0:
        return logits
    seen = logits.gather(-1, history)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(-1, history, seen)


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    threshold = logits.topk(k).values[..., -1:]
    return logits.masked_fill(logits < threshold, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(descending=True)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    drop = cumulative - sorted_logits.softmax(-1) > p  # keep the smallest prefix reaching p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return logits.scatter(-1, order, sorted_logits)


class Sampler:
    def __init__(self, params: SamplingParams, device: torch.device):
        self.params = params
        self.generator = None
        if params.temperature > 0:
            self.generator = torch.Generator(device="cpu")
            self.generator.manual_seed(params.seed if params.seed is not None else torch.seed())

    def __call__(self, logits: torch.Tensor, history: torch.Tensor) -> int:
        """One token id from logits [V] given the ids seen so far."""
        p = self.params
        logits = apply_repetition_penalty(logits.float().cpu(), history, p.repetition_penalty)
        if p.temperature == 0:
            return int(logits.argmax())
        logits = apply_top_p(apply_top_k(logits / p.temperature, p.top_k), p.top_p)
        probs = logits.softmax(-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))
