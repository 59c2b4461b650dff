"""LongBench v1 from a local directory of the distributed jsonl files (one per dataset).

As pred.py: fill the dataset's prompt, truncate it in the middle when too long (before the chat
template), wrap it in the chat template except for the few-shot and code datasets, and generate
the dataset's max new tokens. The length is either LongBench's max_length (`length_caps_prompt`: a cap
on the raw prompt, what `--max-length` means, so scores compare with LongBench's) or a total budget
(prompt + template + generation) that the truncation fits, optionally capped by `max_prompt_tokens`
(LongBench's model2maxlen). Scoring and category averages follow eval.py and the README.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...errors import LongreachError
from ..dataio import LoadResult, by_line, read_jsonl, require_dir
from ..metrics.longbench import FIRST_LINE_DATASETS
from ..prompting import Built, encode_sample, template_parts, wrap_prompt
from ..truncation import prompt_within, question_start
from .longbench_spec import (
    CATEGORIES,
    DATASETS,
    MAX_NEW_TOKENS,
    METRIC,
    NO_CHAT_TEMPLATE,
    PROMPTS,
    STOP_AT_NEWLINE,
)


def dataset_file(data_dir: Path, dataset: str, longbench_e: bool = False) -> Path:
    """`{dataset}.jsonl` (or `{dataset}_e.jsonl`) in `data_dir`, or a LongreachError naming what is there."""
    if dataset not in DATASETS:
        raise LongreachError(f"unknown LongBench dataset {dataset!r}; choose from: {', '.join(DATASETS)}")
    path = data_dir / f"{dataset}{'_e' if longbench_e else ''}.jsonl"
    if not path.is_file():
        found = sorted(p.stem for p in data_dir.glob("*.jsonl"))
        listing = ", ".join(found) or "no .jsonl file"
        raise LongreachError(f"{path.name} is not in {data_dir} (found: {listing})")
    return path


def longbench_samples(tokenizer, data_dir: str | Path, dataset: str, length: int, chat: bool = True,
                      max_prompt_tokens: int | None = None, limit: int | None = None,
                      longbench_e: bool = False, length_caps_prompt: bool = False) -> LoadResult:
    """The items of one LongBench dataset as Samples that fit `length` tokens.

    Args:
        tokenizer: the model's tokenizer.
        data_dir: directory holding the dataset jsonl files as distributed (data/{dataset}.jsonl).
        dataset: e.g. "hotpotqa"; see longbench_spec.DATASETS.
        length: total token budget (prompt + the dataset's max new tokens), or with
            `length_caps_prompt` pred.py's max_length (the raw prompt's cap, before the chat template).
        chat: apply the chat template (never for trec, triviaqa, samsum, lsht, lcc, repobench-p).
        max_prompt_tokens: pred.py's max_length for the raw prompt, if smaller than the budget.
        limit: at most this many items.
        longbench_e: read the length-balanced `{dataset}_e.jsonl` instead.
        length_caps_prompt: read `length` as LongBench's max_length (see above).
    """
    path = dataset_file(require_dir(data_dir, "longbench"), dataset, longbench_e)
    records, problems = read_jsonl(path)
    result = LoadResult(problems=problems)
    new_tokens = MAX_NEW_TOKENS[dataset]
    use_chat = chat and dataset not in NO_CHAT_TEMPLATE
    for number, record in records:
        if limit is not None and len(result.samples) >= limit:
            break
        try:
            prompt = PROMPTS[dataset].format(**record)
            _, question = template_parts(PROMPTS[dataset], **record)  # what follows the document
            answers = record["answers"]
        except (KeyError, TypeError) as exc:
            result.problems.append(f"{path.name}:{number}: missing field {exc}")
            continue
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            result.problems.append(f"{path.name}:{number}: 'answers' must be a list of strings")
            continue
        text, truncated = prompt_within(tokenizer, prompt, length, new_tokens,
                                        lambda t: wrap_prompt(tokenizer, t, "", use_chat)[0],
                                        cap=max_prompt_tokens, length_caps_prompt=length_caps_prompt,
                                        what=f"LongBench {dataset} prompt")
        meta = {"task": "longbench", "subtask": dataset, "dataset": dataset, "length": length,
                "chat": use_chat,
                "metric": METRIC[dataset], "all_classes": record.get("all_classes") or [],
                "first_line": dataset in FIRST_LINE_DATASETS, "id": record.get("_id", number), "line": number,
                "length_words": record.get("length"), "language": record.get("language"),
                "truncated": truncated}
        if dataset in STOP_AT_NEWLINE:
            meta["stop"] = ["\n"]
        built = Built(text, [], question_start(tokenizer, text, question, use_chat))
        result.samples.append(encode_sample(tokenizer, built, answers, new_tokens, meta))
    result.problems = by_line(result.problems)
    return result


@dataclass(slots=True)
class LongBenchSummary:
    """README-style averages: each category is the mean of its datasets; Avg the mean of categories.

    `missing` lists the datasets of the language that were not scored (then Avg is partial).
    """
    language: str
    categories: dict[str, float]
    average: float | None
    missing: list[str]


def longbench_summary(dataset_scores: dict[str, float], language: str = "en") -> LongBenchSummary:
    """Category means and their average from dataset scores (0..100) of one language ('en' or 'zh')."""
    if language not in CATEGORIES:
        raise LongreachError(f"unknown LongBench language {language!r}; choose en or zh")
    categories, missing = {}, []
    for category, datasets in CATEGORIES[language].items():
        scored = [dataset_scores[d] for d in datasets if d in dataset_scores]
        missing += [d for d in datasets if d not in dataset_scores]
        if scored:
            categories[category] = round(sum(scored) / len(scored), 2)
    average = round(sum(categories.values()) / len(categories), 2) if categories else None
    return LongBenchSummary(language, categories, average, missing)


def longbench_e_buckets(items: list[tuple[int, float]]) -> dict[str, float]:
    """LongBench-E's scorer_e: (length in words, item score) into 0-4k / 4-8k / 8k+ dataset scores."""
    buckets: dict[str, list[float]] = {"0-4k": [], "4-8k": [], "8k+": []}
    for words, score in items:
        key = "0-4k" if words < 4000 else "4-8k" if words < 8000 else "8k+"
        buckets[key].append(score)
    return {key: round(100 * sum(v) / len(v), 2) for key, v in buckets.items() if v}
