"""RULER's aggregation tasks: common words (cwe) and frequent coded words (fwe) extraction.

cwe: a numbered list where 10 words appear 30 times and the rest 3 times (6 and 1 below 4K),
after one worked example. Words come from the wonderwords noun/adjective/verb lists; when a
prompt needs more distinct words than they hold (about 100K+ tokens), adjective-noun compounds
stand in for RULER's english_words.json. fwe: coded 6-letter words with Zipf counts
int(N * k^-alpha / zeta(alpha)); the most frequent word is '...' noise; answer ranks 2-4.
"""

from __future__ import annotations

import random
import string
from functools import lru_cache

from ..haystacks import wonderwords_list
from ..prompting import Built, Sample, count_tokens, encode_sample, fit_or_raise, template_parts, wrap_prompt
from .ruler_spec import TEMPLATES


@lru_cache(maxsize=1)
def _word_pool() -> tuple[str, ...]:
    words = wonderwords_list("noun") + wonderwords_list("adjective") + wonderwords_list("verb")
    return tuple(sorted(set(words)))


def _sample_words(rng: random.Random, count: int) -> list[str]:
    pool = _word_pool()
    if count <= len(pool):
        return rng.sample(pool, count)
    adjectives, nouns = sorted(set(wonderwords_list("adjective"))), sorted(set(wonderwords_list("noun")))
    picks = rng.sample(range(len(adjectives) * len(nouns)), count)
    return [f"{adjectives[i // len(nouns)]}-{nouns[i % len(nouns)]}" for i in picks]


def _numbered(words: list[str]) -> str:
    return " ".join(f"{i + 1}. {word}" for i, word in enumerate(words))


def _cwe_example(rng: random.Random, num_words: int, common_repeats: int, uncommon_repeats: int,
                 num_common: int) -> tuple[str, list[str]]:
    words = _sample_words(rng, num_words)
    common, uncommon = words[:num_common], words[num_common:]
    listed = common * common_repeats + uncommon * uncommon_repeats
    rng.shuffle(listed)
    return _numbered(listed), common


def cwe_sample(tokenizer, length: int, seed: int, chat: bool, freq_cw: int = 30, freq_ucw: int = 3,
               num_cw: int = 10, num_fewshot: int = 1) -> Sample:
    """One RULER cwe sample: the longest word list whose prompt (with the example) fits `length`."""
    spec = TEMPLATES["common_words_extraction"]
    budget = length - spec.tokens_to_generate
    short = length < 4096  # RULER shrinks the example and the repeats below 4K
    shot_shape = (20, 3, 1) if short else (40, 10, 3)
    repeats = (6, 1) if short else (freq_cw, freq_ucw)

    def build(num_words: int) -> tuple[Built, list[str]]:
        rng = random.Random(f"ruler/cwe/{seed}")
        shots = []
        for _ in range(num_fewshot):
            context, common = _cwe_example(rng, shot_shape[0], shot_shape[1], shot_shape[2], num_cw)
            user = spec.template.format(context=context)
            wrapped, _ = wrap_prompt(tokenizer, user, spec.answer_prefix, chat, verbatim_prefix=True)
            shots.append(wrapped + " " + _numbered(common))
        context, common = _cwe_example(rng, num_words, repeats[0], repeats[1], num_cw)
        task, offset = wrap_prompt(tokenizer, spec.template.format(context=context), spec.answer_prefix, chat,
                                   verbatim_prefix=True)
        lead = "\n".join(shots) + "\n"
        # the document is the worked example(s) and the list; then "Question: What are the 10 ..."
        list_end = len(lead) + offset + len(template_parts(spec.template)[0]) + len(context)
        return Built(lead + task, [], list_end), common

    num_words = fit_or_raise(lambda n: count_tokens(tokenizer, build(n)[0].text), budget, num_cw,
                             num_cw + 100, length, "RULER cwe", spec.tokens_to_generate)
    built, common = build(num_words)
    return encode_sample(tokenizer, built, common, spec.tokens_to_generate,
                         {"haystack": "words", "haystack_units": num_words})


def zeta(alpha: float) -> float:
    """Riemann zeta(alpha) for alpha > 1 (Euler-Maclaurin tail after 1000 terms), as scipy's."""
    assert alpha > 1, "zeta needs alpha > 1"
    n = 1000
    head = sum(k ** -alpha for k in range(1, n))
    return head + n ** (1 - alpha) / (alpha - 1) + 0.5 * n ** -alpha + alpha * n ** (-alpha - 1) / 12


def fwe_sample(tokenizer, length: int, seed: int, chat: bool, alpha: float = 2.0, coded_wordlen: int = 6,
               vocab_size: int | None = None) -> Sample:
    """One RULER fwe sample: the largest Zipf-distributed coded text whose prompt fits `length`."""
    spec = TEMPLATES["freq_words_extraction"]
    budget = length - spec.tokens_to_generate
    vocab_size = vocab_size or max(budget // 50, 4)
    norm = zeta(alpha)

    def build(num_words: int) -> tuple[Built, list[str]]:
        rng = random.Random(f"ruler/fwe/{seed}")
        vocab: set[str] = set()
        while len(vocab) < vocab_size:
            vocab.add("".join(rng.choices(string.ascii_lowercase, k=coded_wordlen)))
        ranked = sorted(vocab)
        rng.shuffle(ranked)
        ranked[0] = "..."  # the most frequent "word" is noise
        counts = [int(num_words * k ** -alpha / norm) for k in range(1, len(ranked) + 1)]
        coded = [word for word, count in zip(ranked, counts, strict=True) for _ in range(count)]
        rng.shuffle(coded)
        context = " ".join(coded)
        text, offset = wrap_prompt(tokenizer, spec.template.format(context=context), spec.answer_prefix, chat,
                                   verbatim_prefix=True)
        # the document is the coded text; then "Question: Do not provide any explanation. ..."
        return Built(text, [], offset + len(template_parts(spec.template)[0]) + len(context)), ranked[1:4]

    num_words = fit_or_raise(lambda n: count_tokens(tokenizer, build(n)[0].text), budget, 0,
                             max(budget // 4, 1), length, "RULER fwe", spec.tokens_to_generate)
    built, answers = build(num_words)
    return encode_sample(tokenizer, built, answers, spec.tokens_to_generate,
                         {"haystack": "coded words", "haystack_units": num_words})
