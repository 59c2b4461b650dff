"""Quantized KV segments: int8 or int4 codes, dequantized on the fly when a method reads them.

Keys are quantized per channel over groups of `group` consecutive tokens (key outliers sit
in a few channels, KIVI/KVQuant); values per token over groups of `group` channels. A key
group needs `group` tokens, so the newest keys (fewer than a group) wait in a 16-bit tail
until the group fills (float16 for a float32 model, else the model's own dtype; every key
passes through it, so the codes do not depend on how the tokens were chunked); values are
quantized as they arrive. Scales and zero points are float16; codes are asymmetric min/max.
Positions are int32, as in the plain segment.

`QuantizedSegment` has the interface of `KVSegment` (append, drop_front, slice, gather,
rotated_keys, state_dict, ...). Its rotated-key cache is itself quantized (per channel, from
the dequantized keys rotated at their positions, so a segment restored from disk rotates
exactly what the live one did) and a method attending the whole segment at true positions
keeps the saving.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .readahead import will_need_rows
from .rows import POSITION_DTYPE, interleave, rows_of, split_runs


@dataclass(frozen=True, slots=True)
class QuantSpec:
    """How a store quantizes: `bits` (8 or 4) and the group size in tokens (keys) / channels (values)."""

    bits: int = 8
    group: int = 64

    def __post_init__(self):
        if self.bits not in (4, 8):
            raise ValueError(f"kv quantization supports 8 or 4 bits, not {self.bits}")
        if self.group < 1:
            raise ValueError("kv quantization group size must be >= 1")

    @property
    def levels(self) -> int:
        return 2 ** self.bits - 1


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes [..., d] -> [..., d] (8 bits) or two 4-bit codes per byte [..., d/2]."""
    if bits == 8:
        return codes
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    if bits == 8:
        return packed
    return torch.stack((packed & 15, packed >> 4), dim=-1).flatten(-2)


