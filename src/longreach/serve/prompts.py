"""From request text to token ids, alone or continuing a stored context.

A "chat" context holds the chat template's opening (system turn, start of the first user
turn) followed by the document; a request over it places the document at the start of its
first user message, and only what follows the document is tokenized and processed. This
gives the same text as sending the document inline ("<document>\\n\\n<question>").
A "raw" context is plain text that a completion prompt continues.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LongreachError

DOC_MARK = "<<longreach:document:6f1c>>"
SEPARATOR = "\n\n"


@dataclass(slots=True)
class ContextText:
    """What a new context holds: its token ids and the chat opening they start with."""

    ids: list[int]
    head: str  # chat template text before the document ("" for raw contexts)


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of `text` with no special tokens added (template text already carries its own)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def chat_head(tokenizer, system: str | None = None) -> str:
    """The chat template's text before a document that opens the first user turn."""
    if getattr(tokenizer, "chat_template", None) is None:
        return ""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": DOC_MARK}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    head, found, _ = text.partition(DOC_MARK)
    if not found:
        raise LongreachError("the model's chat template does not keep the user's text")
    return head


def context_text(lm, text: str, fmt: str = "chat", system: str | None = None) -> ContextText:
    """Token ids of a document to store as a context (`fmt` "chat" or "raw")."""
    if not text.strip():
        raise LongreachError("the document is empty")
    if fmt == "raw":
        return ContextText(lm.encode(text), "")
    if fmt != "chat":
        raise LongreachError(f"unknown context format {fmt!r}; use chat or raw")
    head = chat_head(lm.tokenizer, system)
    # Trailing whitespace would merge with the separator into other tokens than the inline text gives.
    return ContextText(encode_text(lm.tokenizer, head + text.rstrip()), head)


def chat_continuation(lm, messages: list[dict], head: str) -> list[int]:
    """Ids continuing a chat context whose document opens the first user message."""
    messages = [dict(m) for m in messages]
    first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
    if first_user is None:
        raise LongreachError("a request over a context needs a user message")
    messages[first_user]["content"] = DOC_MARK + SEPARATOR + messages[first_user]["content"]
    tokenizer = lm.tokenizer
    if getattr(tokenizer, "chat_template", None) is None:
        text = "\n".join(m["content"] for m in messages)
    else:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    before, _, after = text.partition(DOC_MARK)
    if before != head:
        raise LongreachError("the conversation before the document (system message) differs from the one "
                             "the context was added with; send the same system message, or none")
    return encode_text(tokenizer, after)


@dataclass(slots=True)
class PromptIds:
    ids: list[int]
    text: str


def completion_prompts(lm, prompt, continues_context: bool) -> list[PromptIds]:
    """Ids and text of each prompt: a string, strings, token ids, or lists of token ids."""
    if isinstance(prompt, str):
        items = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        items = [list(prompt)]
    else:
        items = list(prompt)
    if not items:
        raise LongreachError("the prompt is empty")
    out = []
    for item in items:
        if isinstance(item, str):
            ids = encode_text(lm.tokenizer, item) if continues_context else lm.encode(item)
            if not ids:
                raise LongreachError("the prompt is empty")
            out.append(PromptIds(ids, item))
        else:
            if not item:
                raise LongreachError("the prompt is empty")
            vocab = lm.adapter.vocab_size
            if any(not 0 <= t < vocab for t in item):
                raise LongreachError(f"prompt token ids must be within 0..{vocab - 1}")
            out.append(PromptIds(list(item), lm.tokenizer.decode(item)))
    return out
