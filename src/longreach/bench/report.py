"""`longreach report DIR`: tables, RULER averages and effective length, NIAH heatmaps, cost plots.

Writes DIR/report.md (with its PNGs in DIR/figures/) and DIR/report.html (self-contained).
Scores are shown in % as the papers do: a subtask's score is round(100 * mean, 2).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import mean

from ..errors import LongreachError
from .haystacks import ESSAY_MISSING_NOTE
from .metrics.ruler import DEFAULT_THRESHOLD, ruler_summary, task_score
from .plots import heatmap, tradeoff
from .plots import length_label as _k
from .render import Document, to_html, to_markdown
from .results import Record, ResultsDir, describe_identity
from .tasks.longbench import longbench_e_buckets, longbench_summary
from .tasks.longbench2 import longbench2_summary
from .tasks.longbench_spec import CATEGORIES

LANGUAGES = {"en": "English", "zh": "Chinese"}   # LongBench's README has one leaderboard per language


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return mean(values) if values else None


def _by(records: list[Record], *keys) -> dict[tuple, list[Record]]:
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for record in records:
        groups[tuple(getattr(record, key) for key in keys)].append(record)
    return groups


def subtask_scores(records: list[Record]) -> dict[str, dict[str, dict[int, float]]]:
    """method -> subtask -> length -> score in % (mean over samples and depths)."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for (method, subtask, length), group in _by(records, "method", "subtask", "length").items():
        out[method][subtask][length] = task_score([r.score for r in group])
    return out


def write_report(directory: str | Path, threshold: float = DEFAULT_THRESHOLD) -> list[Path]:
    """Write report.md, report.html and the figures for a results directory; returns the two reports."""
    results = ResultsDir(directory)
    identity = results.identity()
    unreadable: list[str] = []
    records = results.read(unreadable)
    if identity is None or not records:
        raise LongreachError(f"{directory} holds no benchmark results "
                             f"(run `longreach bench --out {directory}`)")
    figures = results.path / "figures"
    figures.mkdir(exist_ok=True)
    doc = Document(f"longreach benchmark: {identity.get('task')}")
    methods = list(dict.fromkeys(r.method for r in records))
    lengths = sorted({r.length for r in records})
    doc.paragraph(f"{len(records)} samples, methods {', '.join(methods)}, lengths "
                  f"{', '.join(_k(n) for n in lengths)}. Configuration: {describe_identity(identity)}.")
    _notes(doc, results, records, unreadable)
    scores = subtask_scores(records)
    _summary(doc, identity.get("task"), records, scores, threshold)
    if identity.get("task") == "longbench" and identity.get("longbench_e"):
        _longbench_e(doc, records)
    _per_subtask(doc, records, scores)
    _costs(doc, records)
    _heatmaps(doc, records, figures)
    _tradeoffs(doc, records, scores, figures)
    _overhead(doc, results.notes())
    md_path, html_path = results.path / "report.md", results.path / "report.html"
    md_path.write_text(to_markdown(doc, results.path), encoding="utf-8")
    html_path.write_text(to_html(doc), encoding="utf-8")
    return [md_path, html_path]


def _notes(doc: Document, results: ResultsDir, records: list[Record], unreadable: list[str]) -> None:
    notes = []
    seen = set()
    for note in results.notes():
        text = (f"{note['subtask']} skipped: {note['reason']}" if note.get("kind") == "skipped"
                else f"unreadable data: {note['text']}" if note.get("kind") == "problem" else None)
        if text and text not in seen:
            seen.add(text)
            notes.append(text)
    haystack_notes = {r.meta.get("haystack_note") for r in records} - {None}
    if any(r.task == "niah" and r.meta.get("haystack") == "noise" for r in records):
        haystack_notes.add(ESSAY_MISSING_NOTE)
    notes += sorted(haystack_notes)
    notes += [f"ignored {line}" for line in unreadable]
    if notes:
        doc.heading("Notes")
        doc.bullets(notes)


