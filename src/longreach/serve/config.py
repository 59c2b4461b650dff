"""Server settings: where to listen, who may call, and how much one request may ask for."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STORE = "./contexts"


def default_store() -> Path:
    """The context store directory: $LONGREACH_STORE, else ./contexts."""
    return Path(os.environ.get("LONGREACH_STORE") or DEFAULT_STORE)


@dataclass(slots=True)
class ServerConfig:
    """Everything `create_app` needs besides the model. Validated on construction."""

    store: Path = Path(DEFAULT_STORE)
    model_name: str = "longreach"          # the id clients pass as `model`
    api_key: str | None = None             # when set, every /v1 request needs `Authorization: Bearer KEY`
    queue_size: int = 16                   # requests waiting behind the running one; 429 past it
    max_prompt_tokens: int = 32768         # new prompt tokens per request (a stored context is not counted)
    max_context_tokens: int = 262144       # tokens of a document added as a context
    max_new_tokens: int = 4096             # largest max_tokens a request may ask for
    default_max_tokens: int = 512          # chat completions that give no max_tokens
    max_body_bytes: int = 8 << 20          # request body of completions and chat
    max_upload_bytes: int = 64 << 20       # request body of POST /v1/contexts
    cache_bytes: int = 8 << 30             # stored contexts kept mapped in memory (LRU)
    verify_contexts: bool = False          # full checksum of a context's tensors when first loaded
    keepalive_seconds: float = 5.0         # SSE comment interval while waiting in the queue
    shutdown_grace_seconds: float = 10.0   # time for the running request to finish at shutdown

    def __post_init__(self):
        self.store = Path(self.store)
        positive = ("queue_size", "max_prompt_tokens", "max_context_tokens", "max_new_tokens",
                    "max_body_bytes", "max_upload_bytes", "keepalive_seconds")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.cache_bytes < 0 or self.shutdown_grace_seconds < 0:
            raise ValueError("cache_bytes and shutdown_grace_seconds must be >= 0")
        if not 0 <= self.default_max_tokens <= self.max_new_tokens:
            raise ValueError("default_max_tokens must be within 0..max_new_tokens")
        if not self.model_name:
            raise ValueError("model_name is empty")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key is empty")
