"""Passkey retrieval (Landmark Attention / LongLoRA template), sized to an exact token budget."""

from __future__ import annotations

import random
import re

from ..errors import LongreachError
from .base import Sample, encode_with_spans, largest_fitting, wrap_prompt

TASK = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
        "I will quiz you about the important information there.")
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
QUESTION = "What is the pass key?"
ANSWER_PREFIX = " The pass key is"
MAX_NEW_TOKENS = 10
_NOISE_WORDS = NOISE.split()


def _noise(n_words: int) -> str:
    """The first `n_words` words of the noise repeated (the original test cuts it by characters)."""
    whole, part = divmod(n_words, len(_NOISE_WORDS))
    return " ".join(_NOISE_WORDS * whole + _NOISE_WORDS[:part])


def _build(n_words: int, depth: float, key: int, tokenizer, chat: bool):
    n_before = round(n_words * depth)
    before, after = _noise(n_before), _noise(n_words - n_before)
    needle = f"The pass key is {key}. Remember it. {key} is the pass key."
    user = "\n".join([TASK, before, needle, after, QUESTION])
    text, offset = wrap_prompt(tokenizer, user, ANSWER_PREFIX, chat)
    start = offset + len(TASK) + 1 + len(before) + 1
    question = offset + len(user) - len(QUESTION)
    return encode_with_spans(tokenizer, text, [(start, start + len(needle))], context_end=question)


def passkey_sample(tokenizer, length: int, depth: float = 0.5, seed: int = 0, chat: bool = False) -> Sample:
    """A passkey prompt of at most `length` tokens (generation included) with the key at `depth`.

    The noise grows word by word, so the prompt fills the budget to within a couple of tokens.

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
    built = {}

    def tokens(n_words: int) -> int:
        built[n_words] = _build(n_words, depth, key, tokenizer, chat)
        return len(built[n_words][0])

    n_words = largest_fitting(tokens, budget, 0, 200)  # within 2 tokens of the budget
    if n_words is None:
        raise LongreachError(f"length {length} is smaller than the passkey template "
                             f"({len(built[0][0]) + MAX_NEW_TOKENS})")
    ids, spans, context_end = built[n_words]
    return Sample(ids, [str(key)], MAX_NEW_TOKENS, spans,
                  {"task": "passkey", "length": length, "depth": depth, "seed": seed}, context_end)


def score_passkey(prediction: str, answers: list[str]) -> float:
    """1.0 when the first run of digits in the prediction is the key."""
    found = re.search(r"\d+", prediction)
    return float(found is not None and found.group(0) == answers[0])
