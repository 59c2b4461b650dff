import pytest
from bench_helpers import split_prompt

from longreach.bench import make_sample, score
from longreach.bench.metrics.retrieval import first_int_match, kv_match
from longreach.bench.tasks import infinitebench


@pytest.mark.parametrize("task", infinitebench.TASK_NAMES)
@pytest.mark.parametrize("chat", [True, False])
def test_generators(tokenizer, task, chat):
    sample = make_sample("infinitebench", task, tokenizer, 4096, seed=5, depth=0.3, chat=chat)
    again = make_sample("infinitebench", task, tokenizer, 4096, seed=5, depth=0.3, chat=chat)
    assert sample.prompt_ids == again.prompt_ids
    used = len(sample.prompt_ids) + sample.max_new_tokens
    unit = 2 * sample.meta["prompt_tokens"] / sample.meta["haystack_units"]
    assert 4096 - unit - 8 <= used <= 4096
    assert sample.max_new_tokens == infinitebench.MAX_NEW_TOKENS[task]
    (start, end), = sample.needle_token_spans
    assert sample.answers[0] in tokenizer.decode(sample.prompt_ids[start:end])
    assert abs(start / len(sample.prompt_ids) - 0.3) < 0.05
    assert score(sample.answers[0], sample) == 1.0
    document, question = split_prompt(tokenizer, sample)
    if task == "kv_retrieval":  # the JSON object, then the key asked for
        assert document.endswith('"}') and question.lstrip().startswith('Key: "')
    else:
        assert document.rstrip().endswith(infinitebench.NOISE_LINE.strip())
        assert question.lstrip().startswith(infinitebench.INPUTS[task])
    assert sample.answers[0] not in question and "The grass is green" not in question


def test_number_string_key_has_ten_digits(tokenizer):
    sample = make_sample("infinitebench", "number_string", tokenizer, 1024, seed=0)
    assert len(sample.answers[0]) == 10 and sample.answers[0].isdigit()


def test_templates(tokenizer):
    raw = tokenizer.decode(make_sample("infinitebench", "passkey", tokenizer, 1024, chat=False).prompt_ids)
    assert raw.startswith("There is an important info hidden inside a lot of irrelevant text. "
                          "Find it and memorize it.")
    assert raw.endswith("What is the pass key?\n\nThe pass key is")
    kv = tokenizer.decode(make_sample("infinitebench", "kv_retrieval", tokenizer, 1024).prompt_ids)
    assert ("Extract the value corresponding to the specified key in the JSON object below.\n\n"
            "JSON data:\n{") in kv
    assert '"\nThe value associated with the specified key is: ' in kv


def test_scoring_by_hand():
    assert first_int_match("The pass key is 12345.", ["12345"]) == 1.0
    assert first_int_match("It is 2 then 12345", ["12345"]) == 0.0   # only the first number counts
    assert first_int_match("123456", ["12345"]) == 0.0
    assert first_int_match("none", ["12345"]) == 0.0
    assert kv_match('The value is "abc-123".', ["abc-123"]) == 1.0
    assert kv_match("value:abc-123,", ["abc-123"]) == 1.0
    assert kv_match("abc-1234", ["abc-123"]) == 0.0
