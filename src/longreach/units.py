"""Parsing of human-written counts such as 32k (= 32 768 tokens)."""

from __future__ import annotations

from .errors import LongreachError


def parse_count(text: str | int) -> int:
    """'32k' -> 32768, '1m' -> 1048576, '4096' -> 4096."""
    if isinstance(text, int):
        return text
    raw = str(text).strip().lower().replace("_", "")
    scale = 1
    if raw.endswith("k"):
        raw, scale = raw[:-1], 1024
    elif raw.endswith("m"):
        raw, scale = raw[:-1], 1024 * 1024
    try:
        value = float(raw) * scale
    except ValueError:
        raise LongreachError(f"{text!r} is not a count (examples: 4096, 32k)") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise LongreachError(f"{text!r} is not a count (examples: 4096, 32k)")
    if value != int(value):
        raise LongreachError(f"{text!r} is not a whole number of tokens")
    return int(value)
