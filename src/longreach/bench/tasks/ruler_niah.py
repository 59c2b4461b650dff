"""RULER's needle-in-a-haystack family (niah_single_*, niah_multikey_*, niah_multivalue/query).

Needles "One of the special magic {values} for {key} is: {value}." go into a noise, essay or
distractor-needle haystack; the query asks for the values of one or more keys. The haystack
unit is a noise line or distractor needle (joined by newlines) or an essay word.
"""

from __future__ import annotations

import random
import uuid
from functools import lru_cache

from ..haystacks import ESSAY_MISSING_NOTE, NOISE, essay_words, split_sentences, wonderwords_list
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
from .ruler_spec import TEMPLATES, NiahConfig

NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
DEPTHS = [round(100 * i / 39) for i in range(40)]  # np.round(np.linspace(0, 100, 40))
PROBE_UNITS = {"essay": 500, "noise": 25, "needle": 25}  # RULER's search increments


@lru_cache(maxsize=1)
def _key_words() -> tuple[list[str], list[str]]:
    return sorted(set(wonderwords_list("adjective"))), sorted(set(wonderwords_list("noun")))


def random_value(rng: random.Random, kind: str) -> str:
    """A key or value of one needle type: a 7-digit number, an adjective-noun pair, or a UUID."""
    if kind == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))
    if kind == "words":  # uniform over the adjective x noun product, without materialising it
        adjectives, nouns = _key_words()
        return f"{rng.choice(adjectives)}-{rng.choice(nouns)}"
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(f"unknown needle type {kind!r}")


def singularize(template: str, answer_prefix: str, type_needle_v: str) -> tuple[str, str, str]:
    """RULER's rewrite of the question when exactly one value is asked for."""
    def one(text: str) -> str:
        text = text.replace("Some", "A").replace("are all", "is").replace("are", "is")
        return text.replace("answers", "answer")
    return one(template), one(answer_prefix), type_needle_v[:-1]


def _essay_context(rng: random.Random, words, n_words: int, needles: list[str]) -> tuple[str, list[int]]:
    repeats = -(-n_words // len(words)) if n_words > len(words) else 1
    text = " ".join((list(words) * repeats)[:n_words])
    sentences = split_sentences(text.strip())
    depths = rng.sample(DEPTHS, len(needles))
    cuts = [0] + sorted(int(len(sentences) * (d / 100)) for d in depths) + [len(sentences)]
    pieces = []
    for i in range(1, len(cuts)):
        pieces.append(" ".join(sentences[cuts[i - 1]:cuts[i]]))
        if i - 1 < len(needles):
            pieces.append(needles[i - 1])
    return " ".join(pieces), depths


def _line_context(rng: random.Random, lines: list[str], needles: list[str]) -> str:
    indexes = sorted(rng.sample(range(len(lines)), len(needles)), reverse=True)
    for index, needle in zip(indexes, needles, strict=True):
        lines.insert(index, needle)
    return "\n".join(lines)


def niah_sample(tokenizer, name: str, config: NiahConfig, length: int, seed: int, chat: bool) -> Sample:
    """One RULER NIAH sample of task `name`, the largest haystack that fits `length`."""
    spec = TEMPLATES["niah"]
    budget = length - spec.tokens_to_generate
    haystack, note = config.haystack, None
    words = essay_words() if haystack == "essay" else None
    if haystack == "essay" and words is None:
        haystack, note = "noise", ESSAY_MISSING_NOTE
    num_keys = max(config.num_keys, config.num_queries)
    template, prefix, type_v = spec.template, spec.answer_prefix, config.value_type
    if config.num_queries * config.num_values == 1:
        template, prefix, type_v = singularize(template, prefix, type_v)

    def draw(n_units: int):
        rng = random.Random(f"ruler/{name}/{seed}")
        keys, values, needles = [], [], []
        for _ in range(num_keys):
            keys.append(random_value(rng, config.key_type))
            values.append([random_value(rng, config.value_type) for _ in range(config.num_values)])
            needles += [NEEDLE.format(type_needle_v=config.value_type, key=keys[-1], value=v)
                        for v in values[-1]]
        rng.shuffle(needles)
        asked = rng.sample(range(num_keys), config.num_queries)
        depths = None
        if haystack == "essay":
            context, depths = _essay_context(rng, words, n_units, needles)
        elif haystack == "noise":
            context = _line_context(rng, [NOISE] * n_units, needles)
        else:
            distractors = [NEEDLE.format(type_needle_v=config.value_type,
                                         key=random_value(rng, config.key_type),
                                         value=random_value(rng, config.value_type)) for _ in range(n_units)]
            context = _line_context(rng, distractors, needles)
        queries = [keys[i] for i in asked]
        query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]
        answers = [v for i in asked for v in values[i]]
        found = [NEEDLE.format(type_needle_v=config.value_type, key=keys[i], value=v)
                 for i in asked for v in values[i]]
        return context, query, answers, found, depths

    def build(n_units: int) -> tuple[Built, list[str], list[int] | None]:
        context, query, answers, found, depths = draw(n_units)
        user = template.format(type_needle_v=type_v, context=context, query=query)
        prompt_prefix = prefix.format(type_needle_v=type_v, query=query)
        text, offset = wrap_prompt(tokenizer, user, prompt_prefix, chat, verbatim_prefix=True)
        lead, _ = template_parts(template, type_needle_v=type_v, query=query)
        context_end = offset + len(lead) + len(context)
        return Built(text, find_spans(text, found, offset), context_end), answers, depths

    low = 0 if haystack == "essay" else num_keys * config.num_values  # room for every needle
    units = fit_or_raise(lambda n: count_tokens(tokenizer, build(n)[0].text), budget, low,
                         low + PROBE_UNITS[haystack], length, f"RULER {name}", spec.tokens_to_generate)
    built, answers, depths = build(units)
    meta = {"haystack": haystack, "haystack_units": units}
    if depths is not None:
        meta["needle_depths"] = sorted(depths)
    if note:
        meta["haystack_note"] = note
    return encode_sample(tokenizer, built, answers, spec.tokens_to_generate, meta)
