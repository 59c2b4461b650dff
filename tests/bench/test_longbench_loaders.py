import json

import pytest
from bench_helpers import split_prompt

from longreach.bench import TaskOptions, load_samples, longbench2_summary, score
from longreach.bench.metrics.retrieval import extract_answer
from longreach.bench.prompting import wrap_prompt
from longreach.bench.tasks.longbench2 import fill_prompt
from longreach.bench.tasks.longbench_spec import PROMPTS
from longreach.errors import LongreachError


def _record(dataset, context, question, answers, **extra):
    return {"input": question, "context": context, "answers": answers, "length": len(context.split()),
            "dataset": dataset, "language": "en", "all_classes": None, "_id": f"{dataset}-{question[:8]}",
            **extra}


@pytest.fixture
def longbench_dir(tmp_path, write_jsonl):
    long_context = " ".join(f"Passage {i}: the river number {i} flows north." for i in range(600))
    write_jsonl(tmp_path / "hotpotqa.jsonl", [
        _record("hotpotqa", "Passage 1: Paris is in France.", "Where is Paris?", ["France"]),
        _record("hotpotqa", long_context, "Which way does river 7 flow?", ["north"]),
        '{"input": "broken", ',
        {"input": "no context", "answers": ["x"]},
        _record("hotpotqa", "Passage 1: Rome is in Italy.", "Where is Rome?", "Italy"),  # not a list
    ])
    classes = ["Entity", "Location", "Human"]
    write_jsonl(tmp_path / "trec.jsonl", [
        _record("trec", "Question: Who wrote it?\nType: Human\n", "Question: Where is Rome?\nType:",
                ["Location"], all_classes=classes)])
    write_jsonl(tmp_path / "samsum.jsonl", [_record("samsum", "Dialogue: A: hi\nSummary: greet\n",
                                                    "Dialogue: B: bye\nSummary:", ["B leaves."])])
    return tmp_path


def test_prompt_chat_template_and_problems(tokenizer, longbench_dir):
    options = TaskOptions(data=longbench_dir)
    result = load_samples("longbench", "hotpotqa", tokenizer, 2048, options=options)
    assert [p.split(":")[1] for p in result.problems] == ["3", "4", "5"]
    assert "not valid JSON" in result.problems[0] and "context" in result.problems[1]
    assert "'answers' must be a list of strings" in result.problems[2]
    short, long = result.samples
    expected = PROMPTS["hotpotqa"].format(context="Passage 1: Paris is in France.", input="Where is Paris?")
    text = tokenizer.decode(short.prompt_ids)
    assert expected in text and text.startswith("<|im_start|>system")
    assert short.max_new_tokens == 32 and short.meta["metric"] == "qa_f1" and not short.meta["truncated"]
    assert score("France.", short) == 1.0
    # the passages end where the instruction is repeated before the question
    document, question = split_prompt(tokenizer, short)
    assert document.endswith("passages.\nPassage 1: Paris is in France.")
    assert question.startswith("\n\nAnswer the question based on the given passages.")
    assert "Question: Where is Paris?" in question and "Passage" not in question


def test_middle_truncation_keeps_head_and_tail(tokenizer, longbench_dir):
    result = load_samples("longbench", "hotpotqa", tokenizer, 1024, options=TaskOptions(data=longbench_dir))
    long = result.samples[1]
    assert long.meta["truncated"] and len(long.prompt_ids) + long.max_new_tokens <= 1024
    assert len(long.prompt_ids) + long.max_new_tokens >= 1024 - 8
    text = tokenizer.decode(long.prompt_ids)
    assert "Answer the question based on the given passages." in text.split("Passage 0:")[0]
    assert "Passage 0:" in text and "Passage 599:" in text and "Passage 300:" not in text
    assert text.endswith("Question: Which way does river 7 flow?\nAnswer:"
                         "<|im_end|>\n<|im_start|>assistant\n")
    # the document ends after the kept tail of the passages, in the truncated text
    document, question = split_prompt(tokenizer, long)
    assert "Passage 0:" in document and document.endswith("Passage 599: the river number 599 flows north.")
    assert "Question: Which way does river 7 flow?" in question and "Passage " not in question


