"""benchmarks/methods_compare.py: every configuration of the grid is a valid method configuration."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
from methods_compare import CONFIGS  # noqa: E402

from longreach.methods import method_config  # noqa: E402


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_configuration_is_accepted(name):
    method, options, longest = CONFIGS[name]
    config = method_config(method, options)
    for key, value in options.items():
        assert getattr(config, key) == value
    assert longest >= 8192
