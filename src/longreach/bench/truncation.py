"""Middle truncation of real-data prompts, as LongBench's pred.py does: to a cap on the raw prompt
(LongBench's max_length) or fitted to a total token budget (prompt + chat template + generation)."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import LongreachError
from .prompting import count_tokens, wrap_prompt


def middle_truncate(tokenizer, text: str, max_tokens: int) -> tuple[str, bool]:
    """LongBench v1: keep decode(first half) + decode(last half) of the ids when over `max_tokens`."""
    ids = tokenizer(text)["input_ids"]
    if len(ids) <= max_tokens:
        return text, False
    half = int(max_tokens / 2)
    head = tokenizer.decode(ids[:half], skip_special_tokens=True)
    return head + tokenizer.decode(ids[-half:], skip_special_tokens=True), True


def middle_truncate_joined(tokenizer, text: str, max_tokens: int) -> tuple[str, bool]:
    """LongBench v2: decode(ids[:n//2] + ids[-n//2:]) in one piece when over `max_tokens`."""
    ids = tokenizer(text)["input_ids"]
    if len(ids) <= max_tokens:
        return text, False
    return tokenizer.decode(ids[:max_tokens // 2] + ids[-max_tokens // 2:], skip_special_tokens=True), True


def fit_prompt(tokenizer, text: str, budget: int, wrap: Callable[[str], str], cap: int | None = None,
               truncate: Callable = middle_truncate, what: str = "prompt") -> tuple[str, bool]:
    """Truncate `text` in the middle so that wrap(text) takes at most `budget` tokens.

    Args:
        text: the filled task prompt, before any chat template (as pred.py truncates).
        budget: tokens available for the wrapped prompt (length - max new tokens).
        wrap: adds the chat template (or nothing) to a prompt.
        cap: LongBench's max_length (model2maxlen) for the raw prompt, when given.
    Returns:
        (wrapped prompt text, whether it was truncated).
    """
    overhead = count_tokens(tokenizer, wrap(""))
    target = budget - overhead if cap is None else min(cap, budget - overhead)
    if target < 16:
        raise LongreachError(f"a budget of {budget} prompt tokens leaves no room for the {what} "
                             f"(the template alone takes {overhead})")
    for _ in range(8):  # decode/encode round trips can add a few tokens: shrink and retry
        short, truncated = truncate(tokenizer, text, target)
        full = wrap(short)
        excess = count_tokens(tokenizer, full) - budget
        if excess <= 0:
            return full, truncated
        target -= excess
    raise LongreachError(f"could not fit the {what} into {budget} tokens")


def cap_prompt(tokenizer, text: str, cap: int, wrap: Callable[[str], str], truncate: Callable = middle_truncate,
               what: str = "prompt") -> tuple[str, bool]:
    """LongBench's max_length: truncate the raw prompt in the middle to `cap` tokens, then wrap it.

    pred.py caps the filled prompt before the chat template and does not count the generation, so
    the wrapped prompt may exceed `cap` by the template's tokens; this is what makes a score
    comparable with a LongBench run at the same max_length.
    """
    if cap < 16:
        raise LongreachError(f"a max_length of {cap} tokens leaves no room for the {what}")
    short, truncated = truncate(tokenizer, text, cap)
    return wrap(short), truncated


def question_start(tokenizer, wrapped: str, question: str, chat: bool) -> int | None:
    """Character of a wrapped, maybe middle-truncated prompt where its question part begins.

    Truncation cuts the document in the middle and keeps the prompt's end, so the document ends
    where `question` (the filled prompt's text after its document) starts, at the end of the user
    text. `wrapped` is wrap_prompt's text with no answer prefix. None when the cut reached the question.
    """
    bare, offset = wrap_prompt(tokenizer, "", "", chat)
    user_end = len(wrapped) - (len(bare) - offset)  # the chat wrapper's tail follows the user text
    if not wrapped[offset:user_end].endswith(question):
        return None
    return user_end - len(question)


def prompt_within(tokenizer, text: str, length: int, new_tokens: int, wrap: Callable[[str], str],
                  cap: int | None = None, length_caps_prompt: bool = False, truncate: Callable = middle_truncate,
                  what: str = "prompt") -> tuple[str, bool]:
    """The wrapped prompt of a data item under either meaning of `length`.

    Args:
        length: with `length_caps_prompt`, LongBench's max_length (a cap on the raw prompt, see
            cap_prompt); else the total budget: wrapped prompt + `new_tokens` <= length (see fit_prompt).
        cap: a further cap on the raw prompt (model2maxlen); the smaller cap wins.
    Returns:
        (wrapped prompt text, whether it was truncated).
    """
    if length_caps_prompt:
        limit = length if cap is None else min(length, cap)
        return cap_prompt(tokenizer, text, limit, wrap, truncate, what)
    return fit_prompt(tokenizer, text, length - new_tokens, wrap, cap, truncate, what)