def quantize(x: torch.Tensor, bits: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric min/max quantization of `x` with one (scale, zero) per slice along `dim`.

    Returns uint8 codes shaped like x and float16 scale, zero with `dim` reduced (keepdim).
    Every element is reconstructed within scale/2 (plus float16 rounding of scale and zero).
    """
    levels = 2 ** bits - 1
    low, high = x.amin(dim, keepdim=True).float(), x.amax(dim, keepdim=True).float()
    scale = ((high - low) / levels).clamp_min(1e-8).half()
    zero = low.half()
    codes = ((x.float() - zero.float()) / scale.float()).round_().clamp_(0, levels).to(torch.uint8)
    return codes, scale, zero


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Float32 values from `quantize`'s codes, scale and zero (broadcast along the reduced dim)."""
    return codes.float() * scale.float() + zero.float()


class _Codes:
    """Group-quantized [B, H, rows, d] tensors: keys (scale per group of rows) or values (per row)."""

    def __init__(self, like: torch.Tensor, spec: QuantSpec, per_channel: bool, capacity: int):
        batch, heads, _, dim = like.shape
        self.spec, self.per_channel, self.dim = spec, per_channel, dim
        self.group = spec.group if per_channel else _channel_group(spec.group, dim)
        packed = dim if spec.bits == 8 else dim // 2
        self.codes = torch.empty(batch, heads, capacity, packed, dtype=torch.uint8, device=like.device)
        scales = (batch, heads, capacity // spec.group, dim) if per_channel else \
            (batch, heads, capacity, dim // self.group)
        self.scale = torch.empty(scales, dtype=torch.float16, device=like.device)
        self.zero = torch.empty_like(self.scale)

    def write(self, row: int, x: torch.Tensor) -> None:
        """Quantize x [B, H, n, d] into rows row..row+n (keys: n and row multiples of the group)."""
        b, h, n, d = x.shape
        if self.per_channel:
            g = self.spec.group
            codes, scale, zero = quantize(x.reshape(b, h, n // g, g, d), self.spec.bits, dim=3)
            self.scale[:, :, row // g:(row + n) // g] = scale[:, :, :, 0]
            self.zero[:, :, row // g:(row + n) // g] = zero[:, :, :, 0]
        else:
            grouped = x.reshape(b, h, n, d // self.group, self.group)
            codes, scale, zero = quantize(grouped, self.spec.bits, dim=4)
            self.scale[:, :, row:row + n] = scale[..., 0]
            self.zero[:, :, row:row + n] = zero[..., 0]
        self.codes[:, :, row:row + n] = pack(codes.reshape(b, h, n, d), self.spec.bits)

    def read(self, rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Dequantized [B, H, m, d] for storage rows [m] (every head) or [H, m] (one set per head)."""
        codes = unpack(rows_of(self.codes, rows), self.spec.bits).float()
        b, h, n, d = codes.shape
        scale_rows = rows // self.spec.group if self.per_channel else rows
        scale, zero = rows_of(self.scale, scale_rows).float(), rows_of(self.zero, scale_rows).float()
        if self.per_channel:
            x = codes * scale + zero
        else:
            x = (codes.view(b, h, n, d // self.group, self.group) * scale[..., None] + zero[..., None])
        return x.view(b, h, n, d).to(dtype)

    def read_range(self, a: int, b: int, dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
        """Dequantized rows a..b [B, H, b - a, d], from slices (no per-row gathers), written into
        `out` when given (a view [B, H, b - a, d], e.g. part of a larger read).

        The codes are multiplied by the float scales as uint8 (one pass writes the float result)."""
        batch, heads = self.codes.shape[:2]
        if out is None:
            out = torch.empty(batch, heads, b - a, self.dim, dtype=dtype, device=self.codes.device)
        if self.per_channel:
            g = self.spec.group
            first, last = a // g, -(-b // g)
            grouped = unpack(self.codes[:, :, first * g:last * g], self.spec.bits).reshape(
                batch, heads, last - first, g, self.dim)
            scale, zero = self.scale[:, :, first:last, None].float(), self.zero[:, :, first:last, None].float()
            if a % g or b % g:  # partial groups at an edge: dequantize them whole, then keep a..b
                x = torch.mul(grouped, scale).add_(zero).view(batch, heads, -1, self.dim)
                return out.copy_(x[:, :, a - first * g:b - first * g])
            target = out.view(batch, heads, last - first, g, self.dim)
        else:
            grouped = unpack(self.codes[:, :, a:b], self.spec.bits).reshape(
                batch, heads, b - a, self.dim // self.group, self.group)
            scale, zero = self.scale[:, :, a:b, :, None].float(), self.zero[:, :, a:b, :, None].float()
            target = out.view(batch, heads, b - a, self.dim // self.group, self.group)
        torch.mul(grouped, scale, out=target)
        target.add_(zero)
        return out

    def moved(self, start: int, stop: int, capacity: int) -> _Codes:
        """A copy of rows start..stop (start a multiple of the key group) at row 0 of a new capacity."""
        copy = _Codes.__new__(_Codes)
        copy.spec, copy.per_channel, copy.dim, copy.group = self.spec, self.per_channel, self.dim, self.group
        copy.codes = self.codes.new_empty(*self.codes.shape[:2], capacity, self.codes.shape[3])
        copy.codes[:, :, :stop - start] = self.codes[:, :, start:stop]
        step = self.spec.group if self.per_channel else 1
        rows = (capacity // step, start // step, -(-stop // step))
        copy.scale = self.scale.new_empty(*self.scale.shape[:2], rows[0], self.scale.shape[3])
        copy.zero = torch.empty_like(copy.scale)
        copy.scale[:, :, :rows[2] - rows[1]] = self.scale[:, :, rows[1]:rows[2]]
        copy.zero[:, :, :rows[2] - rows[1]] = self.zero[:, :, rows[1]:rows[2]]
        return copy

    def nbytes(self, first_row: int, end_row: int) -> int:
        n = end_row - first_row
        if self.per_channel:
            g = self.spec.group
            scale_rows = -(-end_row // g) - first_row // g
        else:
            scale_rows = n
        return n * self.codes[:, :, :1].numel() + 2 * scale_rows * self.scale[:, :, :1].numel() * 2

    def state(self, prefix: str, start: int, stop: int) -> dict[str, torch.Tensor]:
        step = self.spec.group if self.per_channel else 1
        return {f"{prefix}_codes": self.codes[:, :, start:stop].contiguous(),
                f"{prefix}_scale": self.scale[:, :, start // step:stop // step].contiguous(),
                f"{prefix}_zero": self.zero[:, :, start // step:stop // step].contiguous()}

    @classmethod
    def adopt(cls, state: dict, prefix: str, spec: QuantSpec, per_channel: bool, dim: int) -> _Codes:
        codes = cls.__new__(cls)
        codes.spec, codes.per_channel, codes.dim = spec, per_channel, dim
        codes.group = spec.group if per_channel else _channel_group(spec.group, dim)
        codes.codes, codes.scale, codes.zero = (state[f"{prefix}_{p}"] for p in ("codes", "scale", "zero"))
        return codes


def tail_dtype(dtype: torch.dtype) -> torch.dtype:
    """The key tail's dtype: 16 bits, float16 for a float32 model."""
    return torch.float16 if dtype == torch.float32 else dtype


def _channel_group(group: int, dim: int) -> int:
    """Channels per value scale: `group`, or the whole head when it does not divide the head dim."""
    return group if group <= dim and dim % group == 0 else dim


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


class QuantizedSegment:
    """A KVSegment whose keys and values are stored as int8/int4 codes (see the module doc).

    Key rows [0, qend) are quantized (qend a multiple of the group) and the newest key rows
    [qend, end) are the full-precision tail; value rows [0, end) are all quantized; live rows
    are [start, end).
    """

    def __init__(self, batch: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device | str, spec: QuantSpec, capacity: int = 256):
        self.device, self.dtype, self.spec = torch.device(device), dtype, spec
        if spec.bits == 4 and head_dim % 2:
            raise ValueError("int4 KV needs an even head dimension")
        capacity = _round_up(capacity, spec.group)
        like = torch.empty(batch, n_kv_heads, 0, head_dim, dtype=dtype, device=self.device)
        self._k, self._v = _Codes(like, spec, True, capacity), _Codes(like, spec, False, capacity)
        self._positions = torch.empty(capacity, dtype=POSITION_DTYPE, device=self.device)
        self._tail_k = like.to(tail_dtype(dtype))
        self._start = self._qend = 0
        self._reset_rotated()
        # Adopted codes (a stored context's mapped file) are never copied to grow: the quantized
        # rows become a read-only `_base` segment, and this one keeps the rows after them.
        self._adopted = False
        self._base: QuantizedSegment | None = None
        self._on_disk = False  # as KVSegment._on_disk

    def _reset_rotated(self):
        self._rot: _Codes | None = None  # quantized keys rotated at their positions, rows [.., _rot_end)
        self._rot_end, self._rot_key = 0, None

    def __len__(self) -> int:
        return self._base_len + self._end - self._start

    @property
    def _base_len(self) -> int:
        return 0 if self._base is None else len(self._base)

    @property
    def _end(self) -> int:
        return self._qend + self._tail_k.shape[2]

    @property
    def _aligned_start(self) -> int:
        return min(self._start, self._qend) // self.spec.group * self.spec.group

    # --- reading ----------------------------------------------------------------------------
    def _read(self, codes: _Codes, tail: torch.Tensor, a: int, b: int) -> torch.Tensor:
        """Rows a..b of keys or values: rows before `_qend` from the codes, the rest from the tail."""
        split = min(max(self._qend, a), b)  # rows a..split are codes, split..b are in the tail
        return self._joined(codes, a, split, tail[:, :, split - self._qend:b - self._qend])

    def _joined(self, codes: _Codes, a: int, split: int, after: torch.Tensor) -> torch.Tensor:
        """Code rows a..split dequantized and then the 16-bit rows `after`, in one new tensor
        (written in place: nothing is concatenated)."""
        batch, heads, n_after, dim = after.shape
        out = torch.empty(batch, heads, split - a + n_after, dim, dtype=self.dtype, device=after.device)
        if split > a:
            codes.read_range(a, split, self.dtype, out=out[:, :, :split - a])
        if n_after:
            out[:, :, split - a:].copy_(after)
        return out

    def _read_rows(self, codes: _Codes, tail: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Rows [m] (every head) or [Hkv, m] (per head) of keys or values."""
        in_tail = rows >= self._qend
        if self._qend == 0:
            return rows_of(tail, rows - self._qend).to(self.dtype)
        out = codes.read(rows.clamp(max=self._qend - 1), self.dtype)
        if bool(in_tail.any()):
            taken = rows_of(tail, (rows - self._qend).clamp(min=0)).to(self.dtype)
            mask = in_tail if in_tail.dim() == 2 else in_tail.expand(out.shape[1], -1)
            out = torch.where(mask[None, :, :, None], taken, out)
        return out

    @property
    def keys(self) -> torch.Tensor:  # [B, Hkv, n, d], pre-RoPE, dequantized
        own = self._read(self._k, self._tail_k, self._start, self._end)
        return own if self._base is None else torch.cat((self._base.keys, own), 2)

    @property
    def values(self) -> torch.Tensor:
        own = self._v.read_range(self._start, self._end, self.dtype)
        return own if self._base is None else torch.cat((self._base.values, own), 2)

    @property
    def n_kv_heads(self) -> int:
        return self._tail_k.shape[1]

    def key_runs(self, step: int, align: int = 1) -> Iterator[torch.Tensor]:
        """As `KVSegment.key_runs`, each run dequantized only when asked for: scoring the whole
        memory never holds all of its keys in full precision, unless a stored base's length is not
        a multiple of `align` (then all keys are dequantized at once)."""
        assert step % align == 0, "the run length must be a multiple of the alignment"
        if self._base is not None and len(self._base) % align:
            yield from split_runs(self.keys, step)
            return
        if self._base is not None:
            yield from self._base.key_runs(step, align)
        for a in range(self._start, self._end, step):
            yield self._read(self._k, self._tail_k, a, min(a + step, self._end))

    def key_parts(self) -> list[torch.Tensor]:
        """The dequantized keys in token order: [base, rest] for an extended stored context."""
        if self._base is None:
            return [self.keys]
        own = self._read(self._k, self._tail_k, self._start, self._end)
        return [self._base.keys] + ([own] if own.shape[2] else [])

    @property
    def positions(self) -> torch.Tensor:
        own = self._positions[self._start:self._end].long()
        return own if self._base is None else torch.cat((self._base.positions, own))

    def slice(self, start: int, end: int | None = None):
        end = len(self) if end is None else end
        n_base = self._base_len
        if n_base and end <= n_base:
            return self._base.slice(start, end)
        a, b = self._start + max(start - n_base, 0), self._start + end - n_base
        own = (self._read(self._k, self._tail_k, a, b), self._v.read_range(a, b, self.dtype),
               self._positions[a:b].long())
        if n_base and start < n_base:
            return tuple(torch.cat(pair, dim) for pair, dim in zip(
                zip(self._base.slice(start, n_base), own, strict=True), (2, 2, 0), strict=True))
        return own

    def _hint_values(self, rows: torch.Tensor) -> None:
        """As `KVSegment._hint_values`, for the value codes, scales and zero points."""
        if self._adopted and self._on_disk:
            for part in (self._v.codes, self._v.scale, self._v.zero):
                will_need_rows(part, rows)

    def _gather_own(self, index: torch.Tensor):
        rows = index + self._start
        self._hint_values(rows)
        return (self._read_rows(self._k, self._tail_k, rows), self._v.read(rows, self.dtype),
                self._positions.index_select(0, rows).long())

    def gather(self, index: torch.Tensor, device: torch.device | None = None):
        index = index.to(self.device)
        if self._base is None:
            out = self._gather_own(index)
        else:
            in_base = index < self._base_len
            first = self._base.gather(index[in_base])
            rest = self._gather_own(index[~in_base] - self._base_len)
            out = tuple(interleave(a, b, in_base, dim) for a, b, dim in zip(first, rest, (2, 2, 0), strict=True))
        return out if device is None else tuple(t.to(device) for t in out)

    def gather_per_head(self, index: torch.Tensor, device: torch.device | None = None):
        index = index.to(self.device)  # [Hkv, m]
        n_base = self._base_len
        rows = (index - n_base).clamp(min=0) + self._start
        if self._adopted:
            self._hint_values(torch.where(index < n_base, -1, rows))
        out = (self._read_rows(self._k, self._tail_k, rows), self._v.read(rows, self.dtype))
        if n_base:
            first = self._base.gather_per_head(index.clamp(max=n_base - 1))
            mask = (index < n_base)[None, :, :, None]
            out = tuple(torch.where(mask, a, b) for a, b in zip(first, out, strict=True))
        return out if device is None else tuple(t.to(device) for t in out)

    def rotated_keys(self, rope) -> torch.Tensor:
        """Keys rotated at their positions; full groups come from a quantized rotated cache."""
        own = self._rotated_own(rope)
        return own if self._base is None else torch.cat((self._base.rotated_keys(rope), own), 2)

    def _rotated_own(self, rope) -> torch.Tensor:
        key = (id(rope), getattr(rope, "version", 0))
        if self._rot is None or self._rot_key != key or self._rot.codes.shape[2] != self._k.codes.shape[2]:
            self._rot = _Codes(self._tail_k, self.spec, True, self._k.codes.shape[2])
            self._rot_end, self._rot_key = self._aligned_start, key
        if self._rot_end < self._qend:
            a, b = self._rot_end, self._qend
            keys = self._k.read_range(a, b, self.dtype)
            self._rot.write(a, rope.rotate(keys, self._positions[a:b]))
            self._rot_end = b
        tail_from = max(self._start, self._qend)
        tail = rope.rotate(self._tail_k[:, :, tail_from - self._qend:].to(self.dtype),
                           self._positions[tail_from:self._end])
        if self._start >= self._qend:
            return tail
        return self._joined(self._rot, self._start, self._qend, tail)

    # --- writing ----------------------------------------------------------------------------
    def _reserve(self, rows: int) -> None:
        capacity = min(self._positions.shape[0], self._k.codes.shape[2], self._v.codes.shape[2])
        if rows <= capacity:
            return
        if self._adopted and self._start < self._qend:
            self._split_adopted(rows - self._end)
            return
        shift = self._aligned_start
        new_capacity = _round_up(max(rows - shift, 2 * (self._end - shift), 256), self.spec.group)
        self._k = self._k.moved(shift, self._qend, new_capacity)
        self._v = self._v.moved(shift, self._end, new_capacity)
        positions = self._positions.new_empty(new_capacity)
        positions[:self._end - shift] = self._positions[shift:self._end]
        self._positions = positions
        if self._rot is not None:
            self._rot = self._rot.moved(shift, self._rot_end, new_capacity)
            self._rot_end -= shift
        self._start, self._qend = self._start - shift, self._qend - shift

    def _split_adopted(self, extra: int) -> None:
        """Make the adopted quantized rows a read-only base; keep the rows after them (the key
        tail, still in full precision, and its values' codes) in a fresh buffer with room for `extra`."""
        base = self._shell()
        base._k, base._v, base._positions = self._k, self._v, self._positions
        base._tail_k, base._start, base._qend = self._tail_k[:, :, :0], self._start, self._qend
        base._adopted, base._base, base._on_disk = True, None, self._on_disk
        base._reset_rotated()
        old_v, old_positions, tail_k, a, b = self._v, self._positions, self._tail_k, self._qend, self._end
        batch, heads, _, dim = tail_k.shape
        QuantizedSegment.__init__(self, batch, heads, dim, self.dtype, self.device, self.spec,
                                  capacity=max(b - a + extra, 256))
        self._v.codes[:, :, :b - a] = old_v.codes[:, :, a:b]
        self._v.scale[:, :, :b - a] = old_v.scale[:, :, a:b]
        self._v.zero[:, :, :b - a] = old_v.zero[:, :, a:b]
        self._positions[:b - a] = old_positions[a:b]
        self._tail_k, self._base = tail_k, base

    def append(self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor) -> None:
        n = keys.shape[2]
        if n == 0:
            return
        self._reserve(self._end + n)
        self._v.write(self._end, values.to(self.dtype))  # values: per token, no group to wait for
        self._positions[self._end:self._end + n] = positions
        tail_k = torch.cat((self._tail_k, keys.to(self._tail_k.dtype)), 2)
        full = tail_k.shape[2] // self.spec.group * self.spec.group
        if full:
            a = self._qend
            # The rotated cache follows lazily, from the dequantized keys: a segment restored
            # from its saved codes then rotates exactly the same values as the live one.
            self._k.write(a, tail_k[:, :, :full])
            self._qend = a + full
        self._tail_k = tail_k[:, :, full:].clone()

    def drop_front(self, n: int) -> None:
        assert 0 <= n <= len(self)
        if self._base is not None:
            dropped = min(n, len(self._base))
            self._base.drop_front(dropped)
            n -= dropped
            if not len(self._base):
                self._base = None
        self._start += n

    # --- accounting and persistence ---------------------------------------------------------
    @property
    def nbytes(self) -> int:
        first = min(self._start, self._qend)
        total = self._k.nbytes(first, self._qend) + self._v.nbytes(self._start, self._end)
        live_tail = self._tail_k[:, :, max(self._start - self._qend, 0):]  # keys only: values are all codes
        total += live_tail.numel() * live_tail.element_size()
        if self._rot is not None:
            total += self._rot.nbytes(first, self._rot_end)
        total += self._positions.element_size() * (self._end - self._start)
        return total if self._base is None else total + self._base.nbytes

    def state_dict(self) -> dict[str, torch.Tensor]:
        a, b = self._aligned_start, self._qend
        own = {**self._k.state("key", a, b), **self._v.state("value", a, self._end),
               "positions": self._positions[a:self._end].contiguous(),
               "tail_keys": self._tail_k.contiguous(),
               "offset": torch.tensor([self._start - a])}
        if self._base is None:
            return own
        # The base ends on a key group and this segment starts where it ends: codes join as they are.
        base = self._base.state_dict()
        joined = {name: torch.cat((base[name], own[name]), 0 if name == "positions" else 2)
                  for name in own if name not in ("tail_keys", "offset")}
        return {**joined, "tail_keys": own["tail_keys"], "offset": base["offset"]}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Adopt saved tensors; a plain segment's keys/values/positions are quantized instead."""
        state = {name: t.to(self.device) for name, t in state.items()}
        if "keys" in state:
            batch, heads, _, dim = state["keys"].shape
            QuantizedSegment.__init__(self, batch, heads, dim, self.dtype, self.device, self.spec)
            self.append(state["keys"], state["values"], state["positions"])
            return
        dim = state["tail_keys"].shape[3]
        self._k = _Codes.adopt(state, "key", self.spec, True, dim)
        self._v = _Codes.adopt(state, "value", self.spec, False, dim)
        self._positions = state["positions"].to(dtype=POSITION_DTYPE)  # older files hold int64
        self._tail_k = state["tail_keys"].to(tail_dtype(self.dtype))
        self._qend = self._k.codes.shape[2]
        self._start = int(state["offset"][0])
        self._reset_rotated()
        self._adopted, self._base, self._on_disk = True, None, True

    def _shell(self) -> QuantizedSegment:
        """A segment with this one's device, dtype and quantization, holding no storage yet."""
        shell = QuantizedSegment.__new__(QuantizedSegment)
        shell.device, shell.dtype, shell.spec = self.device, self.dtype, self.spec
        return shell

    def clone(self) -> QuantizedSegment:
        copy = self._shell()
        copy.load_state_dict({name: t.clone() for name, t in self.state_dict().items()})
        copy._on_disk = False  # copied into this process's memory
        return copy
