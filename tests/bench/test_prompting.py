import pytest

from longreach.bench.prompting import find_spans, largest_fitting, wrap_messages
from longreach.errors import LongreachError


@pytest.mark.parametrize("per_unit", [1, 3, 22, 0.5])
@pytest.mark.parametrize("budget", [100, 4096, 131072])
def test_largest_fitting_finds_the_exact_largest(per_unit, budget):
    calls = []

    def count(n):
        calls.append(n)
        return 40 + int(n * per_unit) + int(n ** 0.5) // 3  # a little non-linear, like real text

    best = largest_fitting(count, budget, 0, 25, tolerance=0)
    assert count(best) <= budget
    assert all(count(n) > budget for n in range(best + 1, best + 8))
    assert len(calls) < 60
    near = largest_fitting(count, budget, 0, 25)  # default: stop within 2 tokens of the budget
    assert budget - 2 <= count(near) <= budget or count(near + 1) > budget


def test_largest_fitting_none_when_the_template_alone_overflows():
    assert largest_fitting(lambda n: 500 + n, 100, 0, 10) is None


def test_find_spans_from_a_start():
    text = "abc needle xyz needle"
    assert find_spans(text, ["needle"], 0) == [(4, 10)]
    assert find_spans(text, ["needle"], 5) == [(15, 21)]
    with pytest.raises(AssertionError):
        find_spans(text, ["absent"])


def test_wrap_messages_raw_and_chat(tokenizer):
    text, offsets = wrap_messages(tokenizer, "SYS", ["CONTEXT", "QUESTION"], chat=False)
    assert text == "SYS\n\nCONTEXT\n\nQUESTION"
    assert [text[o:o + 3] for o in offsets] == ["CON", "QUE"]
    text, offsets = wrap_messages(tokenizer, "SYS", ["CONTEXT", "QUESTION"], chat=True)
    assert text.startswith("<|im_start|>system\nSYS") and text.endswith("<|im_start|>assistant\n")
    assert text[offsets[0]:offsets[0] + 7] == "CONTEXT" and text[offsets[1]:offsets[1] + 8] == "QUESTION"


def test_task_errors_are_longreach_errors(tokenizer):
    from longreach.bench import make_sample
    with pytest.raises(LongreachError, match="smaller than"):
        make_sample("ruler", "niah_single_1", tokenizer, 150)
