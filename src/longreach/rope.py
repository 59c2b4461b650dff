"""Rotary position embeddings for arbitrary integer positions.

The inverse frequencies come from the model config through transformers' own RoPE
initialisers, so every rope type the config declares (default, linear, dynamic, yarn,
llama3, ...) is honoured exactly. Angles are computed in float64 so that a key rotated
at position 120 000 is as accurate as one at position 12: several methods rotate keys
once at their true positions and rely on RoPE being purely relative.
"""

from __future__ import annotations

import copy

import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS


def rope_parameters(config) -> dict:
    """The config's rope parameters as one dict (transformers 5 `rope_parameters`, or v4 fields)."""
    params = getattr(config, "rope_parameters", None)
    if params:
        return dict(params)
    params = dict(getattr(config, "rope_scaling", None) or {})
    params.setdefault("rope_type", params.pop("type", "default"))
    params["rope_theta"] = getattr(config, "rope_theta", 10000.0)
    return params


def _default_inv_freq(config, head_dim: int) -> torch.Tensor:
    base = rope_parameters(config)["rope_theta"]
    rotary_dim = int(head_dim * getattr(config, "partial_rotary_factor", 1.0))
    return 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim))


# Position lists up to this long are remembered by value (see `RotaryEmbedding.cos_sin`).
_SHORT = 4


class RotaryEmbedding:
    """cos/sin tables for any positions, and the rotation itself (HF `rotate_half` layout)."""

    def __init__(self, config, head_dim: int, device: torch.device | str = "cpu",
                 overrides: dict | None = None):
        self.config = copy.deepcopy(config)
        if overrides:
            params = rope_parameters(self.config) | overrides
            self.config.rope_parameters = params
        self.params = rope_parameters(self.config)
        self.rope_type = self.params.get("rope_type", "default")
        self.head_dim = head_dim
        self.device = torch.device(device)
        self.original_max_position = int(
            self.params.get("original_max_position_embeddings")
            or getattr(self.config, "max_position_embeddings", 0) or 0)
        self._base_inv_freq, self.attention_scaling = self._init(seq_len=None)
        self._dynamic_len = 0
        self.inv_freq = self._base_inv_freq
        self.version = 0  # bumped when the frequencies change (dynamic NTK), invalidating rotated caches
        self._memo: tuple | None = None
        self._short: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _init(self, seq_len: int | None) -> tuple[torch.Tensor, float]:
        if self.rope_type == "default":
            return _default_inv_freq(self.config, self.head_dim), 1.0
        if self.rope_type not in ROPE_INIT_FUNCTIONS:
            raise ValueError(f"unsupported rope type {self.rope_type!r}")
        inv_freq, scaling = ROPE_INIT_FUNCTIONS[self.rope_type](self.config, "cpu", seq_len=seq_len)
        return inv_freq.double(), float(scaling)

    def _frequencies_for(self, max_position: int) -> torch.Tensor:
        # Dynamic NTK recomputes the base once positions pass the trained window (as HF does).
        if self.rope_type != "dynamic" or max_position + 1 <= self.original_max_position:
            return self._base_inv_freq
        if max_position + 1 > self._dynamic_len:
            self._dynamic_len = max_position + 1
            self.inv_freq, _ = self._init(seq_len=self._dynamic_len)
            self.version += 1
        return self.inv_freq

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape [..., n, head_dim] for integer `positions` of shape [..., n] (e.g. [n], or
        [Hkv, n] for keys whose positions differ per head)."""
        # Every layer asks for the same positions within one forward pass: remember the last answer
        # (by identity: positions are never mutated), and the answers for a few short position lists
        # by value (a decode step rotates its query at its position, and at a fixed distance, in
        # every layer, from tensors built afresh).
        if 0 < positions.numel() <= _SHORT:
            values = tuple(positions.flatten().tolist())
            self._frequencies_for(max(values))  # dynamic NTK: the frequencies these positions get
            key = (values, tuple(positions.shape), dtype, self.version)
            result = self._short.get(key)
            if result is None:  # a new dict, never one mutated: shallow copies (dynamic NTK) share it
                result = self._compute_cos_sin(positions, dtype)
                self._short = {**(self._short if len(self._short) < 8 else {}), key: result}
            return result
        key = (positions.numel(), dtype, self.version)
        if self._memo is not None and self._memo[0] == key and self._memo[1] is positions:
            return self._memo[2]
        result = self._compute_cos_sin(positions, dtype)
        self._memo = (key, positions, result)
        return result

    def _compute_cos_sin(self, positions: torch.Tensor, dtype: torch.dtype):
        positions = positions.to("cpu")
        max_position = int(positions.max()) if positions.numel() else 0
        inv_freq = self._frequencies_for(max_position)
        angles = positions.double()[..., None] * inv_freq
        angles = torch.cat((angles, angles), dim=-1)
        cos = (angles.cos() * self.attention_scaling).to(device=self.device, dtype=dtype)
        sin = (angles.sin() * self.attention_scaling).to(device=self.device, dtype=dtype)
        return cos, sin

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate `x` [..., n, head_dim] at `positions` [n] (or [H, n] for x [B, H, n, head_dim]: one
        row of positions per head); returns a new tensor."""
        cos, sin = self.cos_sin(positions, x.dtype)
        return apply_rotary(x, cos, sin)

    def rotate_one(self, x: torch.Tensor, position: int) -> torch.Tensor:
        """Rotate queries `x` [..., n, head_dim] to score keys left unrotated at distance `position`.

        RoPE is relative: q rotated at p and k rotated at p - position give the logits of q rotated
        at `position` against k unrotated, except for the attention scaling a rope type puts into
        cos/sin (YaRN), which a rotated key would carry too: it is applied twice here.
        """
        cos, sin = self.cos_sin(torch.tensor([position]), x.dtype)
        rotated = apply_rotary(x, cos, sin)
        return rotated if self.attention_scaling == 1.0 else rotated * self.attention_scaling


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    rotary_dim = cos.shape[-1]
    if rotary_dim < x.shape[-1]:
        rotated = apply_rotary(x[..., :rotary_dim], cos, sin)
        return torch.cat((rotated, x[..., rotary_dim:]), dim=-1)
    half = rotary_dim // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated_half = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated_half * sin
