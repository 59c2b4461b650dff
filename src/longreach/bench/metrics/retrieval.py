"""Answer checks of the retrieval and multiple-choice benchmarks (InfiniteBench, LongBench v2)."""

from __future__ import annotations

import re


def first_int_match(prediction: str, answers: list[str]) -> float:
    """passkey / number_string: 1.0 when the first run of digits in the prediction is the label."""
    found = re.search(r"\d+", prediction)
    return float(found is not None and found.group(0) == answers[0])


def kv_match(prediction: str, answers: list[str]) -> float:
    """kv_retrieval: 1.0 when the label is a word of the prediction, after punctuation to spaces."""
    for char in "\n:\"'.,?!{}":
        prediction = prediction.replace(char, " ")
    return float(answers[0] in prediction.split())


def extract_answer(response: str) -> str | None:
    """The chosen letter A-D, or None when the response does not state one in the asked format."""
    response = response.replace("*", "")
    match = re.search(r"The correct answer is \(([A-D])\)", response) or \
        re.search(r"The correct answer is ([A-D])", response)
    return match.group(1) if match else None
