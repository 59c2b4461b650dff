"""LongBench v1 metrics (LongBench/metrics.py) and scoring rules (LongBench/eval.py).

Each item scores the max over its gold answers; few-shot datasets keep only the prediction's
first line; a dataset scores round(100 * mean, 2). Chinese metrics need `jieba` (optional).
"""

from __future__ import annotations

import difflib
import re
import string
from collections import Counter

from ...errors import LongreachError
from .rouge import rouge_l_f

FIRST_LINE_DATASETS = ("trec", "triviaqa", "samsum", "lsht")
_ZH_PUNCTUATION = ("！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛"
                   "｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰"
                   "〾〿–—‘’‛“”„‟…‧﹏.")


def normalize_answer(text: str) -> str:
    """Lowercase, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def normalize_zh_answer(text: str) -> str:
    """Lowercase, drop ASCII and Chinese punctuation, remove all whitespace."""
    drop = set(string.punctuation + _ZH_PUNCTUATION)
    return "".join("".join(ch for ch in text.lower() if ch not in drop).split())


def token_f1(prediction: list[str], reference: list[str]) -> float:
    """F1 of the multiset overlap of two token lists."""
    same = sum((Counter(prediction) & Counter(reference)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction), same / len(reference)
    return 2 * precision * recall / (precision + recall)


def qa_f1(prediction: str, reference: str) -> float:
    """Token F1 after normalize_answer (SQuAD style)."""
    return token_f1(normalize_answer(prediction).split(), normalize_answer(reference).split())


def _jieba_cut(text: str) -> list[str]:
    try:
        import jieba
    except ImportError:
        raise LongreachError("Chinese LongBench metrics need jieba: pip install jieba") from None
    return list(jieba.cut(text, cut_all=False))


def qa_f1_zh(prediction: str, reference: str) -> float:
    """Token F1 over jieba words, each normalized, empties dropped."""
    def tokens(text):
        return [t for t in (normalize_zh_answer(w) for w in _jieba_cut(text)) if t]
    return token_f1(tokens(prediction), tokens(reference))


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F as LongBench's rouge_score (the `rouge` package)."""
    return rouge_l_f(prediction, reference)


def rouge_l_zh(prediction: str, reference: str) -> float:
    """ROUGE-L F over jieba words joined by spaces."""
    return rouge_l_f(" ".join(_jieba_cut(prediction)), " ".join(_jieba_cut(reference)))


def classification(prediction: str, reference: str, all_classes: list[str]) -> float:
    """1/k when the gold class is among the k classes named in the prediction, else 0.

    Classes that are substrings of the gold label (other than the label) are dropped; the
    original drops them while iterating over the same list, which skips the class after each
    drop, and that behaviour is kept.
    """
    matched = [name for name in all_classes if name in prediction]
    i = 0
    while i < len(matched):
        name = matched[i]
        if name in reference and name != reference:
            matched.remove(name)  # the index still advances below, so the next class is skipped
        i += 1
    return 1.0 / len(matched) if reference in matched else 0.0


def _share_equal(prediction: str, target: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    return sum(number == str(target) for number in numbers) / len(numbers) if numbers else 0.0


def _gold_id(pattern: str, reference: str) -> str:
    found = re.findall(pattern, reference)
    if not found:
        raise LongreachError(f"gold answer {reference!r} has no paragraph number")
    return found[0]


def retrieval(prediction: str, reference: str) -> float:
    """Share of the numbers in the prediction equal to the gold paragraph id ('Paragraph N')."""
    return _share_equal(prediction, _gold_id(r"Paragraph (\d+)", reference))


def retrieval_zh(prediction: str, reference: str) -> float:
    """retrieval for the Chinese gold format '段落N'."""
    return _share_equal(prediction, _gold_id(r"段落(\d+)", reference))


def count(prediction: str, reference: str) -> float:
    """Share of the numbers in the prediction equal to the gold count."""
    return _share_equal(prediction, reference)


def fuzz_ratio(a: str, b: str) -> int:
    """fuzzywuzzy's fuzz.ratio: 0..100 integer; rapidfuzz when installed, else difflib."""
    if a == b:
        return 100
    if not a or not b:
        return 0
    try:
        from rapidfuzz import fuzz
        ratio = fuzz.ratio(a, b) / 100
    except ImportError:
        ratio = difflib.SequenceMatcher(None, a, b).ratio()
    return int(round(100 * ratio))


def code_sim(prediction: str, reference: str) -> float:
    """fuzz.ratio / 100 between the first line without ` # // and the gold line."""
    first = next((line for line in prediction.lstrip("\n").split("\n")
                  if "`" not in line and "#" not in line and "//" not in line), "")
    return fuzz_ratio(first, reference) / 100


METRICS = {"qa_f1": qa_f1, "qa_f1_zh": qa_f1_zh, "rouge_l": rouge_l, "rouge_l_zh": rouge_l_zh,
           "classification": classification, "retrieval": retrieval, "retrieval_zh": retrieval_zh,
           "count": count, "code_sim": code_sim}


def score_item(metric: str, prediction: str, answers: list[str], all_classes: list[str] | None = None,
               first_line: bool = False) -> float:
    """One item's score: the max over its gold answers, after the first-line cut if asked."""
    if first_line:
        prediction = prediction.lstrip("\n").split("\n")[0]
    fn = METRICS[metric]
    if metric == "classification":
        return max((fn(prediction, answer, all_classes or []) for answer in answers), default=0.0)
    return max((fn(prediction, answer) for answer in answers), default=0.0)


def dataset_score(item_scores: list[float]) -> float:
    """LongBench's dataset score: round(100 * mean, 2)."""
    return round(100 * sum(item_scores) / len(item_scores), 2)
