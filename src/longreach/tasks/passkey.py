"""Passkey retrieval (Landmark Attention / LongLoRA template), sized to an exact token budget."""

from __future__ import annotations

import random
import re

from ..errors import LongreachError
from .base import Sample, encode_with_spans, wrap_prompt

TASK = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
        "I will quiz you about the important information there.")
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
QUESTION = "What is the pass key?"
ANSWER_PREFIX = " The pass key is"
MAX_NEW_TOKENS = 10


def _build(n_noise: int, depth: float, key: int, tokenizer, chat: bool):
    n_before = round(n_noise * depth)
    before = " ".join([NOISE] * n_before)
    after = " ".join([NOISE] * (n_noise - n_before))
    needle = f"The pass key is {key}. Remember it. {key} is the pass key."
    user = "\n".join([TASK, before, needle, after, QUESTION])
    text, offset = wrap_prompt(tokenizer, user, ANSWER_PREFIX, chat)
    start = offset + len(TASK) + 1 + len(before) + 1
    question = offset + len(user) - len(QUESTION)
    return encode_with_spans(tokenizer, text, [(start, start + len(needle))], context_end=question)


def passkey_sample(tokenizer, length: int, depth: float = 0.5, seed: int = 0, chat: bool = False) -> Sample:
    """A passkey prompt of at most `length` tokens (generation included) with the key at `depth`.

    Args:
        tokenizer: the model's tokenizer (counts the budget, wraps the chat template).
        length: total token budget: prompt + MAX_NEW_TOKENS.
        depth: relative position of the needle in the noise, 0..1.
        seed: picks the key.
        chat: wrap in the tokenizer's chat template (the classic test sends raw text).
    """
    if not 0.0 <= depth <= 1.0:
        raise LongreachError(f"depth must be within 0..1, got {depth}")
    key = random.Random(seed).randint(1, 50000)
    budget = length - MAX_NEW_TOKENS
    ids, _, _ = _build(0, depth, key, tokenizer, chat)
    if len(ids) > budget:
        raise LongreachError(f"length {length} is smaller than the passkey template ({len(ids) + MAX_NEW_TOKENS})")
    per_noise = len(_build(10, depth, key, tokenizer, chat)[0]) - len(ids)
    n_noise = max((budget - len(ids)) * 10 // max(per_noise, 1), 0)
    while True:  # the estimate may overshoot by a few tokens: step down until it fits
        ids, spans, context_end = _build(n_noise, depth, key, tokenizer, chat)
        if len(ids) <= budget or n_noise == 0:
            break
        n_noise -= max(1, (len(ids) - budget) * 10 // max(per_noise, 1))
        n_noise = max(n_noise, 0)
    return Sample(ids, [str(key)], MAX_NEW_TOKENS, spans,
                  {"task": "passkey", "length": length, "depth": depth, "seed": seed}, context_end)


def score_passkey(prediction: str, answers: list[str]) -> float:
    """1.0 when the first run of digits in the prediction is the key."""
    found = re.search(r"\d+", prediction)
    return float(found is not None and found.group(0) == answers[0])
