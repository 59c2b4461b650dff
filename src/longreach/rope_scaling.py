"""RoPE scaling for any method: position interpolation, NTK-aware, dynamic NTK and YaRN.

Each kind is expressed as rope parameters that transformers' own initialisers understand
(`rope.py` delegates to them), so the frequencies match what Hugging Face computes for a
model shipped with that scaling. Static NTK-aware scaling has no initialiser there: it is a
plain RoPE with the base raised to base * factor^(d/(d-2)).
"""

from __future__ import annotations

from .rope import RotaryEmbedding

SCALINGS = {
    "linear": "position interpolation: positions divided by the factor (Chen et al., 2023)",
    "ntk": "NTK-aware: RoPE base raised to base * factor^(d/(d-2)), high frequencies kept",
    "dynamic": "dynamic NTK: the NTK base follows the current length once it passes the trained window "
               "(rope_factor as in transformers; 1 when only target_length is given)",
    "yarn": "YaRN: per-frequency interpolation ramp plus attention temperature 0.1 ln(factor) + 1",
}


def scaling_factor(factor: float | None, target_length: int | None, trained_window: int) -> float:
    """The factor given, or the one that stretches the trained window to `target_length`."""
    if factor is not None:
        return float(factor)
    if target_length is None:
        raise ValueError("rope_scaling needs rope_factor or target_length")
    if not trained_window:
        raise ValueError("the model declares no trained window: give rope_factor instead of target_length")
    if target_length <= trained_window:
        raise ValueError(f"target_length ({target_length}) is within the trained window ({trained_window}); "
                         "no RoPE scaling is needed")
    return target_length / trained_window


def scaled_rope(rope: RotaryEmbedding, kind: str, factor: float,
                attention_factor: float | None = None) -> RotaryEmbedding:
    """A rotary embedding like `rope` with scaling `kind` (see SCALINGS) by `factor`.

    `attention_factor` (YaRN only) replaces the paper's temperature 0.1 ln(factor) + 1, the
    scale of cos and sin (so attention logits scale by its square); 1 turns it off.

    Raises ValueError for an unknown kind, a factor below 1, or a model that already uses
    a scaled RoPE (scaling it again would silently replace the model's own scaling).
    """
    if kind not in SCALINGS:
        raise ValueError(f"rope_scaling must be one of {', '.join(SCALINGS)}, not {kind!r}")
    if factor < 1.0:
        raise ValueError(f"rope_factor must be >= 1, not {factor}")
    if attention_factor is not None and (kind != "yarn" or attention_factor <= 0):
        raise ValueError("rope_attention_factor must be > 0 and needs rope_scaling=yarn")
    if rope.rope_type != "default":
        raise ValueError(f"the model already uses {rope.rope_type!r} RoPE scaling; "
                         "rope_scaling would replace it")
    trained = rope.original_max_position
    if kind == "linear":
        overrides = {"rope_type": "linear", "factor": factor}
    elif kind == "ntk":
        dim = int(rope.head_dim * getattr(rope.config, "partial_rotary_factor", 1.0))
        theta = rope.params["rope_theta"] * factor ** (dim / (dim - 2))
        overrides = {"rope_type": "default", "rope_theta": theta}
    elif kind == "dynamic":
        # transformers' (and the original's) formula: base * (factor * length / trained - (factor - 1))
        # ^ (d/(d-2)) once the length passes the trained window. Factor 1 is NTK at the current length.
        overrides = {"rope_type": "dynamic", "factor": factor}
    else:
        if not trained:
            raise ValueError("YaRN needs the model's trained window (max_position_embeddings)")
        overrides = {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": trained}
        if attention_factor is not None:
            overrides["attention_factor"] = float(attention_factor)
    return RotaryEmbedding(rope.config, rope.head_dim, rope.device, overrides)
