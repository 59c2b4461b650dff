"""Serving: an OpenAI-compatible HTTP server over a persistent context store.

Needs the `serve` extra (fastapi, uvicorn). `create_app(lm, ServerConfig(...))` builds the
app; `longreach serve` runs it with uvicorn. The context store (`ContextStore`) works
without the server's dependencies.
"""

from __future__ import annotations

from .config import ServerConfig
from .contexts import ContextInfo, ContextStore


def create_app(lm, config: ServerConfig):
    """The FastAPI app serving `lm` (see `longreach.serve.app.create_app`)."""
    from .app import create_app as build

    return build(lm, config)


__all__ = ["ContextInfo", "ContextStore", "ServerConfig", "create_app"]
