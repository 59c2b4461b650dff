"""RULER variable tracking (vt): follow a chain of assignments VAR A = 12345, VAR B = VAR A, ...

As in RULER, one demonstration (3-letter names, about 500 tokens of noise, raw template plus its
answer) precedes the task inside the user message. The haystack unit is one noise line.
"""

from __future__ import annotations

import random
import string

from ..haystacks import NOISE
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
from .ruler_spec import TEMPLATES

DEMO_BUDGET = 500  # tokens of the demonstration's template, context and answer prefix


def _names(rng: random.Random, count: int, letters: int) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choices(string.ascii_uppercase, k=letters))
        if name not in names:
            names.append(name)
    return names


def _chains(rng: random.Random, num_chains: int, num_hops: int, letters: int):
    names = _names(rng, (num_hops + 1) * num_chains, letters)
    groups, chains = [], []
    for c in range(num_chains):
        group = names[c * (num_hops + 1):(c + 1) * (num_hops + 1)]
        lines = [f"VAR {group[0]} = {rng.randint(10000, 99998)}"]  # np.random.randint(10000, 99999)
        lines += [f"VAR {group[j + 1]} = VAR {group[j]} " for j in range(num_hops)]
        groups.append(group)
        chains.append(lines)
    return groups, chains


def _task_text(rng: random.Random, n_noise: int, num_chains: int, num_hops: int, letters: int):
    """(template+prefix pieces, answer names, chain-0 lines, character where the noise ends in the
    user text) with chains at random noise lines."""
    spec = TEMPLATES["variable_tracking"]
    groups, chains = _chains(rng, num_chains, num_hops, letters)
    lines = [NOISE] * n_noise
    for chain in chains:
        positions = sorted(rng.sample(range(len(lines)), len(chain)))
        for j, position in enumerate(positions):
            lines.insert(position + j, chain[j])
    context = "\n".join(lines).replace(". \n", ".\n")
    value = chains[0][0].split("=")[-1].strip()
    user = spec.template.format(context=context, query=value)
    prefix = spec.answer_prefix.format(num_v=num_hops + 1, query=value)
    head, _ = template_parts(spec.template, query=value)
    return user, prefix, groups[0], chains[0], len(head) + len(context)


def _demonstration(tokenizer, seed_key: str, num_chains: int, num_hops: int) -> str:
    """The worked example: raw template + answer prefix + '  NAME NAME ...' + newline."""
    def text(n_noise: int) -> tuple[str, list[str]]:
        user, prefix, names, _, _ = _task_text(random.Random(seed_key), n_noise, num_chains,
                                               min(10, num_hops), letters=3)
        return user + prefix, names

    low = (min(10, num_hops) + 1) * num_chains
    n_noise = fit_or_raise(lambda n: count_tokens(tokenizer, text(n)[0]), DEMO_BUDGET, low, low + 5,
                           DEMO_BUDGET, "RULER vt demonstration", 0)
    body, names = text(n_noise)
    return body + " " + " ".join(names) + "\n"


def vt_sample(tokenizer, length: int, seed: int, chat: bool, num_chains: int = 1,
              num_hops: int = 4) -> Sample:
    """One RULER vt sample: the largest noise haystack whose prompt fits `length`."""
    spec = TEMPLATES["variable_tracking"]
    budget = length - spec.tokens_to_generate
    demo = _demonstration(tokenizer, f"ruler/vt/{seed}/demo", num_chains, num_hops)

    def build(n_noise: int) -> tuple[Built, list[str]]:
        user, prefix, names, chain, noise_end = _task_text(random.Random(f"ruler/vt/{seed}"), n_noise,
                                                           num_chains, num_hops, letters=5)
        text, offset = wrap_prompt(tokenizer, demo + "\n" + user, prefix, chat, verbatim_prefix=True)
        task_start = offset + len(demo) + 1
        # the document is the demonstration and the noise with the chains; then "Question: Find all ..."
        return Built(text, find_spans(text, [line.strip() for line in chain], task_start),
                     task_start + noise_end), names

    low = (num_hops + 1) * num_chains
    n_noise = fit_or_raise(lambda n: count_tokens(tokenizer, build(n)[0].text), budget, low, low + 25,
                           length, "RULER vt", spec.tokens_to_generate)
    built, names = build(n_noise)
    return encode_sample(tokenizer, built, names, spec.tokens_to_generate,
                         {"haystack": "noise", "haystack_units": n_noise})
