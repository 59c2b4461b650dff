"""What every method is: a config dataclass plus a policy that decides attention.

A policy receives, per layer and chunk, pre-RoPE queries, keys and values of the new
tokens with their true positions; it stores what it wants in the KV store, chooses which
stored keys each query attends to and at which positions, and returns the output.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields

import torch

from ..errors import LongreachError
from ..kv import KVStore, QuantSpec
from ..rope import RotaryEmbedding
from ..rope_scaling import SCALINGS, scaled_rope, scaling_factor
from ..units import parse_count


def option(default, help: str, **kwargs):
    """A config field with a help text, shown by `longreach methods`."""
    return field(default=default, metadata={"help": help, **kwargs})


def _coerce(value, annotation: str, name: str):
    if not isinstance(value, str):
        return value
    kinds = [a.strip() for a in annotation.split("|")]
    if value.lower() == "none" and "None" in kinds:
        return None
    for kind in kinds:
        try:
            if kind == "int":
                return parse_count(value)
            if kind == "float":
                return float(value)
            if kind == "bool":
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                continue
            if kind == "str":
                return value
        except (ValueError, LongreachError):
            continue
    raise LongreachError(f"option {name}={value!r} is not a valid {annotation}")


KV_QUANT = {"int8": 8, "int4": 4}
DYNAMIC_REASON = "dynamic NTK changes the frequencies as the input grows (use ntk or yarn with a factor)"


@dataclass(slots=True)
class MethodConfig:
    """Base of every method's options. Subclasses validate in `__post_init__`.

    The options below are shared by every method: the engine applies RoPE scaling and KV
    quantization to the method's context (`prepare`) and then calls `build` with it, so a
    method needs no code of its own for them. A method that cannot combine with one refuses
    it in `build`.
    """

    name: typing.ClassVar[str] = ""
    summary: typing.ClassVar[str] = ""
    SHARED: typing.ClassVar[tuple[str, ...]] = ("rope_scaling", "rope_factor", "target_length",
                                                "rope_attention_factor", "kv_quant", "kv_group")
    # Why the method cannot follow dynamic NTK (frequencies that change as positions grow), or ""
    # when it can; `prepare` refuses the combination with this reason.
    no_dynamic_ntk: typing.ClassVar[str] = ""
    # Why the method takes no RoPE scaling at all, or "" when it does (refused with the options).
    no_rope_scaling: typing.ClassVar[str] = ""
    # True when the method treats a prompt's document as a fixed context processed before the
    # question (Squeezed Attention clusters it): benchmarks then give it the document first.
    fixed_context: typing.ClassVar[bool] = False

    rope_scaling: str | None = option(None, f"RoPE scaling: {', '.join(SCALINGS)} (none by default)")
    rope_factor: float | None = option(None, "RoPE scaling factor; default: target_length / trained window")
    target_length: int | None = option(None, "input length the RoPE scaling must reach (sets the factor)")
    rope_attention_factor: float | None = option(
        None, "YaRN's attention temperature (cos/sin scale); default 0.1 ln(factor) + 1, 1 turns it off")
    kv_quant: str | None = option(None, "store keys and values as int8 or int4, dequantized on the fly")
    kv_group: int = option(64, "KV quantization group: tokens per key scale, channels per value scale")

    def check_shared(self) -> None:
        """Validate the shared options (ValueError with a clear message)."""
        check(self.rope_scaling is None or self.rope_scaling in SCALINGS,
              f"rope_scaling must be one of {', '.join(SCALINGS)}")
        check(self.rope_scaling is not None or (self.rope_factor is None and self.target_length is None),
              "rope_factor and target_length need rope_scaling (e.g. rope_scaling=yarn)")
        check(self.rope_scaling is None or self.rope_factor is not None or self.target_length is not None,
              "rope_scaling needs rope_factor or target_length")
        check(self.rope_factor is None or self.rope_factor >= 1.0, "rope_factor must be >= 1")
        check(self.rope_attention_factor is None or self.rope_scaling == "yarn",
              "rope_attention_factor needs rope_scaling=yarn")
        check(self.rope_attention_factor is None or self.rope_attention_factor > 0,
              "rope_attention_factor must be > 0")
        check(not (self.no_rope_scaling and self.rope_scaling), f"{self.name} {self.no_rope_scaling}")
        check(not (self.no_dynamic_ntk and self.rope_scaling == "dynamic"),
              f"{self.name} {self.no_dynamic_ntk}; {DYNAMIC_REASON}")
        check(self.kv_quant is None or self.kv_quant in KV_QUANT,
              f"kv_quant must be one of {', '.join(KV_QUANT)}")
        check(self.kv_group >= 1, "kv_group must be >= 1")

    def prepare(self, ctx: MethodContext) -> MethodContext:
        """The context with the shared options applied: a quantized store, a scaled RoPE and the
        trained window it reaches. Options left at their defaults leave the context unchanged."""
        self.check_shared()
        if self.kv_quant is not None:
            ctx.store.set_quant(QuantSpec(KV_QUANT[self.kv_quant], self.kv_group))
        if self.rope_scaling is not None:
            factor = scaling_factor(self.rope_factor, self.target_length, ctx.trained_window)
            # Dynamic NTK reaches any length by itself: at the target length, factor 1 is exactly NTK
            # by target / window, so a factor derived from target_length is not applied on top.
            applied = (self.rope_factor or 1.0) if self.rope_scaling == "dynamic" else factor
            rope = scaled_rope(ctx.rope, self.rope_scaling, applied, self.rope_attention_factor)
            ctx = dataclasses.replace(ctx, rope=rope, trained_window=int(ctx.trained_window * factor))
        check(not (self.no_dynamic_ntk and ctx.rope.rope_type == "dynamic"),  # also a model's own scaling
              f"{self.name} {self.no_dynamic_ntk}; {DYNAMIC_REASON}")
        return ctx

    @classmethod
    def from_dict(cls, options: dict | None = None) -> MethodConfig:
        """Build from a dict (values may be strings from a command line); unknown keys are refused."""
        options = dict(options or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise LongreachError(
                f"unknown option(s) for method {cls.name!r}: {', '.join(unknown)}; "
                f"valid: {', '.join(known) or '(none)'}")
        values = {k: _coerce(v, str(known[k].type), k) for k, v in options.items()}
        try:
            config = cls(**values)
            config.check_shared()
            return config
        except (TypeError, ValueError) as exc:
            raise LongreachError(f"method {cls.name!r}: {exc}") from None

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def memory_options(self) -> dict:
        """The options a stored memory depends on: every one but those declared `runtime` (how a
        memory is read, not what it holds), so that a saved context outlives them."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata.get("runtime")}

    def build(self, ctx: MethodContext) -> Policy:
        raise NotImplementedError

    @classmethod
    def describe(cls) -> list[tuple[str, str, object, str]]:
        """(name, type, default, help) per option: the method's own first, then the shared ones."""
        rows = []
        for f in sorted(fields(cls), key=lambda f: f.name in cls.SHARED):
            default = f.default if f.default is not dataclasses.MISSING else None
            rows.append((f.name, str(f.type), default, f.metadata.get("help", "")))
        return rows


