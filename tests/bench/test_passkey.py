"""The passkey generator: deterministic per seed, never over its budget, filled to within two tokens."""

import pytest

from longreach.bench import make_sample, score
from longreach.tasks.passkey import MAX_NEW_TOKENS, passkey_sample

LENGTHS = (512, 1000, 2048, 3000)


def test_same_seed_same_prompt_other_seed_other_key(tokenizer):
    first = passkey_sample(tokenizer, 1024, 0.3, seed=7, chat=True)
    again = passkey_sample(tokenizer, 1024, 0.3, seed=7, chat=True)
    assert first.prompt_ids == again.prompt_ids and first.answers == again.answers
    assert first.needle_token_spans == again.needle_token_spans
    keys = {passkey_sample(tokenizer, 1024, 0.3, seed=seed).answers[0] for seed in range(5)}
    assert len(keys) == 5
    # the registry's sample is the same prompt, seeded the same way
    via_registry = make_sample("passkey", "passkey", tokenizer, 1024, seed=7, depth=0.3, chat=True)
    assert via_registry.prompt_ids == first.prompt_ids and score(first.answers[0], via_registry) == 1.0


@pytest.mark.parametrize("chat", [False, True])
@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_budget_never_exceeded_and_filled_within_two_tokens(tokenizer, depth, chat):
    for length in LENGTHS:
        sample = passkey_sample(tokenizer, length, depth, seed=1, chat=chat)
        used = len(sample.prompt_ids) + MAX_NEW_TOKENS
        assert length - 2 <= used <= length, (length, used)
        start, end = sample.needle_token_spans[0]
        assert sample.answers[0] in tokenizer.decode(sample.prompt_ids[start:end])
        assert tokenizer.decode(sample.prompt_ids[sample.context_end:]).startswith("What is the pass key?")


@pytest.mark.parametrize("depth", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_needle_lands_at_the_asked_depth_of_the_noise(tokenizer, depth):
    sample = passkey_sample(tokenizer, 4096, depth, seed=3)
    text = tokenizer.decode(sample.prompt_ids)
    task_end = text.index("important information there.") + len("important information there.")
    needle_end = text.index("is the pass key.") + len("is the pass key.")
    noise_before = tokenizer(text[task_end:text.index("The pass key is")])["input_ids"]
    noise_after = tokenizer(text[needle_end:text.rindex("What is the pass key?")])["input_ids"]
    share = len(noise_before) / (len(noise_before) + len(noise_after))
    assert abs(share - depth) < 0.01, share
