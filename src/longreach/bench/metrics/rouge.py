"""ROUGE as the benchmarks compute it.

`rouge1_f` is the offline NIAH score and calls `rouge_score`, as the original does.
`rouge_l_f` reproduces the `rouge` package (pltrdy, 1.0.1) that LongBench calls as
`Rouge().get_scores([pred], [ref], avg=True)["rouge-l"]["f"]`, including its quirks:
texts are split into "sentences" on '.', words on single spaces, and the union LCS and the
word counts are taken over *distinct* words. The LCS walk back breaks ties as that package
does, because with distinct-word counting the chosen LCS changes the score. One difference:
that package recurses per word and fails (LongBench then scores 0) on sentences over ~1000
words; this one does not.
"""

from __future__ import annotations

from ...errors import LongreachError


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


def rouge1_f(prediction: str, reference: str) -> float:
    """ROUGE-1 F of `rouge_score` with the Porter stemmer: FranxYao's offline NIAH score
    (`RougeScorer(["rouge1"], use_stemmer=True).score(needle, response)["rouge1"].fmeasure * 10`) / 10."""
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise LongreachError("the NIAH score needs rouge-score: pip install 'longreach[bench]'") from None
    return rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True).score(reference, prediction)["rouge1"].fmeasure
