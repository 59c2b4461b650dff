"""Long-context benchmarks, generated offline: tasks that fit an exact token budget, and their metrics.

    from longreach.bench import TaskOptions, make_sample, load_samples, score
    sample = make_sample("ruler", "niah_single_2", tokenizer, 16384, seed=3)
    ...generate sample.max_new_tokens tokens from sample.prompt_ids...
    value = score(prediction_text, sample)          # 0..1

Aggregations: ruler_summary (mean of tasks per length, effective length), longbench_summary
(category averages), longbench2_summary (Overall/Easy/Hard/Short/Medium/Long).
"""

from __future__ import annotations

from .dataio import LoadResult
from .haystacks import ESSAY_MISSING_NOTE, essay_text, split_sentences
from .metrics import METRIC_NAMES, dataset_score, score_answers, task_score
from .metrics.ruler import DEFAULT_THRESHOLD, RulerSummary, effective_length, ruler_summary
from .prompting import Sample
from .tasks import (
    TASKS,
    TaskOptions,
    TaskSpec,
    get_task,
    load_samples,
    make_sample,
    resolve_subtasks,
    skip_reason,
    task_names,
)
from .tasks.longbench import LongBenchSummary, longbench_e_buckets, longbench_summary
from .tasks.longbench2 import LongBench2Summary, longbench2_summary
from .tasks.niah import grid

__all__ = [
    "DEFAULT_THRESHOLD", "ESSAY_MISSING_NOTE", "METRIC_NAMES", "TASKS", "LoadResult",
    "LongBench2Summary", "LongBenchSummary", "RulerSummary", "Sample", "TaskOptions", "TaskSpec",
    "dataset_score", "effective_length", "essay_text", "get_task", "grid", "load_samples",
    "longbench2_summary", "longbench_e_buckets", "longbench_summary", "make_sample", "resolve_subtasks",
    "ruler_summary", "score", "score_answers", "skip_reason", "split_sentences", "task_names",
    "task_score",
]


def score(prediction: str, sample: Sample) -> float:
    """Score a model's answer to `sample` in 0..1 with the sample's own metric (sample.meta['metric'])."""
    return score_answers(prediction, sample.answers, sample.meta)
