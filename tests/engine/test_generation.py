import pytest
import torch

from longreach.errors import LongreachError
from tiny import prompt_ids, tiny_lm


def test_streamed_pieces_make_the_text():
    lm = tiny_lm()
    ids = prompt_ids(30)
    result = lm.generate(ids, max_new_tokens=12)
    assert "".join(lm.stream(ids, max_new_tokens=12)) == result.text
    assert result.finish_reason == "length" and len(result.token_ids) == 12


def test_seeded_sampling_is_reproducible_and_top_k_1_is_greedy():
    lm = tiny_lm()
    ids = prompt_ids(30)
    greedy = lm.generate(ids, max_new_tokens=10).token_ids
    a = lm.generate(ids, max_new_tokens=10, temperature=1.5, seed=7).token_ids
    b = lm.generate(ids, max_new_tokens=10, temperature=1.5, seed=7).token_ids
    assert a == b
    assert lm.generate(ids, max_new_tokens=10, temperature=1.0, top_k=1, seed=1).token_ids == greedy
    assert lm.generate(ids, max_new_tokens=10, temperature=1.0, top_p=1e-6, seed=1).token_ids == greedy


def test_repetition_penalty_changes_the_choice():
    lm = tiny_lm()
    ids = prompt_ids(30)
    plain = lm.generate(ids, max_new_tokens=30).token_ids
    penalised = lm.generate(ids, max_new_tokens=30, repetition_penalty=5.0).token_ids
    assert plain != penalised
    assert len(set(penalised)) >= len(set(plain))


def test_eos_and_stop_strings():
    lm = tiny_lm()
    ids = prompt_ids(30)
    tokens = lm.generate(ids, max_new_tokens=10).token_ids
    lm.eos_ids = {tokens[3]}
    result = lm.generate(ids, max_new_tokens=10)
    assert result.finish_reason == "stop" and result.token_ids == tokens[:tokens.index(tokens[3])]
    lm.eos_ids = set()
    stop = f"{tokens[2]} "
    result = lm.generate(ids, max_new_tokens=10, stop=[stop])
    assert result.finish_reason == "stop" and stop not in result.text


def test_stats_are_filled():
    lm = tiny_lm(method="infllm", n_local=32, n_init=4, block_size=8, topk_blocks=2, exec_block=16)
    stats = lm.generate(prompt_ids(150), max_new_tokens=5).stats
    assert stats.prompt_tokens == 150 and stats.generated_tokens == 5
    assert stats.prompt_tps > 0 and stats.generation_tps > 0 and stats.peak_memory_mb > 0
    assert stats.kv_bytes == sum(stats.kv_bytes_by_device.values()) > 0


def test_a_stored_context_answers_like_processing_everything():
    lm = tiny_lm(prefill_chunk=16)
    document, question = prompt_ids(100), prompt_ids(10, seed=5)
    context = lm.new_session()
    context.prefill(document, chunk=16)
    reused = lm.generate(question, max_new_tokens=8, context=context)
    assert reused.stats.cached_tokens == 100 and reused.stats.prompt_tokens == 10
    assert reused.token_ids == lm.generate(document + question, max_new_tokens=8).token_ids
    assert context.position == 100  # the context itself is untouched


@pytest.mark.parametrize("method, options", [
    ("dense", {}),
    ("squeezed", {"budget": 0.25, "cluster_size": 4, "n_local": 32, "n_init": 4, "block_size": 8,
                  "topk_blocks": 2, "exec_block": 16}),
])
def test_a_marked_document_is_processed_like_a_stored_context(method, options):
    """generate(..., document_end=k) prefills the first k tokens as a document (squeezed clusters
    them alone), then the question: the answer a stored context of those k tokens gives."""
    lm = tiny_lm(method=method, prefill_chunk=16, **options)
    document, question = prompt_ids(120), prompt_ids(12, seed=5)
    context = lm.new_session()
    context.prefill(document, chunk=16, final=False)
    stored = lm.generate(question, max_new_tokens=6, context=context)
    progress = []
    marked = lm.generate(document + question, max_new_tokens=6, document_end=len(document),
                         on_progress=lambda done, total: progress.append((done, total)))
    assert marked.token_ids == stored.token_ids
    assert marked.stats.prompt_tokens == 132 and marked.stats.cached_tokens == 0
    assert progress[0] == (16, 132) and progress[-1] == (132, 132) and progress == sorted(progress)


@pytest.mark.parametrize("end", [0, 132, -1, 1.5, True, "3"])
def test_a_document_end_outside_the_prompt_is_refused(end):
    with pytest.raises(LongreachError, match=r"document_end must be a token index inside the prompt \(1..131\)"):
        tiny_lm().generate(prompt_ids(132), max_new_tokens=2, document_end=end)


def test_all_logits_match_last_logits():
    lm = tiny_lm()
    ids = prompt_ids(40)
    every = lm.new_session().prefill(ids, chunk=16, all_logits=True)
    last = lm.new_session().prefill(ids, chunk=16)
    assert every.shape == (40, 128)
    torch.testing.assert_close(every[-1], last)


@pytest.mark.parametrize("bad", [dict(max_new_tokens=-1), dict(temperature=-1.0), dict(top_p=0.0),
                                 dict(top_k=-2), dict(repetition_penalty=0.0)])
def test_bad_sampling_values_are_refused(bad):
    lm = tiny_lm()
    kwargs = {"max_new_tokens": 4, **bad}
    with pytest.raises(LongreachError):
        lm.generate(prompt_ids(10), **kwargs)


def test_empty_prompt_is_refused():
    lm = tiny_lm()
    with pytest.raises(LongreachError, match="empty"):
        lm.generate([], max_new_tokens=4)


def test_a_piece_is_yielded_before_the_next_token_is_computed(monkeypatch):
    from longreach.engine.generator import Session

    lm = tiny_lm()
    steps = []
    original = Session.step
    monkeypatch.setattr(Session, "step", lambda self, token: steps.append(token) or original(self, token))
    run = lm.run(prompt_ids(30), max_new_tokens=6)
    seen = [len(steps) for _ in run]  # decoding steps done when each piece arrives
    tokens = run.result.token_ids
    assert len(steps) == len(tokens) - 1  # the last token needs no step after it
    assert seen[0] < len(tokens) - 1 and seen == sorted(seen)
    first_text = next(i for i in range(1, len(tokens) + 1) if lm.tokenizer.decode(tokens[:i], skip_special_tokens=True))
    assert seen[0] == first_text - 1  # no step waited for before the first text went out
