"""Where the sweep's prompts come from: generated per cell, or loaded once per (dataset, length).

Everything that can be wrong with the input (unknown task or dataset, missing data, a length
smaller than the template) is found here, before any model is loaded.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from ..errors import LongreachError
from .cells import Cell
from .prompting import Sample
from .results import Record, prompt_hash
from .tasks import TaskOptions, check_options, get_task, load_samples, make_sample, resolve_subtasks, skip_reason

DEFAULT_SAMPLES = 5


@dataclass(slots=True)
class SweepSpec:
    """The prompts of a sweep: task, subtasks, lengths, depths and samples per combination."""
    task: str
    subtasks: list[str] | None = None
    lengths: list[int] = field(default_factory=lambda: [4096])
    depths: list[float] | None = None     # fractions 0..1; tasks with a needle depth only
    samples: int | None = None            # per combination; data tasks: at most this many items
    seed: int = 0
    chat: bool = True
    options: TaskOptions = field(default_factory=TaskOptions)

    def __post_init__(self):
        spec = get_task(self.task)
        self.subtasks = resolve_subtasks(self.task, self.subtasks)
        check_options(self.task, self.options)
        if not self.lengths:
            raise LongreachError("no lengths given")
        if self.depths is not None and not spec.uses_depth:
            raise LongreachError(f"{self.task} places its needles itself; --depths applies to passkey, niah "
                                 f"and infinitebench")
        if spec.uses_depth and not self.depths:
            self.depths = [0.5]
        if self.samples is not None and self.samples < 1:
            raise LongreachError("--samples must be >= 1")
        if self.samples is None and not spec.from_data:
            self.samples = 1 if self.task == "niah" else DEFAULT_SAMPLES  # the classic NIAH has no randomness


class SampleSource:
    """Builds the samples of a sweep's cells with a tokenizer, timing the work it does."""

    def __init__(self, spec: SweepSpec, tokenizer, warn=None):
        self.spec, self.tokenizer = spec, tokenizer
        self.warn = warn or (lambda text: print(f"longreach: warning: {text}", file=sys.stderr))
        self.skipped: dict[str, str] = {}      # subtask -> why it cannot run
        self.problems: list[str] = []          # unreadable data lines
        self.seconds = 0.0                     # time spent building and loading prompts
        self.last_seconds = 0.0                # time the last sample() took to build
        self._loaded: dict[tuple[str, int], list[Sample | None]] = {}
        self._built: dict[Cell, tuple[Sample, float]] = {}
        self.from_data = get_task(spec.task).from_data
        for subtask in spec.subtasks:
            reason = skip_reason(spec.task, subtask, spec.options)
            if reason and not self.from_data:
                self.skipped[subtask] = reason
                self.warn(f"skipping {spec.task} {subtask}: {reason}")
            elif reason:
                raise LongreachError(reason)
        if len(self.skipped) == len(spec.subtasks):
            raise LongreachError(f"nothing to run: {'; '.join(self.skipped.values())}")

    @property
    def subtasks(self) -> list[str]:
        return [s for s in self.spec.subtasks if s not in self.skipped]

    def cells(self) -> list[Cell]:
        """Every cell of the sweep, shortest lengths first (data tasks load their files here)."""
        spec, out = self.spec, []
        for length in spec.lengths:
            for subtask in self.subtasks:
                if self.from_data:
                    count = len(self._load(subtask, length))
                    out += [Cell(spec.task, subtask, length, None, i) for i in range(count)]
                    continue
                for depth in spec.depths or [None]:
                    out += [Cell(spec.task, subtask, length, depth, i) for i in range(spec.samples)]
        return out

    def seed(self, cell: Cell) -> int | None:
        return None if self.from_data else self.spec.seed + cell.sample

    def sample(self, cell: Cell) -> Sample:
        """The prompt of `cell` (built now, or taken from what `check` or loading built)."""
        self.last_seconds = 0.0
        if cell in self._built:
            sample, self.last_seconds = self._built.pop(cell)
            return sample
        if self.from_data:  # handed out once: drop the loader's reference so memory is freed as the run goes
            samples = self._load(cell.subtask, cell.length)
            sample, samples[cell.sample] = samples[cell.sample], None
            return sample
        start = time.perf_counter()
        try:
            return make_sample(self.spec.task, cell.subtask, self.tokenizer, cell.length,
                               seed=self.seed(cell), chat=self.spec.chat, depth=cell.depth,
                               options=self.spec.options)
        finally:
            self.last_seconds = time.perf_counter() - start
            self.seconds += self.last_seconds

    def check(self, cells: list[Cell]) -> None:
        """Build the first pending cell of each subtask at its shortest length, so that a length too
        small for a template is reported before anything runs (the samples are kept for the run)."""
        first: dict[str, Cell] = {}
        for cell in cells:
            if cell.subtask not in first or cell.length < first[cell.subtask].length:
                first[cell.subtask] = cell
        for cell in first.values():
            if not self.from_data:
                sample = self.sample(cell)
                self._built[cell] = (sample, self.last_seconds)

    def check_recorded(self, records: list[Record]) -> None:
        """Refuse to resume a data task whose prompts changed since they were recorded.

        Data cells are numbered by their place among the usable items, so an edited file (a line
        fixed, added or removed) would shift them: each cell's prompt is compared with the one
        recorded for it by any method (a method added later must not run on another prompt than
        the ones it will be compared with).
        """
        if not self.from_data:
            return
        by_cell = {r.key[:len(r.key) - len(r.method)]: r for r in records}  # cell.key("") -> a record
        for cell in self.cells():
            before = by_cell.get(cell.key(""))
            sample = self._load(cell.subtask, cell.length)[cell.sample]
            if before is None or sample is None or before.prompt_hash == prompt_hash(sample.prompt_ids):
                continue
            where = f"line {sample.meta['line']}" if "line" in sample.meta else f"item {cell.sample}"
            task = self.spec.task if cell.subtask == self.spec.task else f"{self.spec.task} {cell.subtask}"
            raise LongreachError(
                f"{where} of {task} ({cell.length} tokens) is another prompt than the "
                f"one recorded for {before.method}: the data changed since this directory was filled; use "
                f"another --out (the recorded results are kept)")

    def _load(self, subtask: str, length: int) -> list[Sample]:
        key = (subtask, length)
        if key not in self._loaded:
            start = time.perf_counter()
            options = self.spec.options
            result = load_samples(self.spec.task, subtask, self.tokenizer, length, chat=self.spec.chat,
                                  options=TaskOptions(**{**_fields(options), "limit": self.spec.samples
                                                         or options.limit}))
            self.seconds += time.perf_counter() - start
            for problem in result.problems:
                if problem not in self.problems:
                    self.problems.append(problem)
                    self.warn(f"skipped {problem}")
            if not result.samples:
                raise LongreachError(f"no usable {self.spec.task} item for {subtask}"
                                     + (f" ({len(result.problems)} unreadable)" if result.problems else ""))
            self._loaded[key] = result.samples
        return self._loaded[key]


def _fields(options: TaskOptions) -> dict:
    return {name: getattr(options, name) for name in options.__slots__}
