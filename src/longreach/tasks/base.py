"""A task sample: token ids that fit a budget, the answers, and where the needle sits."""

from __future__ import annotations

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


def wrap_prompt(tokenizer, user_text: str, answer_prefix: str, chat: bool) -> tuple[str, int]:
    """Full prompt text and the character offset where `user_text` starts in it.

    Chat mode puts the task in one user message and the answer prefix at the start of the
    assistant turn (as RULER does); raw mode is the text followed by the answer prefix.
    """
    if chat and getattr(tokenizer, "chat_template", None):
        marker = "\u0000LONGREACH\u0000"
        wrapped = tokenizer.apply_chat_template([{"role": "user", "content": marker}],
                                                add_generation_prompt=True, tokenize=False)
        head, tail = wrapped.split(marker)
        return head + user_text + tail + answer_prefix.lstrip(), len(head)
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
