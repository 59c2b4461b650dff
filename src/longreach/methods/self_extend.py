"""`self_extend`: Self-Extend (Jin et al., 2024) — grouped positions beyond a neighbour window.

A query at position p sees every earlier key. Keys closer than `window` keep their true
relative position (RoPE(q, p) . RoPE(k, t)); farther keys are seen through grouped
positions, RoPE(q, p // G + W - W // G) . RoPE(k, t // G), so that no relative distance
exceeds about W + (p - W) / G. Both kinds of logits enter one exact softmax. The longest
input a model of trained window L then reads is about (L - W) * G + W.

Unlike the reference code (which needs the whole prompt in one pass), every query is handled
on its own, so chunked prefill gives the same result for any chunk size, and decoding is
the same computation for one query. Keys rotated at their grouped positions never change:
they are kept in the store buffer "grouped" (one more copy of the keys) unless the store is
quantized, in which case they are rotated again on each chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..attention import attend, merge
from .base import MethodConfig, Policy, check, option


@dataclass(slots=True)
class SelfExtendConfig(MethodConfig):
    name = "self_extend"
    summary = "Self-Extend: true positions within a neighbour window, grouped positions beyond"
    no_rope_scaling = "assigns positions itself and does not combine with RoPE scaling"
    no_dynamic_ntk = "assigns positions itself"

    group_size: int = option(8, "G: tokens sharing one grouped position beyond the window")
    window: int = option(1024, "W: keys closer than this keep their true relative position")

    def __post_init__(self):
        check(self.group_size >= 1, "group_size must be >= 1")
        check(self.window >= 1, "window must be >= 1")

    def build(self, ctx) -> SelfExtendPolicy:
        if ctx.trained_window:
            check(self.window < ctx.trained_window,
                  f"window ({self.window}) must be smaller than the trained window ({ctx.trained_window})")
        return SelfExtendPolicy(ctx, self)


class SelfExtendPolicy(Policy):
    def __init__(self, ctx, config: SelfExtendConfig):
        super().__init__(ctx)
        self.config = config

    def attend(self, layer, q, k, v, positions):
        window, group = self.config.window, self.config.group_size
        kv = self.store[layer]
        tokens = kv.segment("tokens")
        tokens.append(k, v, positions)
        first = int(tokens.positions[0])
        p0, p1 = int(positions[0]), int(positions[-1])
        key_positions = tokens.positions
        pq = positions.to(key_positions.device)[:, None]

        # Neighbours: keys at distance < W from some query of the chunk, at true positions.
        near_from = max(p0 - window + 1 - first, 0)
        distance = pq - key_positions[None, near_from:]
        near_mask = (distance >= 0) & (distance < window)
        q_true = self.rope.rotate(q, positions)
        keys = tokens.rotated_keys(self.rope)[:, :, near_from:]
        parts = [attend(q_true, keys, tokens.values[:, :, near_from:], self.ctx.scale,
                        mask=None if bool(near_mask.all()) else near_mask)]

        # Far keys (distance >= W for some query), at grouped positions.
        far_end = max(p1 - window + 1 - first, 0)
        if far_end:
            far_mask = (pq - key_positions[None, :far_end]) >= window
            q_grouped = self.rope.rotate(q, positions // group + window - window // group)
            far_keys = self._grouped_keys(kv, tokens, far_end)
            parts.append(attend(q_grouped, far_keys, tokens.values[:, :, :far_end], self.ctx.scale,
                                mask=None if bool(far_mask.all()) else far_mask))
        return merge(parts)[0]

    def _grouped_keys(self, kv, tokens, end: int) -> torch.Tensor:
        """Keys 0..end rotated at their grouped positions t // G: [B, Hkv, end, d]."""
        group = self.config.group_size
        if self.store.quant is not None:  # keep the saving: rotate the dequantized keys each time
            keys, _, positions = tokens.slice(0, end)
            return self.rope.rotate(keys, positions // group)
        keys = tokens.keys
        cache = kv.buffer("grouped", keys.new_empty(0, *keys.shape[:2], keys.shape[3]))  # [n, B, Hkv, d]
        done = len(cache)
        if done < end:
            fresh, _, positions = tokens.slice(done, end)
            cache.append(self.rope.rotate(fresh, positions // group).permute(2, 0, 1, 3))
        return cache.data[:end].permute(1, 2, 0, 3)