def check(condition: bool, message: str) -> None:
    """Validation helper for __post_init__: a ValueError that from_dict turns into a clear message."""
    if not condition:
        raise ValueError(message)


@dataclass
class Trace:
    """What a block-memory method selected, recorded only when the engine asks for it."""

    selections: list[dict] = field(default_factory=list)
    selection_seconds: float = 0.0  # time spent choosing blocks

    def record(self, layer: int, query_positions: tuple[int, int], block_starts: list,
               block_size: int, memory_span: tuple[int, int]) -> None:
        """One retrieval: true start positions of the chosen blocks (one list per KV head when
        heads choose separately) and the span of positions the memory blocks cover."""
        self.selections.append({"layer": layer, "queries": query_positions, "block_starts": block_starts,
                                "block_size": block_size, "memory_span": memory_span})


@dataclass
class MethodContext:
    """What a policy may know about the model and where it stores keys."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    scale: float
    trained_window: int
    rope: RotaryEmbedding
    store: KVStore
    device: torch.device
    trace: Trace | None = None


class Policy:
    """Per-sequence attention policy. Subclasses implement `attend`."""

    # True: the engine feeds the prompt's last token as a decoding step, after the rest of the
    # prompt, so that a choice made at the prompt's end (e.g. by the question) shapes the answer.
    replay_last_token = False

    def __init__(self, ctx: MethodContext):
        self.ctx = ctx
        self.store = ctx.store
        self.rope = ctx.rope
        self.phase = "prefill"  # set by the session: "prefill", "final" (last prompt chunk) or "decode"

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               positions: torch.Tensor) -> torch.Tensor:
        """Output [B, H, n, d] for queries q [B, H, n, d] and new keys/values [B, Hkv, n, d]."""
        raise NotImplementedError

    def reset_caches(self) -> None:
        """Drop derived per-sequence caches (called on a forked copy); state lives in the store."""

    def end_prefill(self) -> None:
        """Hook called once the prompt is processed (e.g. to compress the store)."""
