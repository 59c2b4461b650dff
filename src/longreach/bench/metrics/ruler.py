"""RULER's scoring (scripts/eval) and aggregation: per-task scores, averages, effective length."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEFAULT_THRESHOLD = 85.6  # Llama-2-7B-chat at 4K: the bar for RULER's effective length


def postprocess(prediction: str) -> str:
    """RULER's postprocess_pred: strip, control characters to newlines, strip again."""
    return re.sub(r"[\x00-\x1f]", "\n", prediction.strip()).strip()


def string_match_all(prediction: str, answers: list[str]) -> float:
    """Share of the references found (case-insensitive substring) in the prediction; 0..1."""
    pred = postprocess(prediction).lower()
    return sum(answer.lower() in pred for answer in answers) / len(answers)


def string_match_part(prediction: str, answers: list[str]) -> float:
    """1.0 if any reference is found (case-insensitive substring) in the prediction."""
    pred = postprocess(prediction).lower()
    return float(max(answer.lower() in pred for answer in answers))


def task_score(sample_scores: list[float]) -> float:
    """RULER's task score: round(mean * 100, 2)."""
    return round(sum(sample_scores) / len(sample_scores) * 100, 2)


def effective_length(average_by_length: dict[int, float], threshold: float = DEFAULT_THRESHOLD) -> int | None:
    """The longest length whose average is above `threshold`, or None when none is."""
    passing = [length for length, score in average_by_length.items() if score > threshold]
    return max(passing) if passing else None


def rank_weights(lengths: list[int], increasing: bool = True) -> dict[int, float]:
    """RULER's wAvg weights: proportional to the length's rank (inc) or its reverse (dec)."""
    ordered = sorted(lengths)
    ranks = range(1, len(ordered) + 1) if increasing else range(len(ordered), 0, -1)
    total = sum(ranks)
    return {length: rank / total for length, rank in zip(ordered, ranks, strict=True)}


@dataclass(slots=True)
class RulerSummary:
    """Mean of the task scores at each length, the overall averages and the effective length."""
    average_by_length: dict[int, float]
    tasks_by_length: dict[int, list[str]]
    missing_by_length: dict[int, list[str]]
    average: float
    weighted_increasing: float
    weighted_decreasing: float
    effective_length: int | None
    threshold: float = DEFAULT_THRESHOLD
    notes: list[str] = field(default_factory=list)


def ruler_summary(task_scores: dict[str, dict[int, float]], threshold: float = DEFAULT_THRESHOLD,
                  expected_tasks: list[str] | None = None) -> RulerSummary:
    """Aggregate RULER task scores (task -> length -> score in 0..100) as the README does.

    The score at one length is the mean over the tasks scored at that length; `average` is the
    mean over lengths; tasks in `expected_tasks` but absent at a length are listed as missing.
    """
    lengths = sorted({length for by_length in task_scores.values() for length in by_length})
    average, used, missing = {}, {}, {}
    for length in lengths:
        scored = {task: by_length[length] for task, by_length in task_scores.items() if length in by_length}
        average[length] = round(sum(scored.values()) / len(scored), 2)
        used[length] = sorted(scored)
        missing[length] = sorted(set(expected_tasks or []) - set(scored))
    notes = [f"{length}: averaged without {', '.join(gone)}" for length, gone in missing.items() if gone]
    overall = round(sum(average.values()) / len(average), 2) if average else 0.0
    inc, dec = rank_weights(lengths), rank_weights(lengths, increasing=False)
    return RulerSummary(
        average_by_length=average, tasks_by_length=used, missing_by_length=missing, average=overall,
        weighted_increasing=round(sum(average[n] * inc[n] for n in lengths), 2),
        weighted_decreasing=round(sum(average[n] * dec[n] for n in lengths), 2),
        effective_length=effective_length(average, threshold), threshold=threshold, notes=notes)
