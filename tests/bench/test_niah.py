import pytest
from bench_helpers import split_prompt

from longreach.bench import grid, make_sample, score
from longreach.bench.tasks import niah
from longreach.errors import LongreachError


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_needle_at_depth_and_budget_filled(tokenizer, depth):
    sample = make_sample("niah", "niah", tokenizer, 4096, depth=depth)
    assert 4096 - 2 <= len(sample.prompt_ids) + sample.max_new_tokens <= 4096
    (start, end), = sample.needle_token_spans
    assert tokenizer.decode(sample.prompt_ids[start:end]).strip() == niah.NEEDLE.strip()
    # The needle sits at token int(n * depth) of the haystack, moved back to a sentence end.
    asked = int(sample.meta["haystack_tokens"] * depth)
    assert asked - 80 <= sample.meta["insertion_token"] <= asked
    assert abs(start / len(sample.prompt_ids) - depth) < 0.05


def test_deterministic_and_raw_prompt(tokenizer):
    a = make_sample("niah", "niah", tokenizer, 2048, depth=0.4, seed=1, chat=False)
    b = make_sample("niah", "niah", tokenizer, 2048, depth=0.4, seed=1, chat=False)
    assert a.prompt_ids == b.prompt_ids
    text = tokenizer.decode(a.prompt_ids)
    assert text.startswith("This is a very long story book: <book> ")
    assert text.endswith("Question: What is the best thing to do in San Francisco?\nAnswer:")


def test_chat_prompt_has_the_original_messages(tokenizer):
    text = tokenizer.decode(make_sample("niah", "niah", tokenizer, 1024).prompt_ids)
    assert niah.SYSTEM in text
    assert ("What is the best thing to do in San Francisco? "
            "Don't give information outside the document") in text


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("depth", [0.5, 1.0])
def test_context_end_splits_the_haystack_from_the_question(tokenizer, depth, chat):
    sample = make_sample("niah", "niah", tokenizer, 1024, depth=depth, chat=chat)
    document, question = split_prompt(tokenizer, sample)
    if depth == 1.0:  # the needle closes the haystack
        assert document.rstrip().endswith(niah.NEEDLE.strip())
    else:
        _, haystack, _ = niah._haystack(tokenizer, 1)
        assert niah.NEEDLE.strip() in document and document[-40:] in haystack
    # the question is the second user turn (chat) or follows the book's closing tag (raw)
    assert question.startswith("<|im_end|>" if chat else " </book>.\n Based on the content of the book")
    assert niah.QUESTION in question and niah.NEEDLE.strip() not in question


def test_offline_metric_is_rouge1_f_against_the_needle_sentence(tokenizer):
    sample = make_sample("niah", "niah", tokenizer, 1024)
    # the needle has 21 words; these answers' 17 and 6 words are all in it
    assert score("The best thing is to eat a sandwich and sit in Dolores Park on a sunny day.",
                 sample) == pytest.approx(2 * 17 / (21 + 17))
    assert score("Eat a sandwich in Dolores Park.", sample) == pytest.approx(2 * 6 / (21 + 6))
    assert score(niah.NEEDLE, sample) == pytest.approx(1.0)
    assert score("I don't know.", sample) == 0.0


def test_noise_fallback_without_essays(tokenizer, monkeypatch):
    monkeypatch.setattr(niah, "essay_text", lambda: None)
    niah._haystack_copies.cache_clear()
    try:
        sample = make_sample("niah", "niah", tokenizer, 2048, depth=0.5)
        assert sample.meta["haystack"] == "noise"
        assert "The grass is green." in tokenizer.decode(sample.prompt_ids)
        assert len(sample.prompt_ids) + sample.max_new_tokens <= 2048
    finally:
        niah._haystack_copies.cache_clear()


def test_bad_depth_and_tiny_length(tokenizer):
    with pytest.raises(LongreachError, match="depth"):
        make_sample("niah", "niah", tokenizer, 2048, depth=1.5)
    with pytest.raises(LongreachError, match="smaller than the niah template"):
        make_sample("niah", "niah", tokenizer, 100)


def test_grids_like_the_original():
    assert grid(1000, 16000, 35)[:3] == [1000, 1441, 1882] and len(grid(1000, 16000, 35)) == 35
    assert grid(0, 100, 11) == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
