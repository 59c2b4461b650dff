"""A user's own long-context tasks from a JSON-lines file.

Each line: {"context": str, "question": str, "answers": [str, ...] or str, optional "metric",
optional "id", optional "max_new_tokens"}. A line that cannot be used is reported with its line
number and the other lines still load. The prompt is LongBench's multifieldqa_en wording; a
context that does not fit is truncated in the middle.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import LongreachError
from ..dataio import LoadResult, by_line, read_jsonl
from ..prompting import Built, count_tokens, encode_sample, template_parts, wrap_prompt
from ..truncation import fit_prompt, question_start

TEMPLATE = ("Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question "
            "based on the above text, only give me the answer and do not output any other words.\n\n"
            "Question: {question}\nAnswer:")
DEFAULT_METRIC = "string_match_part"
USER_METRICS = ("string_match_part", "string_match_all", "exact_match", "qa_f1", "rouge_l", "code_sim",
                "count")
MAX_NEW_TOKENS = 64


def _check(obj: dict) -> str | None:
    for key in ("context", "question"):
        if not isinstance(obj.get(key), str):
            return f"missing or non-text {key!r}"
    answers = obj.get("answers")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        return "'answers' must be a string or a non-empty list of strings"
    if obj.get("metric", DEFAULT_METRIC) not in USER_METRICS:
        return f"unknown metric {obj.get('metric')!r} (choose from: {', '.join(USER_METRICS)})"
    new_tokens = obj.get("max_new_tokens", MAX_NEW_TOKENS)
    if not isinstance(new_tokens, int) or new_tokens < 1:
        return "'max_new_tokens' must be a positive integer"
    return None


def jsonl_samples(tokenizer, path: str | Path, length: int, chat: bool = True,
                  limit: int | None = None) -> LoadResult:
    """Samples of a user's JSONL task file, each fitted to `length` tokens.

    Args:
        tokenizer: the model's tokenizer.
        path: the .jsonl file.
        length: total token budget per sample (prompt + max_new_tokens).
        chat: wrap each prompt in the chat template.
        limit: read at most this many usable lines.
    Returns:
        LoadResult with the samples and "file:line: reason" for each skipped line.
    """
    records, problems = read_jsonl(path)
    bare_prompt = wrap_prompt(tokenizer, TEMPLATE.format(context="", question=""), "", chat)[0]
    needed = count_tokens(tokenizer, bare_prompt) + MAX_NEW_TOKENS
    if needed > length:
        raise LongreachError(f"length {length} is smaller than the jsonl task template ({needed} tokens "
                             "with generation)")
    result = LoadResult(problems=problems)
    for number, obj in records:
        if limit is not None and len(result.samples) >= limit:
            break
        reason = _check(obj)
        if reason:
            result.problems.append(f"{Path(path).name}:{number}: {reason}")
            continue
        answers = [obj["answers"]] if isinstance(obj["answers"], str) else list(obj["answers"])
        new_tokens = obj.get("max_new_tokens", MAX_NEW_TOKENS)
        prompt = TEMPLATE.format(context=obj["context"], question=obj["question"])
        try:
            text, truncated = fit_prompt(tokenizer, prompt, length - new_tokens,
                                         lambda t: wrap_prompt(tokenizer, t, "", chat)[0], what="jsonl task")
        except LongreachError as exc:
            result.problems.append(f"{Path(path).name}:{number}: {exc}")
            continue
        meta = {"task": "jsonl", "subtask": Path(path).stem, "length": length, "chat": chat, "line": number,
                "id": obj.get("id", number), "metric": obj.get("metric", DEFAULT_METRIC), "truncated": truncated}
        _, question = template_parts(TEMPLATE, question=obj["question"])  # "Now, answer ... Answer:"
        built = Built(text, [], question_start(tokenizer, text, question, chat))
        result.samples.append(encode_sample(tokenizer, built, answers, new_tokens, meta))
    result.problems = by_line(result.problems)
    return result