def test_context_end_is_unknown_when_truncation_cuts_the_question(tokenizer, tmp_path, write_jsonl):
    question = " ".join(f"Is river {i} longer than river {i + 1}?" for i in range(300))
    write_jsonl(tmp_path / "hotpotqa.jsonl", [_record("hotpotqa", "Passage 1: short.", question, ["no"])])
    sample = load_samples("longbench", "hotpotqa", tokenizer, 500, options=TaskOptions(data=tmp_path)).samples[0]
    assert sample.meta["truncated"] and sample.context_end is None


def test_cap_like_model2maxlen(tokenizer, longbench_dir):
    options = TaskOptions(data=longbench_dir, max_prompt_tokens=500)
    long = load_samples("longbench", "hotpotqa", tokenizer, 4096, options=options).samples[1]
    assert long.meta["truncated"] and len(long.prompt_ids) <= 500 + 40   # + chat template


def _pred_py(tokenizer, prompt, max_length, chat=True):
    """LongBench's pred.py, written out: middle-truncate the raw prompt's ids, then the chat template."""
    ids = tokenizer(prompt)["input_ids"]
    if len(ids) > max_length:
        half = int(max_length / 2)
        prompt = (tokenizer.decode(ids[:half], skip_special_tokens=True)
                  + tokenizer.decode(ids[-half:], skip_special_tokens=True))
    return wrap_prompt(tokenizer, prompt, "", chat)[0]


def test_length_as_max_length_caps_the_raw_prompt_like_pred_py(tokenizer, longbench_dir):
    options = TaskOptions(data=longbench_dir, length_caps_prompt=True)
    short, long = load_samples("longbench", "hotpotqa", tokenizer, 500, options=options).samples[:2]
    record = _record("hotpotqa", "", "Which way does river 7 flow?", ["north"])
    context = " ".join(f"Passage {i}: the river number {i} flows north." for i in range(600))
    expected = _pred_py(tokenizer, PROMPTS["hotpotqa"].format(**{**record, "context": context}), 500)
    assert long.meta["truncated"] and long.prompt_ids == tokenizer(expected)["input_ids"]
    document, question = split_prompt(tokenizer, long)
    assert document.endswith("river number 599 flows north.") and question.startswith("\n\nAnswer the question")
    # the cap is on the raw prompt: the chat template and the answer come on top of the 500 tokens
    assert len(long.prompt_ids) > 500 and len(long.prompt_ids) + long.max_new_tokens > 500 + 32
    assert not short.meta["truncated"]
    # as a total budget, the same 500 leaves room for the template and the 32 new tokens
    budget = load_samples("longbench", "hotpotqa", tokenizer, 500, options=TaskOptions(data=longbench_dir))
    assert len(budget.samples[1].prompt_ids) + 32 <= 500 < len(long.prompt_ids)
    # model2maxlen below max_length: the smaller cap wins
    options = TaskOptions(data=longbench_dir, length_caps_prompt=True, max_prompt_tokens=300)
    capped = load_samples("longbench", "hotpotqa", tokenizer, 500, options=options).samples[1]
    assert capped.prompt_ids == tokenizer(_pred_py(tokenizer, PROMPTS["hotpotqa"].format(
        **{**record, "context": context}), 300))["input_ids"]


def test_length_as_max_length_for_longbench2_and_not_for_jsonl(tokenizer, tmp_path):
    item = _v2_item(1, context=" ".join(f"Fact {i} is here." for i in range(400)))
    (tmp_path / "data.json").write_text(json.dumps([item]))
    options = TaskOptions(data=tmp_path, length_caps_prompt=True)
    sample = load_samples("longbench2", "all", tokenizer, 300, options=options).samples[0]
    ids = tokenizer(fill_prompt(item))["input_ids"]   # v2's pred.py: one decode of head + tail ids
    raw = tokenizer.decode(ids[:150] + ids[-150:], skip_special_tokens=True)
    expected = wrap_prompt(tokenizer, raw, "", True)[0]
    assert sample.meta["truncated"] and sample.prompt_ids == tokenizer(expected)["input_ids"]
    document, question = split_prompt(tokenizer, sample)
    assert document.endswith("Fact 399 is here.") and "Fact 200" not in document
    assert question.startswith("\n</text>\n\nWhat is the correct answer to this question: Question 1?")
    with pytest.raises(LongreachError, match="jsonl lengths are total budgets"):
        load_samples("jsonl", "jsonl", tokenizer, 300, options=TaskOptions(data=tmp_path / "x.jsonl",
                                                                          length_caps_prompt=True))
    with pytest.raises(LongreachError, match="max_length of 8 tokens"):
        load_samples("longbench2", "all", tokenizer, 8, options=options)


