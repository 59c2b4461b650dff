"""`dense`: exact causal attention over every stored token at its true position."""

from __future__ import annotations

from dataclasses import dataclass

from ..attention import attend, merge
from .base import MethodConfig, Policy


@dataclass(slots=True)
class DenseConfig(MethodConfig):
    name = "dense"
    summary = "exact causal attention over everything stored (the reference)"

    def build(self, ctx) -> DensePolicy:
        return DensePolicy(ctx)


class DensePolicy(Policy):
    def attend(self, layer, q, k, v, positions):
        segment = self.store[layer].segment("tokens")
        n_past = len(segment)
        segment.append(k, v, positions)
        # The query first: its positions reach the newest one, so dynamic NTK updates its frequencies
        # here, and the stored keys below are rotated again at them (not left at the old ones).
        q = self.rope.rotate(q, positions)
        keys = segment.rotated_keys(self.rope)  # [B, Hkv, n_past + n, d]
        values = segment.values
        scale = self.ctx.scale
        if q.shape[2] == 1:
            return attend(q, keys, values, scale).out
        current = attend(q, keys[:, :, n_past:], values[:, :, n_past:], scale, causal=True)
        if n_past == 0:
            return current.out
        past = attend(q, keys[:, :, :n_past], values[:, :, :n_past], scale)
        return merge([past, current])[0]

