"""`longreach bench` and `longreach report` end to end on a tiny model, and their bad-input messages."""

import json

import pytest
from bench_helpers import FAST_INFLLM, cli, records, tiny_model_dir

from longreach.machine import machine_label

BASE = ["--max-new-tokens", 2, "--no-progress"]


@pytest.fixture(scope="module")
def model():
    return tiny_model_dir()


def test_ruler_sweep_then_report(tmp_path, capsys, model):
    out = tmp_path / "ruler"
    code, _, err = cli(capsys, "bench", "--task", "ruler", "--subtasks", "niah_single_1,vt,qa_1", "--lengths",
                       "1k,1536", "--methods", f"dense,{FAST_INFLLM}", "--samples", 1, "--model", model,
                       "--out", out, *BASE)
    assert code == 0, err
    assert "skipping ruler qa_1" in err and "suite overhead" in err
    rows = records(out)
    assert len(rows) == 2 * 2 * 2  # subtasks x lengths x methods
    infllm = "infllm[block_size=32,exec_block=64,n_init=16,n_local=256,topk_blocks=2]"
    assert {r["method"] for r in rows} == {"dense", infllm}
    assert {r["machine"] for r in rows} == {machine_label("cpu")}  # where each sample's speed was measured
    code, _, err = cli(capsys, "bench", "--task", "ruler", "--subtasks", "niah_single_1,vt,qa_1", "--lengths",
                       "1k,1536", "--methods", f"dense,{FAST_INFLLM}", "--samples", 1, "--model", model,
                       "--out", out, *BASE)
    assert code == 0 and "nothing to run" in err and len(records(out)) == 8

    code, printed, err = cli(capsys, "report", out)
    assert code == 0, err
    md = (out / "report.md").read_text()
    assert "effective length" in md and "| niah_single_1 |" in md and "qa_1 skipped" in md
    assert "Suite overhead" in md and "(figures/accuracy_vs_kv.png)" in md
    assert f"Measured on: {machine_label('cpu')}: 8 samples." in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "<table>" in html and "src=\"figures" not in html


def test_niah_grid_heatmap(tmp_path, capsys, model):
    out = tmp_path / "niah"
    code, _, err = cli(capsys, "bench", "--task", "niah", "--lengths", "1k:2k:2", "--depths", "0:100:3",
                       "--method", "dense", "--model", model, "--out", out, *BASE)
    assert code == 0, err
    rows = records(out)
    assert sorted({(r["length"], r["depth"]) for r in rows}) == [(n, d) for n in (1024, 2048)
                                                                 for d in (0.0, 0.5, 1.0)]
    assert cli(capsys, "report", out)[0] == 0
    assert (out / "figures" / "heatmap_niah_dense.png").stat().st_size > 1000
    assert "heatmap" in (out / "report.md").read_text()


def test_jsonl_task_malformed_line_reported_rest_runs(tmp_path, capsys, model, write_jsonl):
    data = write_jsonl(tmp_path / "mine.jsonl", [
        {"context": "The cat is black.", "question": "What color is the cat?", "answers": ["black"]},
        "{not json",
        {"context": "It rained on Monday.", "question": "When did it rain?", "answers": "Monday"},
        {"context": "x", "question": "y"}])
    out = tmp_path / "mine"
    code, _, err = cli(capsys, "bench", "--task", "jsonl", "--data", data, "--lengths", "512",
                       "--method", "dense", "--model", model, "--out", out, *BASE)
    assert code == 0, err
    assert "mine.jsonl:2:" in err and "mine.jsonl:4:" in err
    assert len(records(out)) == 2
    notes = [json.loads(line) for line in (out / "notes.jsonl").read_text().splitlines()]
    assert any(n["kind"] == "problem" and "mine.jsonl:2:" in n["text"] for n in notes)


