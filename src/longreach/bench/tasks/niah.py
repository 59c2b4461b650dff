"""Needle in a haystack, gkamradt style: one fact at a depth of the Paul Graham essays.

The haystack is trimmed so that the whole prompt plus the answer fits the token budget (the
original keeps a fixed 200-token buffer instead). The needle goes at token int(n * depth) of the
n haystack tokens and then moves back to just after a token ending in '.', as the original does;
depth 1.0 puts it at the very end. Without the essays the noise sentence is the haystack.

The original scores with a GPT judge (1-10); we use its offline variant (FranxYao's
Long-Context-Data-Engineering): ROUGE-1 F between the needle sentence and the answer, stemmed
(`metrics.rouge.rouge1_f`, reported 0..1 instead of 0..10). A right answer that adds other words
scores below 1, as it does in published offline heatmaps.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ...errors import LongreachError
from ..haystacks import NOISE, essay_text
from ..prompting import Built, Sample, count_tokens, encode_sample, fit_or_raise, wrap_messages

NEEDLE = "\nThe best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.\n"
QUESTION = "What is the best thing to do in San Francisco?"
SYSTEM = "You are a helpful AI bot that answers questions for a user. Keep your response short and direct"
QUESTION_SUFFIX = " Don't give information outside the document or repeat your findings"
# Base models: the offline variant's book prompt (FranxYao), without its leading "<|im_start|>".
RAW_TEMPLATE = ("This is a very long story book: <book> {context} </book>.\n"
                " Based on the content of the book, Question: {question}\nAnswer:")
MAX_NEW_TOKENS = 50
METRIC = "niah_rouge1_f"


def grid(start: int, stop: int, num: int) -> list[int]:
    """np.round(np.linspace(start, stop, num)) as ints, duplicates dropped: the original's grids."""
    return sorted({int(v) for v in np.round(np.linspace(start, stop, num))})


@lru_cache(maxsize=4)
def _haystack_copies(tokenizer, copies: int) -> tuple[str, str, tuple[tuple[int, int], ...]]:
    source, kind = essay_text(), "essay"
    if source is None:
        source, kind = " ".join([NOISE] * 1000), "noise"
    text = source * copies
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return kind, text, tuple(tuple(o) for o in offsets)


def _haystack(tokenizer, min_tokens: int) -> tuple[str, str, tuple[tuple[int, int], ...]]:
    """(kind, text, token offsets) of a haystack at least `min_tokens` long, repeating the source."""
    copies = 1
    while len(_haystack_copies(tokenizer, copies)[2]) < min_tokens:
        copies *= 2
    return _haystack_copies(tokenizer, copies)


def _insertion_char(text: str, offsets, n_tokens: int, depth: float) -> tuple[int, int]:
    """(token index, character offset) where the needle goes among the first n haystack tokens."""
    if n_tokens == 0:
        return 0, 0
    if depth >= 1.0:
        return n_tokens, offsets[n_tokens - 1][1]
    point = int(n_tokens * depth)
    while point > 0 and not text[offsets[point - 1][0]:offsets[point - 1][1]].endswith("."):
        point -= 1
    return point, (offsets[point - 1][1] if point > 0 else 0)


def niah_sample(tokenizer, length: int, depth: float = 0.5, seed: int = 0, chat: bool = True,
                needle: str = NEEDLE, question: str = QUESTION, answer: str | None = None,
                max_new_tokens: int = MAX_NEW_TOKENS) -> Sample:
    """A needle-in-a-haystack prompt of at most `length` tokens (generation included).

    Args:
        tokenizer: the model's tokenizer (counts the budget, applies the chat template).
        length: total token budget: prompt + max_new_tokens.
        depth: needle position in the haystack, 0 (start) .. 1 (end).
        seed: kept for a uniform signature; the classic test has no randomness.
        chat: system + context + question as chat messages; else the raw book prompt.
        needle, question, answer: the fact, the question about it, and the reference the answer is
            scored against (default: the needle sentence).
        max_new_tokens: tokens reserved for the answer.
    Returns:
        A Sample whose needle_token_spans holds the needle sentence.
    """
    if not 0.0 <= depth <= 1.0:
        raise LongreachError(f"depth must be within 0..1, got {depth}")
    budget = length - max_new_tokens
    kind, text, offsets = _haystack(tokenizer, max(budget, 0) + 64)

    def build(n_tokens: int) -> Built:
        n_tokens = min(n_tokens, len(offsets))
        haystack = text[:offsets[n_tokens - 1][1]] if n_tokens else ""
        _, at = _insertion_char(text, offsets, n_tokens, depth)
        context = haystack[:at] + needle + haystack[at:]
        if chat:
            turns = [context, question + QUESTION_SUFFIX]
            prompt, starts = wrap_messages(tokenizer, SYSTEM, turns, chat=True)
            start = starts[0]
        else:
            prompt = RAW_TEMPLATE.format(context=context, question=question)
            start = RAW_TEMPLATE.index("{context}")
        lead = len(needle) - len(needle.lstrip())
        begin = start + at + lead
        # the document is the haystack; the question turn (chat) or "</book>. ... Question" follows
        return Built(prompt, [(begin, begin + len(needle.strip()))], start + len(context))

    overhead = count_tokens(tokenizer, build(0).text)
    n_tokens = fit_or_raise(lambda n: count_tokens(tokenizer, build(n).text), budget, 0,
                            min(max(budget - overhead, 1), len(offsets)), length, "niah", max_new_tokens)
    point, _ = _insertion_char(text, offsets, n_tokens, depth)
    meta = {"task": "niah", "subtask": "niah", "length": length, "depth": depth, "seed": seed, "chat": chat,
            "haystack": kind, "haystack_tokens": n_tokens, "insertion_token": point, "metric": METRIC}
    return encode_sample(tokenizer, build(n_tokens), [answer or needle.strip()], max_new_tokens, meta)
