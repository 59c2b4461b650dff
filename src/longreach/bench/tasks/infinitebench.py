"""InfiniteBench's synthetic retrieval tasks: passkey, number_string, kv_retrieval.

Contexts as data/construct_synthetic_dataset.py builds them (noise lines around one needle line,
or a JSON object of UUID pairs), sized here to the token budget instead of the fixed 8K-128K
noise counts, with the needle at `depth`. Chat models get the GPT-4 templates (src/prompt.py);
raw mode gets the YaRN-Mistral templates, which end with an answer cue.
"""

from __future__ import annotations

import random
import uuid

from ...errors import LongreachError
from ..prompting import (
    Built,
    Sample,
    count_tokens,
    encode_sample,
    find_spans,
    fit_or_raise,
    template_parts,
    wrap_prompt,
)

NOISE_LINE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
NEEDLES = {
    "passkey": "The pass key is {key}. Remember it. {key} is the pass key.\n",
    "number_string": "The sequence of digits is {key}. Remember it. {key} is the sequence of digits.\n",
}
INPUTS = {"passkey": "What is the pass key?", "number_string": "What is the sequence of digits?"}
CHAT_TEMPLATES = {
    "passkey": "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
               "them. I will quiz you about the important information there.\n\n{context}\n\n{input}",
    "number_string": "There is an important info hidden inside a lot of irrelevant text. Find it. I will "
                     "quiz you about the important information there.\n\n{context}\n\n{input}",
    "kv_retrieval": "Extract the value corresponding to the specified key in the JSON object below.\n\n"
                    "{context}\n\n{input}",
}
RAW_TEMPLATES = {
    "passkey": "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
               "I will quiz you about the important information.\n\n{context}\n\n{input}\n\nThe pass key is",
    "number_string": "There is an important info hidden inside a lot of irrelevant text. Find it. I will "
                     "quiz you about the important information there.\n\n{context}\n\n{input}\n\n"
                     "The sequence of digits is",
    "kv_retrieval": CHAT_TEMPLATES["kv_retrieval"],
}
MAX_NEW_TOKENS = {"passkey": 6, "number_string": 12, "kv_retrieval": 50}
METRICS = {"passkey": "first_int_match", "number_string": "first_int_match", "kv_retrieval": "kv_match"}
TASK_NAMES = tuple(MAX_NEW_TOKENS)


def _key(rng: random.Random, task: str) -> str:
    digits = [str(rng.randint(0, 9)) for _ in range(5)]
    if task == "number_string":  # five digits, each of five times one of them doubled in place
        for k in range(5):
            at = rng.randint(0, 5 + k - 1)
            digits.insert(at, digits[at])
    return "".join(digits)


def _template(task: str, chat: bool) -> str:
    return (CHAT_TEMPLATES if chat else RAW_TEMPLATES)[task]


def _kv_pair(rng: random.Random) -> tuple[str, str]:
    return tuple(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(2))


def infinitebench_sample(tokenizer, task: str, length: int, depth: float = 0.5, seed: int = 0,
                         chat: bool = True) -> Sample:
    """One InfiniteBench retrieval sample with its needle at `depth` (0..1), fitted to `length`.

    Args:
        tokenizer: the model's tokenizer.
        task: passkey, number_string or kv_retrieval.
        length: total token budget (prompt + the task's max new tokens: 6, 12, 50).
        depth: where the needle line (or the asked key) sits among the noise lines (or pairs).
        seed: picks the key and, for kv_retrieval, the pairs.
        chat: GPT-4 template in the chat template; else the raw YaRN-Mistral template.
    """
    if task not in TASK_NAMES:
        raise LongreachError(f"unknown InfiniteBench task {task!r}; choose from: {', '.join(TASK_NAMES)}")
    if not 0.0 <= depth <= 1.0:
        raise LongreachError(f"depth must be within 0..1, got {depth}")
    new_tokens = MAX_NEW_TOKENS[task]

    def build(units: int) -> tuple[Built, str]:
        rng = random.Random(f"infinitebench/{task}/{seed}")
        if task == "kv_retrieval":
            pairs = [_kv_pair(rng) for _ in range(max(units, 1))]
            key, answer = pairs[min(int(depth * len(pairs)), len(pairs) - 1)]
            context = "JSON data:\n{" + ", ".join(f'"{k}": "{v}"' for k, v in pairs) + "}"
            question = f'\nKey: "{key}"\nThe value associated with the specified key is: '
            needle = f'"{key}": "{answer}"'
        else:
            answer = _key(rng, task)
            needle = NEEDLES[task].format(key=answer)
            before = round(depth * units)
            context = NOISE_LINE * before + needle + NOISE_LINE * (units - before)
            question = INPUTS[task]
        template = _template(task, chat)
        text, offset = wrap_prompt(tokenizer, template.format(context=context, input=question), "", chat)
        # the document is the noise lines (or the JSON object); the input and the answer cue follow
        lead, _ = template_parts(template, input=question)
        return Built(text, find_spans(text, [needle.strip()], offset), offset + len(lead) + len(context)), answer

    low = 1 if task == "kv_retrieval" else 0
    units = fit_or_raise(lambda n: count_tokens(tokenizer, build(n)[0].text), length - new_tokens, low,
                         low + 20, length, f"InfiniteBench {task}", new_tokens)
    built, answer = build(units)
    meta = {"task": "infinitebench", "subtask": task, "length": length, "depth": depth, "seed": seed,
            "chat": chat, "metric": METRICS[task], "haystack_units": units}
    return encode_sample(tokenizer, built, [answer], new_tokens, meta)

