"""LongBench v2: 503 four-choice questions over long contexts, from a local JSON or JSONL file.

Prompt prompts/0shot.txt (placeholders filled with str.replace on stripped fields), one user
message, 128 new tokens, middle truncation as the official pred.py; the answer is read with
"The correct answer is (X)" then "The correct answer is X" after removing '*'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ...errors import LongreachError
from ..dataio import LoadResult, read_jsonl
from ..prompting import Built, encode_sample, wrap_prompt
from ..truncation import middle_truncate_joined, prompt_within, question_start

TEMPLATE = ("Please read the following text and answer the question below.\n\n<text>\n$DOC$\n</text>\n\n"
            "What is the correct answer to this question: $Q$\nChoices:\n(A) $C_A$\n(B) $C_B$\n(C) $C_C$\n"
            "(D) $C_D$\n\nFormat your response as follows: \"The correct answer is (insert answer here)\".")
MAX_NEW_TOKENS = 128
FIELDS = ("_id", "question", "choice_A", "choice_B", "choice_C", "choice_D", "answer", "context")


def _fill_question(text: str, item: dict) -> str:
    """`text` (the template or a part of it) with the item's stripped question and choices."""
    return (text.replace("$Q$", item["question"].strip())
            .replace("$C_A$", item["choice_A"].strip()).replace("$C_B$", item["choice_B"].strip())
            .replace("$C_C$", item["choice_C"].strip()).replace("$C_D$", item["choice_D"].strip()))


def fill_prompt(item: dict) -> str:
    """prompts/0shot.txt with the item's stripped fields."""
    return _fill_question(TEMPLATE.replace("$DOC$", item["context"].strip()), item)


def question_part(item: dict) -> str:
    """The end of fill_prompt(item) after the document: "</text>", the question and the choices."""
    return _fill_question(TEMPLATE.split("$DOC$")[1], item)


def _read_items(path: Path) -> tuple[list[tuple[int, dict]], list[str]]:
    if path.is_dir():
        candidates = [path / "data.json", *sorted(path.glob("*.jsonl")), *sorted(path.glob("*.json"))]
        path = next((p for p in candidates if p.is_file()), path / "data.json")
    if not path.exists():
        raise LongreachError(f"LongBench v2 data not found: {path} (expected data.json or a .jsonl file)")
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LongreachError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, list):
        raise LongreachError(f"{path} should hold a JSON list of questions")
    good = [(i + 1, item) for i, item in enumerate(data) if isinstance(item, dict)]
    bad = [f"{path.name}: item {i + 1} is not an object"
           for i, item in enumerate(data) if not isinstance(item, dict)]
    return good, bad


def longbench2_samples(tokenizer, path: str | Path, length: int, chat: bool = True,
                       max_prompt_tokens: int | None = None, limit: int | None = None,
                       length_caps_prompt: bool = False) -> LoadResult:
    """LongBench v2 questions as Samples that fit `length` tokens.

    Args:
        tokenizer: the model's tokenizer.
        path: data.json (the HF dataset exported as a JSON list), a .jsonl file, or a directory with one.
        length: total token budget (prompt + 128 new tokens), or with `length_caps_prompt` the
            official max_len: a cap on the raw prompt before the chat template (pred.py's 120000).
        chat: one user message in the chat template; else the raw prompt.
        max_prompt_tokens: the official truncation length (120000), if smaller than the budget.
        limit: at most this many questions.
        length_caps_prompt: read `length` as that cap (what `--max-length` means).
    """
    records, problems = _read_items(Path(path))
    result = LoadResult(problems=problems)
    for number, item in records:
        if limit is not None and len(result.samples) >= limit:
            break
        missing = [key for key in FIELDS if not isinstance(item.get(key), str)]
        if missing or item["answer"] not in ("A", "B", "C", "D"):
            result.problems.append(f"item {number} ({item.get('_id', '?')}): "
                                   + (f"missing {', '.join(missing)}" if missing else "answer is not A-D"))
            continue
        text, truncated = prompt_within(tokenizer, fill_prompt(item), length, MAX_NEW_TOKENS,
                                        lambda t: wrap_prompt(tokenizer, t, "", chat)[0], cap=max_prompt_tokens,
                                        length_caps_prompt=length_caps_prompt, truncate=middle_truncate_joined,
                                        what="LongBench v2 prompt")
        meta = {"task": "longbench2", "subtask": item.get("domain", "all"), "length": length, "chat": chat,
                "metric": "choice", "id": item["_id"], "domain": item.get("domain"),
                "sub_domain": item.get("sub_domain"), "difficulty": item.get("difficulty"),
                "length_class": item.get("length"), "truncated": truncated}
        built = Built(text, [], question_start(tokenizer, text, question_part(item), chat))
        result.samples.append(encode_sample(tokenizer, built, [item["answer"]], MAX_NEW_TOKENS, meta))
    return result


@dataclass(slots=True)
class LongBench2Summary:
    """result.py's columns: accuracy in % (one decimal) overall and per difficulty and length."""
    overall: float
    easy: float | None
    hard: float | None
    short: float | None
    medium: float | None
    long: float | None
    count: int


def longbench2_summary(records: list[tuple[str, str, float]]) -> LongBench2Summary:
    """From (difficulty, length class, correct 0/1) per question; a group with no question is None."""
    def acc(selected: list[float]) -> float | None:
        return round(100 * sum(selected) / len(selected), 1) if selected else None

    if not records:
        raise LongreachError("no LongBench v2 result to summarise")
    return LongBench2Summary(
        overall=acc([c for _, _, c in records]),
        easy=acc([c for d, _, c in records if d == "easy"]),
        hard=acc([c for d, _, c in records if d != "easy"]),
        short=acc([c for _, n, c in records if n == "short"]),
        medium=acc([c for _, n, c in records if n == "medium"]),
        long=acc([c for _, n, c in records if n not in ("short", "medium")]), count=len(records))
