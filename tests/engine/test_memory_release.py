"""A finished sequence's KV memory is freed when its last reference goes, not at the cycle
collector's next full pass: a 32K infllm memory is 1.5 GB, and a sweep runs hundreds of them."""

import gc
import sys
from pathlib import Path

import pytest

from longreach.kv import KVStore
from tiny import prompt_ids, tiny_lm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "methods"))
from runner import BEYOND_WINDOW, method_of  # noqa: E402


def _live_stores() -> int:
    return sum(type(o) is KVStore for o in gc.get_objects())


@pytest.mark.parametrize("method", sorted(BEYOND_WINDOW))
def test_generations_and_sessions_free_their_memory_by_reference_counting(method):
    lm = tiny_lm(method=method_of(method), **BEYOND_WINDOW[method])
    gc.collect()
    before = _live_stores()
    gc.disable()
    try:
        lm.generate(prompt_ids(120), 4, trace=True)
        session = lm.new_session()
        session.prefill(prompt_ids(120), chunk=32)
        fork = session.fork()
        fork.step(5)
        del session, fork
        assert _live_stores() == before
    finally:
        gc.enable()
