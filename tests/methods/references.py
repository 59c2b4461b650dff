"""Brute-force reference policies: explicit logits over every stored key, easy to read, slow.

Each states a method's maths directly so the optimised policy can be compared against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longreach.methods.base import MethodConfig, Policy


class _StoreAll(Policy):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.keys, self.values, self.positions = {}, {}, {}

    def _append(self, layer, k, v, positions):
        if layer not in self.keys:
            self.keys[layer], self.values[layer], self.positions[layer] = k, v, positions
        else:
            self.keys[layer] = torch.cat([self.keys[layer], k], 2)
            self.values[layer] = torch.cat([self.values[layer], v], 2)
            self.positions[layer] = torch.cat([self.positions[layer], positions])
        groups = self.ctx.n_heads // self.ctx.n_kv_heads
        return (self.keys[layer].repeat_interleave(groups, 1), self.values[layer].repeat_interleave(groups, 1),
                self.positions[layer])


class FixedDistancePolicy(_StoreAll):
    """InfLLM with every block retrieved: local keys at true distance, all older ones at distance n_local."""

    def __init__(self, ctx, n_local):
        super().__init__(ctx)
        self.n_local = n_local

    def rotary_distance(self, positions, key_positions):
        """The relative position RoPE gives each (query, key) pair [q, m] (causal pairs only)."""
        distance = positions[:, None] - key_positions[None, :]
        return torch.where(distance < self.n_local, distance, self.n_local)

    def attend(self, layer, q, k, v, positions):
        keys, values, key_positions = self._append(layer, k, v, positions)
        local = self.rope.rotate(q, positions) @ self.rope.rotate(keys, key_positions).transpose(-1, -2)
        far = self.rope.rotate_one(q, self.n_local) @ keys.transpose(-1, -2)
        distance = positions[:, None] - key_positions[None, :]
        logits = torch.where(distance < self.n_local, local, far) * self.ctx.scale
        logits = logits.masked_fill(distance < 0, float("-inf"))
        return torch.softmax(logits, -1) @ values


class SelfExtendReference(_StoreAll):
    """Self-Extend's two logit matrices, merged by distance, for every key at once."""

    def __init__(self, ctx, group, window):
        super().__init__(ctx)
        self.group, self.window = group, window

    def _grouped_query_positions(self, positions):
        return positions // self.group + self.window - self.window // self.group

    def rotary_distance(self, positions, key_positions):
        """The relative position RoPE gives each (query, key) pair [q, m] (causal pairs only)."""
        distance = positions[:, None] - key_positions[None, :]
        grouped = self._grouped_query_positions(positions)[:, None] - (key_positions // self.group)[None, :]
        return torch.where(distance < self.window, distance, grouped)

    def attend(self, layer, q, k, v, positions):
        keys, values, key_positions = self._append(layer, k, v, positions)
        near = self.rope.rotate(q, positions) @ self.rope.rotate(keys, key_positions).transpose(-1, -2)
        q_grouped = self.rope.rotate(q, self._grouped_query_positions(positions))
        far = q_grouped @ self.rope.rotate(keys, key_positions // self.group).transpose(-1, -2)
        distance = positions[:, None] - key_positions[None, :]
        logits = torch.where(distance < self.window, near, far) * self.ctx.scale
        return torch.softmax(logits.masked_fill(distance < 0, float("-inf")), -1) @ values


class StreamingReferencePolicy(_StoreAll):
    """StreamingLLM token by token: sinks + the last `window` tokens, positions renumbered in the cache."""

    def __init__(self, ctx, n_sink, window):
        super().__init__(ctx)
        self.n_sink, self.window = n_sink, window

    def attend(self, layer, q, k, v, positions):
        keys, values, key_positions = self._append(layer, k, v, positions)
        outs = []
        for i, p in enumerate(positions.tolist()):
            visible = [j for j, t in enumerate(key_positions.tolist())
                       if t <= p and (t < self.n_sink or p - t < self.window)]
            cache_positions = torch.arange(len(visible))
            kv_index = torch.tensor(visible)
            kr = self.rope.rotate(keys[:, :, kv_index], cache_positions)
            qr = self.rope.rotate(q[:, :, i:i + 1], cache_positions[-1:])
            probs = torch.softmax((qr @ kr.transpose(-1, -2)) * self.ctx.scale, -1)
            outs.append(probs @ values[:, :, kv_index])
        return torch.cat(outs, 2)


@dataclass(slots=True)
class FixedDistanceConfig(MethodConfig):
    name = "fixed_distance_reference"
    n_local: int = 32

    def build(self, ctx):
        return FixedDistancePolicy(ctx, self.n_local)


@dataclass(slots=True)
class SelfExtendReferenceConfig(MethodConfig):
    name = "self_extend_reference"
    group: int = 4
    window: int = 32

    def build(self, ctx):
        return SelfExtendReference(ctx, self.group, self.window)


@dataclass(slots=True)
class StreamingReferenceConfig(MethodConfig):
    name = "streaming_reference"
    n_sink: int = 4
    window: int = 40

    def build(self, ctx):
        return StreamingReferencePolicy(ctx, self.n_sink, self.window)
