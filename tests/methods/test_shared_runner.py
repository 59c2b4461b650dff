import pytest
from runner import (
    BEYOND_WINDOW,
    INVARIANT_CHUNKS,
    WITHIN_WINDOW,
    check_chunk_invariant,
    check_deterministic,
    check_exact_within_window,
    method_of,
)

from longreach.methods import METHODS
from tiny import CONFIGS


def test_every_registered_method_is_run():
    assert set(WITHIN_WINDOW) == set(INVARIANT_CHUNKS) == {method_of(label) for label in BEYOND_WINDOW} == set(METHODS)


@pytest.mark.parametrize("method", list(WITHIN_WINDOW))
@pytest.mark.parametrize("arch", list(CONFIGS))
def test_exact_while_context_fits(method, arch):
    check_exact_within_window(method, arch)


@pytest.mark.parametrize("label", list(BEYOND_WINDOW))
def test_deterministic(label):
    check_deterministic(label)


@pytest.mark.parametrize("label", list(INVARIANT_CHUNKS))
def test_chunk_size_invariant(label):
    check_chunk_invariant(label)
