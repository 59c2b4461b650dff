import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "methods"))


@pytest.fixture(scope="session")
def smollm():
    """The embedded default model, loaded once per test session (dense; switch with with_method)."""
    import longreach
    return longreach.load(method="dense")
