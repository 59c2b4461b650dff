"""Official metrics of the benchmarks, and `score_answers` which picks one by name."""

from __future__ import annotations

from collections.abc import Callable

from ...errors import LongreachError
from .longbench import METRICS as LONGBENCH_METRICS
from .longbench import dataset_score, normalize_answer, score_item
from .retrieval import extract_answer, first_int_match, kv_match
from .rouge import rouge1_f, rouge_l_f
from .ruler import postprocess, ruler_summary, string_match_all, string_match_part, task_score

__all__ = ["METRIC_NAMES", "dataset_score", "normalize_answer", "postprocess", "rouge1_f",
           "rouge_l_f", "ruler_summary", "score_answers", "string_match_all", "string_match_part",
           "task_score"]


def _exact_match(prediction: str, answers: list[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def _choice(prediction: str, answers: list[str]) -> float:
    return float(extract_answer(prediction.strip()) == answers[0])


_BY_ANSWERS: dict[str, Callable[[str, list[str]], float]] = {
    "string_match_all": string_match_all,
    "string_match_part": string_match_part,
    "niah_rouge1_f": lambda prediction, answers: rouge1_f(prediction, answers[0]),
    "first_int_match": first_int_match,
    "kv_match": kv_match,
    "exact_match": _exact_match,
    "choice": _choice,
}
METRIC_NAMES = tuple(sorted([*_BY_ANSWERS, *LONGBENCH_METRICS]))


def score_answers(prediction: str, answers: list[str], meta: dict) -> float:
    """Score one prediction in 0..1 with the metric named in meta["metric"].

    LongBench metrics also read meta["all_classes"] and meta["first_line"] (few-shot datasets).
    """
    metric = meta.get("metric")
    if metric in _BY_ANSWERS:
        return _BY_ANSWERS[metric](prediction, answers)
    if metric in LONGBENCH_METRICS:
        return score_item(metric, prediction, answers, meta.get("all_classes"), bool(meta.get("first_line")))
    raise LongreachError(f"unknown metric {metric!r}; known: {', '.join(METRIC_NAMES)}")
