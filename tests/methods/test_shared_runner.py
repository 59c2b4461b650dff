import pytest
from runner import WITHIN_WINDOW, check_chunk_invariant, check_deterministic, check_exact_within_window

from tiny import CONFIGS


@pytest.mark.parametrize("method", list(WITHIN_WINDOW))
@pytest.mark.parametrize("arch", list(CONFIGS))
def test_exact_while_context_fits(method, arch):
    check_exact_within_window(method, arch)


@pytest.mark.parametrize("method", list(WITHIN_WINDOW))
def test_deterministic(method):
    check_deterministic(method)


@pytest.mark.parametrize("method", list(WITHIN_WINDOW))
def test_chunk_size_invariant(method):
    check_chunk_invariant(method)
