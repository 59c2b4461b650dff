"""RULER's constants: verbatim templates (scripts/data/synthetic/constants.py) and the 13 task
configurations (scripts/synthetic.yaml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Template:
    tokens_to_generate: int
    template: str
    answer_prefix: str


# scripts/data/synthetic/constants.py, verbatim.
TEMPLATES = {
    "niah": Template(
        128,
        "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
        "I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic "
        "{type_needle_v} for {query} mentioned in the provided text?",
        " The special magic {type_needle_v} for {query} mentioned in the provided text are"),
    "variable_tracking": Template(
        30,
        "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
        "Question: Find all variables that are assigned the value {query} in the text above.",
        " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are "
        "assigned the value {query}, they are: "),
    "common_words_extraction": Template(
        120,
        "Below is a numbered list of words. In these words, some appear more often than others. Memorize the "
        "ones that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above "
        "list?",
        " Answer: The top 10 words that appear most often in the list are:"),
    "freq_words_extraction": Template(
        50,
        "Read the following coded text and track the frequency of each coded word. Find the three most "
        "frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore "
        "the dots '....'. What are the three most frequently appeared words in the above coded text?",
        " Answer: According to the coded text above, the three most frequently appeared words are:"),
    "qa": Template(
        32,
        "Answer the question based on the given documents. Only give me the answer and do not output any "
        "other words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the "
        "given documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}",
        " Answer:"),
}


@dataclass(frozen=True, slots=True)
class NiahConfig:
    haystack: str       # noise | essay | needle
    key_type: str       # words | numbers | uuids
    value_type: str
    num_keys: int = 1
    num_values: int = 1
    num_queries: int = 1


# scripts/synthetic.yaml
NIAH_TASKS = {
    "niah_single_1": NiahConfig("noise", "words", "numbers"),
    "niah_single_2": NiahConfig("essay", "words", "numbers"),
    "niah_single_3": NiahConfig("essay", "words", "uuids"),
    "niah_multikey_1": NiahConfig("essay", "words", "numbers", num_keys=4),
    "niah_multikey_2": NiahConfig("needle", "words", "numbers"),
    "niah_multikey_3": NiahConfig("needle", "uuids", "uuids"),
    "niah_multivalue": NiahConfig("essay", "words", "numbers", num_values=4),
    "niah_multiquery": NiahConfig("essay", "words", "numbers", num_queries=4),
}
QA_TASKS = {"qa_1": "squad", "qa_2": "hotpotqa"}
TASK_NAMES = (*NIAH_TASKS, "vt", "cwe", "fwe", *QA_TASKS)
SYNTHETIC_TASKS = TASK_NAMES[:-2]
METRICS = {**{name: "string_match_all" for name in SYNTHETIC_TASKS}, "qa_1": "string_match_part",
           "qa_2": "string_match_part"}