def test_data_edited_after_a_run_is_refused_on_resume(tmp_path, capsys, model, write_jsonl):
    """Fixing a malformed line shifts the items after it: resuming would file answers under other
    prompts, so it is refused and the recorded results stay as they were."""
    good = [{"context": "The cat is black.", "question": "What color is the cat?", "answers": ["black"]},
            {"context": "It rained on Monday.", "question": "When did it rain?", "answers": "Monday"}]
    data = write_jsonl(tmp_path / "mine.jsonl", [good[0], "{not json", good[1]])
    out = tmp_path / "mine"
    args = ["bench", "--task", "jsonl", "--data", data, "--lengths", "512", "--method", "dense", "--model", model,
            "--out", out, *BASE]
    assert cli(capsys, *args)[0] == 0
    before = (out / "results.jsonl").read_text()
    write_jsonl(data, [good[0], {"context": "Bob is 7.", "question": "How old is Bob?", "answers": "7"}, good[1]])
    code, _, err = cli(capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "line 2 of jsonl (512 tokens)" in err and "recorded for dense" in err and "the data changed" in err
    other_method = [a if a != "dense" else "streaming" for a in args]  # not recorded yet: still refused
    assert cli(capsys, *other_method)[0] == 2
    assert (out / "results.jsonl").read_text() == before
    write_jsonl(data, [*good, {"context": "Bob is 7.", "question": "How old is Bob?", "answers": "7"}])
    code, _, err = cli(capsys, *args)  # an item appended after the recorded ones: the run resumes
    assert code == 0 and len(records(out)) == 3, err


def _longbench_data(directory, write_jsonl):
    context = " ".join(f"Passage {i}: the river number {i} flows north." for i in range(300))
    rows = [{"input": "Which way does river 7 flow?", "context": context, "answers": ["north"], "length": 3000,
             "dataset": "hotpotqa", "language": "en", "all_classes": None, "_id": "long"}]
    write_jsonl(directory / "hotpotqa.jsonl", rows)
    return directory


def test_longbench_max_length_caps_the_raw_prompt(tmp_path, capsys, model, write_jsonl):
    data = _longbench_data(tmp_path, write_jsonl)
    argv = ["bench", "--task", "longbench", "--data", data, "--datasets", "hotpotqa", "--method", "dense",
            "--model", model, *BASE]
    code, _, err = cli(capsys, *argv, "--max-length", 512, "--out", tmp_path / "cap")
    assert code == 0, err
    capped, = records(tmp_path / "cap")
    assert capped["length"] == 512 and capped["meta"]["truncated"]
    assert 512 < capped["prompt_tokens"] < 512 + 40     # the chat template comes on top of the cap
    assert json.loads((tmp_path / "cap" / "config.json").read_text())["length_caps_prompt"] is True
    # --lengths keeps the total budget: template and the 32 new tokens fit within 512
    assert cli(capsys, *argv, "--lengths", 512, "--out", tmp_path / "budget")[0] == 0
    budget, = records(tmp_path / "budget")
    assert budget["prompt_tokens"] + 32 <= 512
    # one meaning per directory
    code, _, err = cli(capsys, *argv, "--lengths", 512, "--out", tmp_path / "cap")
    assert code == 2 and "another configuration" in err and "length_caps_prompt" in err


def test_max_length_is_a_total_budget_for_other_tasks(tmp_path, capsys, model):
    out = tmp_path / "ruler"
    code, _, err = cli(capsys, "bench", "--task", "ruler", "--subtasks", "vt", "--max-length", "1k", "--samples", 1,
                       "--method", "dense", "--model", model, "--out", out, *BASE)
    assert code == 0, err
    row, = records(out)
    assert row["length"] == 1024 and row["prompt_tokens"] + 30 <= 1024
    assert "length_caps_prompt" not in json.loads((out / "config.json").read_text())


@pytest.mark.parametrize("argv, message", [
    (["--task", "longbench", "--datasets", "hotpotqa", "--data", ".", "--max-length", "4k",
      "--max-prompt-tokens", 3000], "give --max-length or --max-prompt-tokens, not both"),
    (["--task", "longbench", "--datasets", "hotpotqa", "--data", ".", "--max-length", "4k",
      "--lengths", "4k"], "give --lengths or --max-length, not both"),
    (["--task", "nosuch"], "unknown task 'nosuch'"),
    (["--task", "longbench", "--datasets", "nosuch", "--data", "."], "unknown longbench dataset 'nosuch'"),
    (["--task", "longbench", "--datasets", "hotpotqa", "--data", "/no/such/dir"], "data directory not found"),
    (["--task", "longbench", "--datasets", "hotpotqa"], "pass --data"),
    (["--task", "ruler", "--subtasks", "vt", "--lengths", "64"], "smaller than the"),
    (["--task", "ruler", "--depths", "10,50"], "--depths applies to"),
    (["--task", "niah", "--methods", "nosuch"], "unknown method 'nosuch'"),
    (["--task", "niah", "-o", "bogus=1"], "apply to none"),
    (["--task", "niah", "--lengths", "4k:2k:3"], "empty"),
])
def test_bad_input_one_line_exit_2(tmp_path, capsys, model, argv, message):
    code, _, err = cli(capsys, "bench", *argv, "--model", model, "--out", tmp_path / "x", *BASE)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_other_configuration_refused_nothing_lost(tmp_path, capsys, model):
    out = tmp_path / "run"
    argv = ["bench", "--task", "ruler", "--subtasks", "vt", "--lengths", "1k", "--samples", 1,
            "--method", "dense", "--model", model, "--out", out, *BASE]
    assert cli(capsys, *argv)[0] == 0
    before = (out / "results.jsonl").read_bytes()
    code, _, err = cli(capsys, *argv, "--raw")
    assert code == 2 and "another configuration" in err and "chat" in err
    code, _, err = cli(capsys, *argv[:-len(BASE)], "--max-new-tokens", 3, "--no-progress")
    assert code == 2 and "max_new_tokens" in err
    assert (out / "results.jsonl").read_bytes() == before


def test_report_of_an_empty_directory(tmp_path, capsys):
    code, _, err = cli(capsys, "report", tmp_path)
    assert code == 2 and "holds no benchmark results" in err
