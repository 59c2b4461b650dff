"""What a generation returns: the text, why it stopped, and what it cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(slots=True)
class GenerationStats:
    prompt_tokens: int = 0         # tokens prefilled by this call
    cached_tokens: int = 0         # tokens reused from a stored context (not recomputed)
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    prompt_tps: float = 0.0        # prompt tokens per second of prefill
    generation_tps: float = 0.0    # generated tokens per second of decoding
    peak_memory_mb: float = 0.0    # peak RSS of the process (CPU) or peak allocated (CUDA)
    kv_bytes: int = 0              # bytes held by the KV store after generation
    kv_bytes_by_device: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    stats: GenerationStats
    selections: list[dict] | None = None  # block selections, when traced
    selection_seconds: float = 0.0  # time spent choosing blocks, when traced

    def to_dict(self) -> dict:
        return {"text": self.text, "token_ids": self.token_ids, "finish_reason": self.finish_reason,
                "stats": self.stats.to_dict()}
