"""The task registry: name -> what it is, its subtasks, and how to build its samples.

Generated tasks (passkey, niah, ruler, infinitebench) build one Sample per (subtask, length,
seed[, depth]) with `make_sample`; data tasks (longbench, longbench2, jsonl) read files with
`load_samples`. `skip_reason` says why a subtask cannot run (its data was not supplied).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from ...errors import LongreachError
from ...tasks.passkey import passkey_sample
from ..dataio import LoadResult
from ..prompting import Sample
from . import infinitebench, ruler
from .jsonl import jsonl_samples
from .longbench import longbench_samples
from .longbench2 import longbench2_samples
from .longbench_spec import DATASETS, ENGLISH_DATASETS
from .niah import niah_sample


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    summary: str
    subtasks: tuple[str, ...]
    default_subtasks: tuple[str, ...]
    from_data: bool = False     # samples come from files (load_samples), not from seeds (make_sample)
    uses_depth: bool = False    # make_sample takes a needle depth
    caps_prompt: bool = False   # a length can be LongBench's max_length (cap on the raw prompt)
    essay_haystack: bool = False  # uses the Paul Graham essays when installed, else the noise haystack


TASKS = {spec.name: spec for spec in (
    TaskSpec("passkey", "passkey retrieval in noise (Landmark Attention template)", ("passkey",),
             ("passkey",), uses_depth=True),
    TaskSpec("niah", "needle in a haystack of essays, gkamradt style", ("niah",), ("niah",), uses_depth=True,
             essay_haystack=True),
    TaskSpec("ruler", "RULER: 13 tasks of retrieval, tracing, aggregation and QA", ruler.TASK_NAMES,
             ruler.TASK_NAMES, essay_haystack=True),
    TaskSpec("infinitebench", "InfiniteBench passkey, number_string and kv_retrieval",
             infinitebench.TASK_NAMES, infinitebench.TASK_NAMES, uses_depth=True),
    TaskSpec("longbench", "LongBench v1 datasets from local jsonl files", DATASETS, ENGLISH_DATASETS,
             from_data=True, caps_prompt=True),
    TaskSpec("longbench2", "LongBench v2 multiple choice from a local JSON/JSONL file", ("all",), ("all",),
             from_data=True, caps_prompt=True),
    TaskSpec("jsonl", "your own tasks: context, question, answers per line", ("jsonl",), ("jsonl",),
             from_data=True),
)}


@dataclass(slots=True)
class TaskOptions:
    """Where a task's data lives and how to read it."""
    data: Path | None = None               # longbench dir, longbench2 file/dir, jsonl file
    squad: Path | None = None              # RULER qa_1: SQuAD v2 dev JSON
    hotpotqa: Path | None = None           # RULER qa_2: HotpotQA dev distractor JSON
    max_prompt_tokens: int | None = None   # LongBench's model2maxlen truncation, if below the budget
    limit: int | None = None               # at most this many items per dataset
    longbench_e: bool = False              # LongBench-E files ({dataset}_e.jsonl)
    length_caps_prompt: bool = False       # lengths are LongBench's max_length: a cap on the raw prompt

    def __post_init__(self):
        for name in ("data", "squad", "hotpotqa"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))

    @classmethod
    def from_dict(cls, values: dict) -> TaskOptions:
        """Options from a plain dict; an unknown key is a LongreachError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise LongreachError(f"unknown task option(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(known))}")
        return cls(**values)


def task_names() -> list[str]:
    return list(TASKS)


def get_task(name: str) -> TaskSpec:
    """The spec of a task, or a one-line LongreachError listing the known tasks."""
    if name not in TASKS:
        raise LongreachError(f"unknown task {name!r}; choose from: {', '.join(TASKS)}")
    return TASKS[name]


def resolve_subtasks(task: str, requested: list[str] | None = None) -> list[str]:
    """The requested subtasks (validated) or the task's defaults."""
    spec = get_task(task)
    if not requested:
        return list(spec.default_subtasks)
    unknown = [name for name in requested if name not in spec.subtasks]
    if unknown:
        what = "dataset" if spec.from_data else "subtask"
        raise LongreachError(f"unknown {task} {what} {', '.join(map(repr, unknown))}; "
                             f"choose from: {', '.join(spec.subtasks)}")
    return list(requested)


