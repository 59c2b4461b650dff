"""A task sample: token ids that fit a budget, the answers, and where the needle sits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Sample:
    prompt_ids: list[int]
    answers: list[str]
    max_new_tokens: int
    needle_token_spans: list[tuple[int, int]] = field(default_factory=list)  # [start, end) in prompt_ids
    meta: dict = field(default_factory=dict)
    # prompt_ids[:context_end] is the document and the rest the question, for methods that process
    # a fixed context once before any question (squeezed, stored contexts); None when unknown.
    context_end: int | None = None


def wrap_prompt(tokenizer, user_text: str, answer_prefix: str, chat: bool,
                verbatim_prefix: bool = False) -> tuple[str, int]:
    """Full prompt text and the character offset where `user_text` starts in it.

    Chat mode puts the task in one user message and the answer prefix at the start of the
    assistant turn; raw mode is the text followed by the answer prefix. In chat mode the prefix
    loses its leading whitespace unless `verbatim_prefix` (RULER appends its prefixes, e.g.
    " Answer: ...", to the assistant header exactly as written).
    """
    if chat and getattr(tokenizer, "chat_template", None):
        marker = "\u0000LONGREACH\u0000"
        wrapped = tokenizer.apply_chat_template([{"role": "user", "content": marker}],
                                                add_generation_prompt=True, tokenize=False)
        head, tail = wrapped.split(marker)
        return head + user_text + tail + (answer_prefix if verbatim_prefix else answer_prefix.lstrip()), len(head)
    return user_text + answer_prefix, 0


def char_span_to_tokens(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """Token range [a, b) covering characters [start, end) given a tokenizer's offset mapping."""
    a = next(i for i, (s, e) in enumerate(offsets) if e > start)
    b = next((i for i, (s, e) in enumerate(offsets) if s >= end), len(offsets))
    return a, b


def encode_with_spans(tokenizer, text: str, char_spans: list[tuple[int, int]], context_end: int | None = None):
    """Token ids of `text`, the token ranges of the given character spans, and the index of the
    first token at or after character `context_end` (None when not given)."""
    enc = tokenizer(text, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    spans = [char_span_to_tokens(offsets, s, e) for s, e in char_spans]
    end = None
    if context_end is not None:
        end = next((i for i, (s, _) in enumerate(offsets) if s >= context_end and i > 0), len(offsets))
    return list(enc["input_ids"]), spans, end


def largest_fitting(count: Callable[[int], int], budget: int, low: int, probe: int,
                    tolerance: int = 2) -> int | None:
    """Largest n >= low with count(n) <= budget, for a count that grows with n; None if low overflows.

    Interpolates from the measured tokens per unit and falls back to bisection, so a fit is found
    in a handful of tokenizations even for 100k-token prompts. With tolerance > 0 it stops early
    at an n whose count is within `tolerance` tokens of the budget; 0 finds the exact largest n.
    """
    cache: dict[int, int] = {}

    def tokens(n: int) -> int:
        if n not in cache:
            cache[n] = count(n)
        return cache[n]

    if tokens(low) > budget:
        return None
    lo, hi = low, max(probe, low + 1)
    while tokens(hi) <= budget:  # grow until the bracket [lo fits, hi overflows] is found
        per_unit = max((tokens(hi) - tokens(lo)) / (hi - lo), 1e-3)
        step = max(1, int((budget - tokens(hi)) / per_unit * 1.02) + 1)
        lo, hi = hi, hi + min(step, 1024 * (hi - lo) + 1024)
    stalls = 0
    while hi - lo > 1 and not (tolerance and budget - tokens(lo) <= tolerance):
        if stalls >= 2:  # interpolation keeps landing on one side: bisect once
            guess, stalls = (lo + hi) // 2, 0
        else:
            per_unit = max((tokens(hi) - tokens(lo)) / (hi - lo), 1e-3)
            guess = min(max(lo + int((budget - tokens(lo)) / per_unit), lo + 1), hi - 1)
        width = hi - lo
        if tokens(guess) <= budget:
            lo = guess
        else:
            hi = guess
        stalls = stalls + 1 if (hi - lo) * 2 > width else 0
    return lo
