import pytest
from bench_helpers import split_prompt

from longreach.bench import (
    TaskOptions,
    get_task,
    load_samples,
    make_sample,
    resolve_subtasks,
    score,
    task_names,
)
from longreach.bench.metrics import score_answers
from longreach.errors import LongreachError


def test_malformed_lines_are_reported_and_the_rest_load(tokenizer, tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "mine.jsonl", [
        {"context": "The vault code is 4417.", "question": "What is the vault code?", "answers": "4417"},
        "{not json",
        {"context": "text", "answers": ["x"]},
        "",
        {"context": "text", "question": "q", "answers": []},
        {"context": "text", "question": "q", "answers": ["x"], "metric": "bleu"},
        '["a", "list"]',
        {"context": "Alice met Bob in Rome.", "question": "Where?", "answers": ["Rome"], "metric": "qa_f1",
         "id": "r1", "max_new_tokens": 16},
    ])
    result = load_samples("jsonl", "jsonl", tokenizer, 512, options=TaskOptions(data=path))
    assert [p.split(":")[1] for p in result.problems] == ["2", "3", "5", "6", "7"]
    assert "unknown metric 'bleu'" in result.problems[3]
    first, second = result.samples
    assert first.meta["line"] == 1 and first.meta["metric"] == "string_match_part"
    assert second.meta["id"] == "r1" and second.max_new_tokens == 16
    assert "The vault code is 4417." in tokenizer.decode(first.prompt_ids)
    document, question = split_prompt(tokenizer, first)
    assert document.endswith("answer briefly.\n\nThe vault code is 4417.")
    assert question.startswith("\n\nNow, answer the following question")
    assert "Question: What is the vault code?" in question and "4417" not in question
    assert score("It is 4417", first) == 1.0 and score("Rome", second) == 1.0


def test_jsonl_truncates_long_contexts(tokenizer, tmp_path, write_jsonl):
    context = " ".join(f"Sentence {i} is filler." for i in range(2000))
    path = write_jsonl(tmp_path / "long.jsonl", [{"context": context, "question": "What?", "answers": ["x"]}])
    sample = load_samples("jsonl", "jsonl", tokenizer, 1024, options=TaskOptions(data=path)).samples[0]
    assert sample.meta["truncated"] and len(sample.prompt_ids) + sample.max_new_tokens <= 1024
    document, question = split_prompt(tokenizer, sample)  # split in the truncated text
    assert "Sentence 0 is filler." in document and document.endswith("Sentence 1999 is filler.")
    assert "Question: What?" in question and "filler" not in question
    with pytest.raises(LongreachError, match="smaller than the jsonl task template"):
        load_samples("jsonl", "jsonl", tokenizer, 80, options=TaskOptions(data=path))
    with pytest.raises(LongreachError, match="data file not found"):
        load_samples("jsonl", "jsonl", tokenizer, 1024, options=TaskOptions(data=tmp_path / "none.jsonl"))


def test_exact_match_by_hand(tokenizer, tmp_path, write_jsonl):
    meta = {"metric": "exact_match"}
    assert score_answers("The Eiffel Tower.", ["eiffel tower"], meta) == 1.0     # case, article, punctuation
    assert score_answers("  eiffel \n TOWER ", ["Eiffel Tower"], meta) == 1.0   # whitespace collapsed
    assert score_answers("Eiffel Tower, Paris", ["Eiffel Tower"], meta) == 0.0   # one word too many
    assert score_answers("Tower Eiffel", ["Eiffel Tower"], meta) == 0.0          # order counts
    assert score_answers("city of Paris", ["Lyon", "the City of Paris!"], meta) == 1.0   # any answer
    path = write_jsonl(tmp_path / "em.jsonl", [{"context": "The tower is in Paris.", "question": "Where?",
                                                "answers": ["Paris"], "metric": "exact_match"}])
    sample = load_samples("jsonl", "jsonl", tokenizer, 512, options=TaskOptions(data=path)).samples[0]
    assert sample.meta["metric"] == "exact_match"
    assert score("Paris.", sample) == 1.0 and score("In Paris.", sample) == 0.0


def test_registry_names_and_errors(tokenizer):
    assert task_names() == ["passkey", "niah", "ruler", "infinitebench", "longbench", "longbench2", "jsonl"]
    assert len(get_task("ruler").subtasks) == 13 and len(resolve_subtasks("longbench")) == 16
    with pytest.raises(LongreachError, match="unknown task 'rular'; choose from: passkey, niah, ruler"):
        get_task("rular")
    with pytest.raises(LongreachError, match="unknown ruler subtask 'niah_single_9'"):
        resolve_subtasks("ruler", ["niah_single_9"])
    with pytest.raises(LongreachError, match="use load_samples"):
        make_sample("longbench", "hotpotqa", tokenizer, 4096)
    with pytest.raises(LongreachError, match="use make_sample"):
        load_samples("ruler", "vt", tokenizer, 4096)
    with pytest.raises(LongreachError, match="unknown task option"):
        TaskOptions.from_dict({"data_dir": "x"})
    assert TaskOptions.from_dict({"data": "x"}).data.name == "x"
    with pytest.raises(LongreachError, match="unknown metric"):
        score_answers("x", ["x"], {"metric": "bleu"})


def test_passkey_through_the_registry(tokenizer):
    sample = make_sample("passkey", "passkey", tokenizer, 1024, seed=3, depth=0.1)
    assert sample.meta["metric"] == "first_int_match" and score(sample.answers[0], sample) == 1.0
    from longreach.tasks import Sample, passkey_sample, score_passkey  # the engine CLI's imports still work
    assert isinstance(passkey_sample(tokenizer, 512), Sample) and score_passkey("12", ["12"]) == 1.0