def _summary(doc: Document, task: str, records: list[Record], scores: dict, threshold: float) -> None:
    lengths = sorted({r.length for r in records})
    doc.heading("Summary")
    if task == "ruler":
        expected = sorted({r.subtask for r in records})
        rows, notes = [], []
        for method, by_task in scores.items():
            summary = ruler_summary(by_task, threshold, expected)
            eff = summary.effective_length
            rows.append([method, *[summary.average_by_length.get(n) for n in lengths], summary.average,
                         summary.weighted_increasing, _k(eff) if eff else f"< {_k(lengths[0])}"])
            notes += [f"{method} at {note}" for note in summary.notes]
        doc.paragraph(f"RULER score per length: the mean of the task scores ({len(expected)} tasks). "
                      f"Avg: mean over lengths; wAvg: weighted towards long lengths; effective length: "
                      f"the longest length scoring above {threshold}.")
        doc.table(["method", *map(_k, lengths), "Avg", "wAvg (inc)", "effective length"], rows)
        doc.bullets(notes)
        _relative(doc, scores, lengths, expected, threshold)
    elif task == "longbench":
        _longbench(doc, records)
    elif task == "longbench2":
        rows = []
        for (method, length), group in _by(records, "method", "length").items():
            s = longbench2_summary([(r.meta.get("difficulty"), r.meta.get("length_class"), r.score)
                                    for r in group])
            rows.append([method, _k(length), s.overall, s.easy, s.hard, s.short, s.medium, s.long, s.count])
        doc.table(["method", "length", "Overall", "Easy", "Hard", "Short", "Medium", "Long", "questions"],
                  rows)
    else:
        rows = [[method, *[_mean(by_task[s].get(n) for s in by_task) for n in lengths]]
                for method, by_task in scores.items()]
        doc.paragraph("Accuracy in %: the mean of the subtask scores at each length.")
        doc.table(["method", *map(_k, lengths)], rows)


def _longbench(doc: Document, records: list[Record]) -> None:
    """README-style category tables, one per language whose own datasets ran."""
    scores = {key: {s: task_score([r.score for r in g]) for (s,), g in _by(group, "subtask").items()}
              for key, group in _by(records, "method", "length").items()}
    doc.paragraph("LongBench: each category is the mean of its datasets; Avg the mean of the categories "
                  "scored (partial when datasets are missing). Code completion (lcc, repobench-p) counts in "
                  "both languages' tables, as in LongBench's README.")
    for language in _longbench_languages({r.subtask for r in records}):
        rows = []
        for (method, length), datasets in scores.items():
            summary = longbench_summary(datasets, language)
            rows.append([method, _k(length), *[summary.categories.get(c) for c in CATEGORIES[language]],
                         summary.average])
        doc.heading(LANGUAGES[language], 3)
        doc.table(["method", "length", *CATEGORIES[language], "Avg"], rows)



def _longbench_languages(datasets: set[str]) -> list[str]:
    """The languages one of whose own datasets ran; English alone when only shared (code) datasets did."""
    def own(language: str) -> set[str]:
        others = {d for other, groups in CATEGORIES.items() if other != language for g in groups.values()
                  for d in g}
        return {d for group in CATEGORIES[language].values() for d in group} - others

    return [language for language in CATEGORIES if datasets & own(language)] or ["en"]


def _longbench_e(doc: Document, records: list[Record]) -> None:
    """LongBench-E's scorer_e: each dataset's score within the 0-4k, 4-8k and 8k+ length buckets.

    The buckets are by the item's `length` field (words, characters for Chinese), not by tokens;
    the "all datasets" row is the mean of the dataset scores in each bucket.
    """
    buckets = ("0-4k", "4-8k", "8k+")
    rows = []
    for (method, length), group in _by(records, "method", "length").items():
        by_dataset = {subtask: longbench_e_buckets([(r.meta["length_words"], r.score) for r in g
                                                    if isinstance(r.meta.get("length_words"), int)])
                      for (subtask,), g in sorted(_by(group, "subtask").items())}
        rows += [[method, _k(length), subtask, *[scores.get(b) for b in buckets]]
                 for subtask, scores in by_dataset.items()]
        rows.append([method, _k(length), "all datasets",
                     *[_mean(scores.get(b) for scores in by_dataset.values()) for b in buckets]])
    doc.heading("LongBench-E length buckets")
    doc.paragraph("Score in % per dataset within each bucket of the item's length in words (characters for "
                  "Chinese), as LongBench's eval.py --e; the last row of each method is the mean over datasets.")
    doc.table(["method", "length", "dataset", *buckets], rows)


def _relative(doc: Document, scores: dict, lengths: list[int], expected: list[str], threshold: float) -> None:
    """Each method's average as a share of dense at the shortest length (the model against itself)."""
    if "dense" not in scores:
        return
    base = ruler_summary(scores["dense"], threshold, expected).average_by_length.get(lengths[0])
    if not base:
        return
    rows = []
    for method, by_task in scores.items():
        average = ruler_summary(by_task, threshold, expected).average_by_length
        rows.append([method, *[100 * average[n] / base if n in average else None for n in lengths]])
    doc.paragraph(f"Relative to dense at {_k(lengths[0])} ({base:.2f} = 100%):")
    doc.table(["method", *map(_k, lengths)], rows)


