"""RULER qa_1 (SQuAD v2 dev) and qa_2 (HotpotQA dev distractor) from files the user supplies.

The gold paragraph(s) plus distractors, shuffled, become "Document {i}:\\n{text}" joined by blank
lines; the number of documents is the largest that fits. Question i of the file is used for
seed i (modulo the number of questions), as RULER takes the questions in order.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ...errors import LongreachError
from ..prompting import (
    Built,
    Sample,
    count_tokens,
    encode_sample,
    find_spans,
    fit_or_raise,
    template_parts,
    wrap_prompt,
)
from .ruler_spec import TEMPLATES

DOCUMENT = "Document {i}:\n{document}"


@dataclass(slots=True)
class Question:
    query: str
    answers: list[str]
    docs: list[int]                                 # always included (gold first)
    more: list[int] = field(default_factory=list)   # preferred distractors (same article)
    gold: list[int] = field(default_factory=list)   # where the answer is, for needle spans


def _load_json(path: Path):
    if not path.is_file():
        raise LongreachError(f"QA data file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LongreachError(f"{path} is not a JSON file ({exc})") from None


@lru_cache(maxsize=2)
def read_squad(path: Path) -> tuple[list[Question], list[str]]:
    """Answerable SQuAD v2 questions and the sorted unique paragraphs (RULER's read_squad)."""
    try:
        data = _load_json(path)["data"]
        docs = sorted({p["context"] for article in data for p in article["paragraphs"]})
        index = {doc: i for i, doc in enumerate(docs)}
        questions = []
        for article in data:
            article_docs = [index[p["context"]] for p in article["paragraphs"]]
            for p in article["paragraphs"]:
                gold = index[p["context"]]
                for qa in p["qas"]:
                    if not qa.get("is_impossible", False):
                        questions.append(Question(qa["question"], [a["text"] for a in qa["answers"]], [gold],
                                                  [i for i in article_docs if i != gold], [gold]))
    except (KeyError, TypeError) as exc:
        raise LongreachError(f"{path} does not look like SQuAD v2 JSON (missing {exc})") from None
    return questions, docs


@lru_cache(maxsize=2)
def read_hotpotqa(path: Path) -> tuple[list[Question], list[str]]:
    """HotpotQA questions with their 10 paragraphs "title\\ntext" (RULER's read_hotpotqa)."""
    try:
        data = _load_json(path)

        def text(title, sentences):
            return f"{title}\n{''.join(sentences)}"
        docs = sorted({text(t, s) for item in data for t, s in item["context"]})
        index = {doc: i for i, doc in enumerate(docs)}
        questions = []
        for item in data:
            own = [index[text(t, s)] for t, s in item["context"]]
            titles = {fact[0] for fact in item.get("supporting_facts", [])}
            gold = [index[text(t, s)] for t, s in item["context"] if t in titles] or own
            questions.append(Question(item["question"], [item["answer"]], own, [], gold))
    except (KeyError, TypeError, ValueError) as exc:
        raise LongreachError(f"{path} does not look like HotpotQA JSON ({exc})") from None
    return questions, docs


def _pick_docs(rng: random.Random, question: Question, n_docs: int, total: int) -> list[int]:
    if n_docs >= total:
        return (list(range(total)) * -(-n_docs // total))[:n_docs]
    if n_docs - len(question.docs) > len(question.more):
        taken = set(question.docs + question.more)
        others = [i for i in range(total) if i not in taken]
        extra = rng.sample(others, max(0, n_docs - len(question.docs) - len(question.more)))
        return question.docs + question.more + extra
    return question.docs + rng.sample(question.more, n_docs - len(question.docs))


def qa_sample(tokenizer, dataset: str, path: Path, length: int, seed: int, chat: bool) -> Sample:
    """One RULER qa sample from `dataset` ('squad' or 'hotpotqa') read at `path`."""
    spec = TEMPLATES["qa"]
    budget = length - spec.tokens_to_generate
    questions, docs = (read_squad if dataset == "squad" else read_hotpotqa)(Path(path).resolve())
    if not questions:
        raise LongreachError(f"{path} holds no usable question")
    question = questions[seed % len(questions)]

    def build(n_docs: int) -> Built:
        chosen = _pick_docs(random.Random(f"ruler/qa/{dataset}/{seed}"), question, n_docs, len(docs))
        random.Random(f"ruler/qa/{dataset}/{seed}/order").shuffle(chosen)
        context = "\n\n".join(DOCUMENT.format(i=i + 1, document=docs[d]) for i, d in enumerate(chosen))
        text, offset = wrap_prompt(tokenizer, spec.template.format(context=context, query=question.query),
                                   spec.answer_prefix, chat, verbatim_prefix=True)
        gold = [DOCUMENT.format(i=chosen.index(d) + 1, document=docs[d]) for d in question.gold]
        # the documents end where RULER repeats the instruction before "Question: {query}"
        lead, _ = template_parts(spec.template, query=question.query)
        return Built(text, find_spans(text, gold, offset), offset + len(lead) + len(context))

    low = len(question.docs)
    n_docs = fit_or_raise(lambda n: count_tokens(tokenizer, build(n).text), budget, low, low + 10,
                          length, f"RULER qa ({dataset})", spec.tokens_to_generate)
    meta = {"haystack": dataset, "haystack_units": n_docs, "question_index": seed % len(questions)}
    return encode_sample(tokenizer, build(n_docs), list(question.answers), spec.tokens_to_generate, meta)
