"""RULER (NVIDIA/RULER): the 13 tasks of scripts/synthetic.yaml with their verbatim templates.

`ruler_sample` builds one sample of one task; the haystack size is the largest whose prompt
(chat wrapper + template + answer prefix) plus the tokens to generate fits the length, found by
search as RULER's prepare step does. Randomness comes only from the seed.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import LongreachError
from ..prompting import Sample
from .ruler_niah import niah_sample
from .ruler_qa import qa_sample
from .ruler_spec import METRICS, NIAH_TASKS, QA_TASKS, SYNTHETIC_TASKS, TASK_NAMES, TEMPLATES
from .ruler_vt import vt_sample
from .ruler_words import cwe_sample, fwe_sample

__all__ = ["METRICS", "SYNTHETIC_TASKS", "TASK_NAMES", "TEMPLATES", "ruler_sample", "skip_reason"]


def skip_reason(subtask: str, squad: str | Path | None = None,
                hotpotqa: str | Path | None = None) -> str | None:
    """Why a task cannot run here (its data file was not supplied), or None when it can."""
    if subtask == "qa_1" and squad is None:
        return "qa_1 needs the SQuAD v2 dev JSON file (dev-v2.0.json); pass its path as squad"
    if subtask == "qa_2" and hotpotqa is None:
        return ("qa_2 needs the HotpotQA dev distractor JSON file (hotpot_dev_distractor_v1.json); "
                "pass its path as hotpotqa")
    return None


def ruler_sample(tokenizer, subtask: str, length: int, seed: int = 0, chat: bool = True,
                 squad: str | Path | None = None, hotpotqa: str | Path | None = None) -> Sample:
    """One sample of a RULER task, fitted to `length` tokens (prompt + tokens to generate).

    Args:
        tokenizer: the model's tokenizer.
        subtask: one of TASK_NAMES (niah_single_1 ... qa_2).
        length: total token budget.
        seed: picks every random choice of the sample.
        chat: wrap the task in the tokenizer's chat template (RULER's model template).
        squad, hotpotqa: the data files of qa_1 and qa_2.
    """
    if subtask not in TASK_NAMES:
        raise LongreachError(f"unknown RULER task {subtask!r}; choose from: {', '.join(TASK_NAMES)}")
    reason = skip_reason(subtask, squad, hotpotqa)
    if reason:
        raise LongreachError(reason)
    if subtask in NIAH_TASKS:
        sample = niah_sample(tokenizer, subtask, NIAH_TASKS[subtask], length, seed, chat)
    elif subtask == "vt":
        sample = vt_sample(tokenizer, length, seed, chat)
    elif subtask == "cwe":
        sample = cwe_sample(tokenizer, length, seed, chat)
    elif subtask == "fwe":
        sample = fwe_sample(tokenizer, length, seed, chat)
    else:
        path = squad if subtask == "qa_1" else hotpotqa
        sample = qa_sample(tokenizer, QA_TASKS[subtask], Path(path), length, seed, chat)
    sample.meta.update({"task": "ruler", "subtask": subtask, "length": length, "seed": seed, "chat": chat,
                        "metric": METRICS[subtask]})
    return sample