def check_options(task: str, options: TaskOptions) -> None:
    """A one-line LongreachError for options the task would otherwise silently ignore."""
    if options.length_caps_prompt and not get_task(task).caps_prompt:
        capped = ", ".join(name for name, spec in TASKS.items() if spec.caps_prompt)
        raise LongreachError(f"{task} lengths are total budgets; a length as a cap on the raw prompt "
                             f"(LongBench's max_length) applies to {capped} only")


def skip_reason(task: str, subtask: str, options: TaskOptions | None = None) -> str | None:
    """Why (task, subtask) cannot run with these options, or None."""
    options = options or TaskOptions()
    if task == "ruler":
        return ruler.skip_reason(subtask, options.squad, options.hotpotqa)
    if get_task(task).from_data and options.data is None:
        return f"{task} needs its data location (options.data)"
    return None


def make_sample(task: str, subtask: str, tokenizer, length: int, *, seed: int = 0, chat: bool = True,
                depth: float | None = None, options: TaskOptions | None = None) -> Sample:
    """One generated sample of at most `length` tokens (prompt + max_new_tokens).

    Args:
        task, subtask: e.g. ("ruler", "niah_single_2"), ("niah", "niah"), ("infinitebench", "kv_retrieval").
        tokenizer: the model's tokenizer.
        length: total token budget.
        seed: picks every random choice; the same seed gives the same sample.
        chat: wrap in the tokenizer's chat template; False for base models.
        depth: needle depth 0..1 for passkey, niah and infinitebench (default 0.5); RULER draws its own.
        options: data files for RULER qa_1/qa_2.
    """
    spec = get_task(task)
    if spec.from_data:
        raise LongreachError(f"{task} reads its samples from files: use load_samples")
    resolve_subtasks(task, [subtask])
    depth = 0.5 if depth is None else depth
    options = options or TaskOptions()
    if task == "passkey":
        sample = passkey_sample(tokenizer, length, depth, seed, chat)
        sample.meta.update({"subtask": "passkey", "chat": chat, "metric": "first_int_match"})
        return sample
    if task == "niah":
        return niah_sample(tokenizer, length, depth, seed, chat)
    if task == "infinitebench":
        return infinitebench.infinitebench_sample(tokenizer, subtask, length, depth, seed, chat)
    return ruler.ruler_sample(tokenizer, subtask, length, seed, chat, options.squad, options.hotpotqa)


def load_samples(task: str, subtask: str, tokenizer, length: int, *, chat: bool = True,
                 options: TaskOptions | None = None) -> LoadResult:
    """The samples of a data task (longbench dataset, longbench2, jsonl file), fitted to `length`.

    Malformed records are listed in LoadResult.problems with their line number; the rest load.
    """
    spec = get_task(task)
    if not spec.from_data:
        raise LongreachError(f"{task} generates its samples: use make_sample")
    resolve_subtasks(task, [subtask])
    options = options or TaskOptions()
    check_options(task, options)
    reason = skip_reason(task, subtask, options)
    if reason:
        raise LongreachError(reason)
    if task == "longbench":
        return longbench_samples(tokenizer, options.data, subtask, length, chat, options.max_prompt_tokens,
                                 options.limit, options.longbench_e, options.length_caps_prompt)
    if task == "longbench2":
        return longbench2_samples(tokenizer, options.data, length, chat, options.max_prompt_tokens,
                                  options.limit, options.length_caps_prompt)
    return jsonl_samples(tokenizer, options.data, length, chat, options.limit)