def _per_subtask(doc: Document, records: list[Record], scores: dict) -> None:
    lengths = sorted({r.length for r in records})
    recall = {key: _mean(r.needle_recall for r in group)
              for key, group in _by(records, "method", "subtask", "length").items()}
    show_recall = any(v is not None for v in recall.values())
    doc.heading("Scores by subtask, length and method")
    if show_recall:
        doc.paragraph("Score in %; in brackets the needle-block recall of the method's retrievals (0..1).")
    for method, by_task in scores.items():
        doc.heading(method, 3)
        rows = []
        for subtask, by_length in sorted(by_task.items()):
            cells = []
            for n in lengths:
                value, r = by_length.get(n), recall.get((method, subtask, n))
                text = None if value is None else f"{value:.2f}" + (f" ({r:.2f})" if r is not None else "")
                cells.append(text)
            rows.append([subtask, *cells])
        doc.table(["subtask", *map(_k, lengths)], rows)


def _costs(doc: Document, records: list[Record]) -> None:
    doc.heading("Cost per method and length")
    recall = any(r.needle_recall is not None for r in records)
    rows = []
    groups = sorted(_by(records, "method", "length").items(), key=lambda kv: kv[0][::-1])
    for (method, length), group in groups:
        rows.append([method, _k(length), len(group), 100 * mean(r.score for r in group),
                     *([_mean(r.needle_recall for r in group)] if recall else []),
                     round(mean(r.prompt_tokens for r in group)), mean(r.prefill_tps for r in group),
                     mean(r.decode_tps for r in group), mean(r.kv_bytes for r in group) / 2**20,
                     max(r.peak_memory_mb for r in group), mean(r.seconds for r in group)])
    doc.table(["method", "length", "samples", "accuracy %", *(["needle recall"] if recall else []),
               "prompt tokens", "prefill tok/s", "decode tok/s", "KV MiB", "peak MB", "s/sample"], rows)
    _machines(doc, records)


def _machines(doc: Document, records: list[Record]) -> None:
    """Which machines the speeds come from (a sweep run in parts may span several)."""
    if not any(r.machine for r in records):
        return
    counts: dict[str, int] = {}
    for r in records:
        label = r.machine or "not recorded (samples measured before records named their machine)"
        counts[label] = counts.get(label, 0) + 1
    doc.paragraph("Measured on: " + "; ".join(f"{label}: {n} samples" for label, n in counts.items())
                  + (". Speeds from different machines are averaged together above." if len(counts) > 1 else "."))


def _heatmaps(doc: Document, records: list[Record], figures: Path) -> None:
    placed = [r for r in records if r.depth is not None]
    groups = _by(placed, "subtask", "method")
    shown = False
    for (subtask, method), group in groups.items():
        cells = _by(group, "length", "depth")
        if len({d for _, d in cells}) < 2 and len({n for n, _ in cells}) < 2:
            continue
        if not shown:
            doc.heading("Needle in a haystack")
            doc.paragraph("Mean score per context length (columns) and needle depth (rows).")
            shown = True
        path = figures / f"heatmap_{_slug(subtask)}_{_slug(method)}.png"
        heatmap({key: mean(r.score for r in g) for key, g in cells.items()}, f"{subtask}: {method}", path)
        doc.image(path, f"{subtask} heatmap, {method}")


def _tradeoffs(doc: Document, records: list[Record], scores: dict, figures: Path) -> None:
    memory, speed = defaultdict(list), defaultdict(list)
    for (method, length), group in _by(records, "method", "length").items():
        accuracy = _mean(by_length.get(length) for by_length in scores[method].values())
        memory[method].append((mean(r.kv_bytes for r in group) / 2**20, accuracy, length))
        speed[method].append((mean(r.prefill_tps for r in group), accuracy, length))
    doc.heading("Accuracy versus memory and speed")
    doc.paragraph("One point per context length; accuracy is the mean subtask score at that length.")
    doc.image(tradeoff(memory, "KV cache (MiB)", "accuracy vs KV memory", figures / "accuracy_vs_kv.png",
                       log_x=True), "accuracy versus KV memory")
    doc.image(tradeoff(speed, "prefill speed (tokens/s)", "accuracy vs speed",
                       figures / "accuracy_vs_speed.png", log_x=True), "accuracy versus prefill speed")


def _overhead(doc: Document, notes: list[dict]) -> None:
    runs = [n for n in notes if n.get("kind") == "run"]
    if not runs:
        return
    model = sum(n["model_seconds"] for n in runs)
    overhead = sum(n["overhead_seconds"] for n in runs)
    doc.heading("Suite overhead")
    doc.paragraph(f"{len(runs)} run(s): model time {model:.1f} s; the suite's own time (building prompts, "
                  f"scoring, bookkeeping) {overhead:.2f} s = "
                  f"{100 * overhead / model if model else 0:.2f}% of it; "
                  f"model loading {sum(n['load_seconds'] for n in runs):.1f} s (not counted).")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:80]

