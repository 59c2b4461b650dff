"""Prompt assembly shared by the generators: chat wrapping, needle spans, and budget fitting.

The budget is counted as RULER counts it: every token of the final prompt (chat wrapper,
template and answer prefix) plus the tokens to generate must be <= the length.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import LongreachError
from ..tasks.base import Sample, encode_with_spans, wrap_prompt

__all__ = ["Built", "Sample", "count_tokens", "encode_sample", "find_spans", "largest_fitting",
           "wrap_messages", "wrap_prompt"]


@dataclass(slots=True)
class Built:
    """One candidate prompt: its full text, the character spans of its needles and, when known,
    the character where the document ends and the question begins."""
    text: str
    char_spans: list[tuple[int, int]]
    context_end: int | None = None


def count_tokens(tokenizer, text: str) -> int:
    """Tokens the model will see for `text` (special tokens the tokenizer adds included)."""
    return len(tokenizer(text)["input_ids"])


def find_spans(text: str, pieces: list[str], start: int = 0) -> list[tuple[int, int]]:
    """Character span of the first occurrence of each piece at or after `start` (each must occur)."""
    spans = []
    for piece in pieces:
        at = text.find(piece, start)
        if at < 0:
            raise AssertionError(f"needle {piece[:40]!r} not found in the prompt")
        spans.append((at, at + len(piece)))
    return spans


def wrap_messages(tokenizer, system: str | None, turns: list[str], chat: bool) -> tuple[str, list[int]]:
    """Render system + consecutive user turns with the chat template, generation prompt added.

    Returns the text and the character offset of each turn in it. Templates that refuse a system
    message or consecutive user turns get one user message with the turns joined by blank lines.
    Raw mode (or a tokenizer without a chat template) joins the parts with blank lines.
    """
    markers = [f"\u0000TURN{i}\u0000" for i in range(len(turns))]
    if chat and getattr(tokenizer, "chat_template", None):
        from jinja2 import TemplateError

        head = [{"role": "system", "content": system}] if system else []
        attempts = [head + [{"role": "user", "content": m} for m in markers],
                    [{"role": "user", "content": "\n\n".join(([system] if system else []) + markers)}]]
        for messages in attempts:
            try:
                wrapped = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                break
            except TemplateError:
                continue
        else:
            raise LongreachError("the tokenizer's chat template rejects a single user message")
    else:
        wrapped = "\n\n".join(([system] if system else []) + markers)
    offsets, text = [], wrapped
    for marker, turn in zip(markers, turns, strict=True):
        at = text.index(marker)
        offsets.append(at)
        text = text[:at] + turn + text[at + len(marker):]
    return text, offsets


def encode_sample(tokenizer, built: Built, answers: list[str], max_new_tokens: int, meta: dict) -> Sample:
    """Tokenize a finished prompt into a Sample with the needles' token spans."""
    ids, spans, context_end = encode_with_spans(tokenizer, built.text, built.char_spans, built.context_end)
    meta = {**meta, "prompt_tokens": len(ids)}
    return Sample(ids, answers, max_new_tokens, spans, meta, context_end)


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


def fit_or_raise(count: Callable[[int], int], budget: int, low: int, probe: int, length: int,
                 task: str, reserve: int) -> int:
    """largest_fitting, or a one-line LongreachError when even the bare template is too long."""
    best = largest_fitting(count, budget, low, probe)
    if best is None:
        raise LongreachError(f"length {length} is smaller than the {task} template "
                             f"({count(low) + reserve} tokens with generation)")
    return best
