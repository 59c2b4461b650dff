"""The method registry: name -> config class. Add a method by writing one file and listing it here."""

from __future__ import annotations

from ..errors import LongreachError
from .base import MethodConfig, MethodContext, Policy, Trace
from .dense import DenseConfig
from .infllm import InfLLMConfig
from .self_extend import SelfExtendConfig
from .snapkv import SnapKVConfig
from .squeezed import SqueezedConfig
from .streaming import StreamingConfig

METHODS: dict[str, type[MethodConfig]] = {
    "dense": DenseConfig,
    "streaming": StreamingConfig,
    "infllm": InfLLMConfig,
    "self_extend": SelfExtendConfig,
    "snapkv": SnapKVConfig,
    "squeezed": SqueezedConfig,
}


def method_config(name: str, options: dict | None = None) -> MethodConfig:
    """The validated config of method `name` with `options`; a clear error for unknown names or keys."""
    if name not in METHODS:
        raise LongreachError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
    return METHODS[name].from_dict(options)


__all__ = ["METHODS", "MethodConfig", "MethodContext", "Policy", "Trace", "method_config"]