def test_few_shot_datasets_skip_the_chat_template(tokenizer, longbench_dir):
    options = TaskOptions(data=longbench_dir)
    trec = load_samples("longbench", "trec", tokenizer, 2048, options=options).samples[0]
    text = tokenizer.decode(trec.prompt_ids)
    assert "<|im_start|>" not in text and text.startswith("Please determine the type of the question below.")
    assert trec.meta["first_line"] and trec.meta["all_classes"] == ["Entity", "Location", "Human"]
    document, question = split_prompt(tokenizer, trec)  # the examples are the document
    assert document.endswith("Question: Who wrote it?\nType: Human\n")
    assert question == "\nQuestion: Where is Rome?\nType:"
    assert score("Location\nHuman", trec) == 1.0
    samsum = load_samples("longbench", "samsum", tokenizer, 2048, options=options).samples[0]
    assert samsum.meta["stop"] == ["\n"] and samsum.max_new_tokens == 128


def test_bad_locations_and_names(tokenizer, longbench_dir, tmp_path):
    with pytest.raises(LongreachError, match="not found"):
        load_samples("longbench", "hotpotqa", tokenizer, 2048, options=TaskOptions(data=tmp_path / "nope"))
    with pytest.raises(LongreachError, match="unknown longbench dataset 'hotpot'"):
        load_samples("longbench", "hotpot", tokenizer, 2048, options=TaskOptions(data=longbench_dir))
    with pytest.raises(LongreachError, match=r"qasper.jsonl is not in .*found: hotpotqa, samsum, trec"):
        load_samples("longbench", "qasper", tokenizer, 2048, options=TaskOptions(data=longbench_dir))
    with pytest.raises(LongreachError, match="needs its data location"):
        load_samples("longbench", "hotpotqa", tokenizer, 2048)


def _v2_item(i, answer="B", **extra):
    return {"_id": f"id{i}", "domain": "Single-Document QA", "sub_domain": "x", "difficulty": "easy",
            "length": "short", "question": f" Question {i}? ", "choice_A": "one", "choice_B": "two",
            "choice_C": "three", "choice_D": "four", "answer": answer, "context": f"  Context number {i}.  ",
            **extra}


def test_longbench2(tokenizer, tmp_path):
    (tmp_path / "data.json").write_text(json.dumps([_v2_item(1), _v2_item(2, answer="E"), "junk"]))
    result = load_samples("longbench2", "all", tokenizer, 1024, options=TaskOptions(data=tmp_path))
    assert len(result.samples) == 1 and len(result.problems) == 2
    sample = result.samples[0]
    text = tokenizer.decode(sample.prompt_ids)
    assert ("Please read the following text and answer the question below.\n\n<text>\nContext number 1.\n"
            "</text>\n\nWhat is the correct answer to this question: Question 1?\nChoices:\n(A) one\n"
            "(B) two\n(C) three\n(D) four\n\nFormat your response as follows: \"The correct answer is "
            "(insert answer here)\".") in text
    assert sample.max_new_tokens == 128 and sample.meta["difficulty"] == "easy"
    document, question = split_prompt(tokenizer, sample)
    assert document.endswith("<text>\nContext number 1.") and "Context number" not in question
    assert question.startswith("\n</text>\n\nWhat is the correct answer to this question: Question 1?")
    assert score("The correct answer is (B)", sample) == 1.0
    assert score("The correct answer is (A)", sample) == 0.0


def test_v2_answer_extraction_and_summary():
    assert extract_answer("The correct answer is (C).") == "C"
    assert extract_answer("**The correct answer is D**") == "D"
    assert extract_answer("I would pick (A)") is None
    summary = longbench2_summary([("easy", "short", 1.0), ("hard", "long", 0.0), ("hard", "medium", 1.0)])
    assert (summary.overall, summary.easy, summary.hard) == (66.7, 100.0, 50.0)
    assert (summary.short, summary.medium, summary.long) == (100.0, 100.0, 0.0)
