"""`streaming`: StreamingLLM — sink tokens plus a sliding window, positions counted in the cache.

Each query sees the first `n_sink` tokens and the `window` most recent ones (itself
included), exactly as token-by-token StreamingLLM does, so the result does not depend on
the prefill chunk size. Inside the cache positions are contiguous: window keys keep their
true distance to the query, and sinks sit just before the window (paper §3.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..attention import attend, merge
from .base import MethodConfig, Policy, check, option


@dataclass(slots=True)
class StreamingConfig(MethodConfig):
    name = "streaming"
    no_dynamic_ntk = "keeps every distance inside its window"
    summary = "StreamingLLM: sink tokens + sliding window, constant memory"

    n_sink: int = option(4, "attention-sink tokens kept from the start of the text")
    window: int = option(2048, "most recent tokens each query attends to (itself included)")

    def __post_init__(self):
        check(self.n_sink >= 0, "n_sink must be >= 0")
        check(self.window >= 1, "window must be >= 1")

    def build(self, ctx) -> StreamingPolicy:
        return StreamingPolicy(ctx, self)


class StreamingPolicy(Policy):
    def __init__(self, ctx, config: StreamingConfig):
        super().__init__(ctx)
        self.config = config
        self._masks = None

    def reset_caches(self):
        self._masks = None

    def attend(self, layer, q, k, v, positions):
        cfg, kv = self.config, self.store[layer]
        sink, window = kv.segment("sink"), kv.segment("window")
        n_to_sink = min(max(cfg.n_sink - len(sink), 0), k.shape[2])
        sink.append(k[:, :, :n_to_sink], v[:, :, :n_to_sink], positions[:n_to_sink])
        window.append(k[:, :, n_to_sink:], v[:, :, n_to_sink:], positions[n_to_sink:])
        if layer == 0:  # every layer holds the same positions: build the masks once per chunk
            self._masks = self._build_masks(positions, sink.positions, window.positions)
        sink_mask, window_mask = self._masks
        scale = self.ctx.scale
        parts = [attend(self.rope.rotate(q, positions), window.rotated_keys(self.rope),
                        window.values, scale, mask=window_mask)]
        if len(sink):
            # Once tokens were evicted, the query sits right after the window in cache positions.
            query_positions = positions.clamp(max=cfg.n_sink + cfg.window - 1)
            parts.append(attend(self.rope.rotate(q, query_positions), sink.rotated_keys(self.rope),
                                sink.values, scale, mask=sink_mask))
        out = merge(parts)[0]
        if len(window) > cfg.window:
            window.drop_front(len(window) - cfg.window)
        return out

    def _build_masks(self, positions, sink_positions, window_positions):
        pq = positions.to(window_positions.device)[:, None]
        distance = pq - window_positions[None, :]
        window_mask = (distance >= 0) & (distance < self.config.window)
        if bool(window_mask.all()):
            window_mask = None
        sink_mask = pq >= sink_positions[None, :] if len(sink_positions) else None
        if sink_mask is not None and bool(sink_mask.all()):
            sink_mask = None
        return sink_mask, window_mask
