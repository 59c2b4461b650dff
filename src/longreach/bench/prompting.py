"""Prompt assembly shared by the generators: chat wrapping, needle spans, and budget fitting.

The budget is counted as RULER counts it: every token of the final prompt (chat wrapper,
template and answer prefix) plus the tokens to generate must be <= the length.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import LongreachError
from ..tasks.base import Sample, encode_with_spans, largest_fitting, wrap_prompt

__all__ = ["Built", "Sample", "count_tokens", "encode_sample", "find_spans", "largest_fitting",
           "template_parts", "wrap_messages", "wrap_prompt"]


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


def template_parts(template: str, /, **fields) -> tuple[str, str]:
    """The filled text of a str.format template before and after its {context} field: what leads
    to the document, and the question part that follows it (the document ends where it starts)."""
    head, tail = template.split("{context}")
    return head.format(**fields), tail.format(**fields)


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


def fit_or_raise(count: Callable[[int], int], budget: int, low: int, probe: int, length: int,
                 task: str, reserve: int) -> int:
    """largest_fitting, or a one-line LongreachError when even the bare template is too long."""
    best = largest_fitting(count, budget, low, probe)
    if best is None:
        raise LongreachError(f"length {length} is smaller than the {task} template "
                             f"({count(low) + reserve} tokens with generation)")
    return best
