"""ROUGE as the benchmarks compute it, without extra dependencies.

`rouge_l_f` reproduces the `rouge` package (pltrdy, 1.0.1) that LongBench calls as
`Rouge().get_scores([pred], [ref], avg=True)["rouge-l"]["f"]`, including its quirks:
texts are split into "sentences" on '.', words on single spaces, and the union LCS and the
word counts are taken over *distinct* words. The LCS walk back breaks ties as that package
does, because with distinct-word counting the chosen LCS changes the score. One difference:
that package recurses per word and fails (LongBench then scores 0) on sentences over ~1000
words; this one does not.
"""

from __future__ import annotations

import re
from collections import Counter


def _sentences(text: str) -> list[str]:
    return [" ".join(part.split()) for part in text.split(".") if len(part) > 0]


def _words(sentences: list[str]) -> list[str]:
    return [word for sentence in sentences for word in sentence.split(" ")]


def _lcs_words(x: list[str], y: list[str]) -> list[str]:
    """Words of one longest common subsequence, walked back as pltrdy's _recon_lcs does."""
    table = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for i in range(1, len(x) + 1):
        row, above = table[i], table[i - 1]
        for j in range(1, len(y) + 1):
            row[j] = above[j - 1] + 1 if x[i - 1] == y[j - 1] else max(above[j], row[j - 1])
    picked, i, j = [], len(x), len(y)
    while i > 0 and j > 0:
        if x[i - 1] == y[j - 1]:
            picked.append(x[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return picked


def rouge_l_f(prediction: str, reference: str) -> float:
    """Summary-level ROUGE-L F of the `rouge` package; 0.0 where it raises (empty hypothesis)."""
    hyp, ref = _sentences(prediction), _sentences(reference)
    if not hyp or not ref:
        return 0.0
    hyp_words = [_words([sentence]) for sentence in hyp]
    union: set[str] = set()
    for ref_sentence in ref:
        ref_words = _words([ref_sentence])
        for words in hyp_words:
            union.update(_lcs_words(ref_words, words))
    m, n = len(set(_words(ref))), len(set(_words(hyp)))
    recall, precision = len(union) / m, len(union) / n
    return 2.0 * ((precision * recall) / (precision + recall + 1e-8))


def _unigrams(text: str) -> Counter:
    return Counter(re.findall(r"[a-z0-9]+", text.lower()))


def rouge1_recall(prediction: str, reference: str) -> float:
    """Share of the reference's words (lowercased alphanumerics, with counts) found in the prediction."""
    ref = _unigrams(reference)
    if not ref:
        return 0.0
    return sum((ref & _unigrams(prediction)).values()) / sum(ref.values())


def rouge1_f(prediction: str, reference: str) -> float:
    """Unigram F1 on lowercased alphanumeric words (FranxYao's NIAH score / 10, without stemming)."""
    ref, pred = _unigrams(reference), _unigrams(prediction)
    overlap = sum((ref & pred).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / sum(pred.values()), overlap / sum(ref.values())
    return 2 * precision * recall / (precision + recall)
