"""A question over a chat context is the same token sequence as the document sent inline."""

from __future__ import annotations

import pytest
from serve_helpers import document

from longreach.errors import LongreachError
from longreach.serve.prompts import chat_continuation, completion_prompts, context_text


def test_context_plus_question_equals_the_inline_prompt(chat_lm):
    doc = document(40)
    question = "Answer the question about the text above.\nQuestion: What is the warranty?"
    stored = context_text(chat_lm, doc + "\n")
    follow = chat_continuation(chat_lm, [{"role": "user", "content": question}], stored.head)
    inline = chat_lm.chat_ids([{"role": "user", "content": f"{doc}\n\n{question}"}])
    assert stored.ids + follow == inline


def test_multi_turn_and_system_message(chat_lm):
    doc = document(10)
    stored = context_text(chat_lm, doc, system="You answer briefly.")
    messages = [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "Q1"},
                {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]
    follow = chat_continuation(chat_lm, messages, stored.head)
    inline = [dict(m) for m in messages]
    inline[1]["content"] = f"{doc}\n\nQ1"
    assert stored.ids + follow == chat_lm.chat_ids(inline)
    with pytest.raises(LongreachError, match="system message"):
        chat_continuation(chat_lm, [{"role": "user", "content": "Q"}], stored.head)
    with pytest.raises(LongreachError, match="user message"):
        chat_continuation(chat_lm, [{"role": "system", "content": "You answer briefly."}], stored.head)


def test_completion_prompt_forms(chat_lm):
    assert [p.ids for p in completion_prompts(chat_lm, [5, 6, 7], False)] == [[5, 6, 7]]
    assert len(completion_prompts(chat_lm, [[5, 6], [7]], False)) == 2
    assert completion_prompts(chat_lm, ["a b", "c"], False)[0].text == "a b"
    with pytest.raises(LongreachError, match="within"):
        completion_prompts(chat_lm, [10**9], False)
    with pytest.raises(LongreachError, match="empty"):
        completion_prompts(chat_lm, [[]], False)
