import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def smollm():
    """The embedded default model, loaded once per test session (dense; switch with with_method)."""
    import longreach
    return longreach.load(method="dense")
