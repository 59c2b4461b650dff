"""The KV store: per layer, named segments of pre-RoPE keys, values and true positions.

A method decides what its segments mean (sinks, a local window, memory blocks); the store
owns the storage: amortised appends, dropping from the front, gathering, which device
each segment lives on (CPU memory while computing on a GPU), and byte accounting.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .quant import QuantizedSegment, QuantSpec
from .readahead import will_need_rows
from .rows import POSITION_DTYPE, interleave, rows_of, split_runs


class KVSegment:
    """A growable run of keys [B, Hkv, n, d], values and positions [n] on one device."""

    def __init__(self, batch: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device | str, capacity: int = 256):
        self.device = torch.device(device)
        self._keys = torch.empty(batch, n_kv_heads, capacity, head_dim, dtype=dtype, device=self.device)
        self._values = torch.empty_like(self._keys)
        self._positions = torch.empty(capacity, dtype=POSITION_DTYPE, device=self.device)
        self._start = 0
        self._end = 0
        # Derived cache: keys rotated at their true positions, valid for [_start, _rot_end).
        self._rotated: torch.Tensor | None = None
        self._rot_end = 0
        self._rot_rope = None
        # Adopted tensors (e.g. a stored context's memory-mapped file) are never copied to grow:
        # once more tokens arrive they become a read-only `_base` before the growable buffer.
        self._adopted = False
        self._base: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        # Adopted tensors may be a mapped file whose pages are still on disk (not a clone's copy):
        # gathers then hint the rows they read first.
        self._on_disk = False

    def __len__(self) -> int:
        return self._base_len + self._end - self._start

    @property
    def _base_len(self) -> int:
        return 0 if self._base is None else self._base[2].shape[0]

    @property
    def keys(self) -> torch.Tensor:  # [B, Hkv, n, d], pre-RoPE
        self._merge_base()
        return self._keys[:, :, self._start:self._end]

    @property
    def values(self) -> torch.Tensor:  # [B, Hkv, n, d]
        self._merge_base()
        return self._values[:, :, self._start:self._end]

    @property
    def positions(self) -> torch.Tensor:  # [n], true token positions (int64)
        live = self._positions[self._start:self._end]
        return (live if self._base is None else torch.cat((self._base[2], live))).long()

    @property
    def n_kv_heads(self) -> int:
        return self._keys.shape[1]

    def key_parts(self) -> list[torch.Tensor]:
        """The keys as views in token order, without copying: [base, buffer] or [buffer]."""
        live = self._keys[:, :, self._start:self._end]
        return [live] if self._base is None else [t for t in (self._base[0], live) if t.shape[2]]

    def key_runs(self, step: int, align: int = 1) -> Iterator[torch.Tensor]:
        """The keys in token order as views of at most `step` tokens (a multiple of `align`); a run
        ends on a multiple of `align` tokens unless it ends the segment. A stored base whose length
        is not a multiple of `align` is first merged into the buffer (a copy, values included)."""
        assert step % align == 0, "the run length must be a multiple of the alignment"
        parts = self.key_parts()
        if any(part.shape[2] % align for part in parts[:-1]):
            parts = [self.keys]
        for part in parts:
            yield from split_runs(part, step)

    def _merge_base(self) -> None:
        """Copy the read-only base into the buffer (for callers that need one contiguous tensor)."""
        if self._base is None:
            return
        base, self._base = self._base, None
        self._rotated, self._rot_end = None, 0
        if self._end == self._start:
            self._keys, self._values, self._positions = base
            self._start, self._end, self._adopted = 0, base[2].shape[0], True
            return
        keys, values, positions = (torch.cat((b, live), dim) for b, live, dim in zip(
            base, (self._keys[:, :, self._start:self._end], self._values[:, :, self._start:self._end],
                   self._positions[self._start:self._end]), (2, 2, 0), strict=True))
        self._keys, self._values, self._positions = keys, values, positions
        self._start, self._end = 0, positions.shape[0]

    def _reserve(self, extra: int) -> None:
        capacity = self._keys.shape[2]
        if self._end + extra <= capacity:
            return
        a, b = self._start, self._end
        if self._adopted and self._base is None:
            # Keep the adopted tokens where they are and start a fresh buffer after them.
            self._base = (self._keys[:, :, a:b], self._values[:, :, a:b], self._positions[a:b])
            self._keys = self._keys.new_empty(*self._keys.shape[:2], max(extra, 256), self._keys.shape[3])
            self._values = torch.empty_like(self._keys)
            self._positions = self._positions.new_empty(self._keys.shape[2])
            self._start = self._end = 0
            self._rotated, self._rot_end, self._adopted = None, 0, False
            return
        n = b - a
        if n + extra <= capacity and a >= capacity // 2:
            new_capacity = capacity  # compact in place: enough room once the dropped front is reclaimed
        else:
            new_capacity = max(n + extra, 2 * capacity)
        keys = self._keys.new_empty(*self._keys.shape[:2], new_capacity, self._keys.shape[3])
        values = torch.empty_like(keys)
        positions = self._positions.new_empty(new_capacity)
        keys[:, :, :n] = self._keys[:, :, a:b]
        values[:, :, :n] = self._values[:, :, a:b]
        positions[:n] = self._positions[a:b]
        if self._rotated is not None:
            rotated = torch.empty_like(keys)
            n_rot = self._rot_end - a
            rotated[:, :, :n_rot] = self._rotated[:, :, a:self._rot_end]
            self._rotated, self._rot_end = rotated, n_rot
        self._keys, self._values, self._positions = keys, values, positions
        self._start, self._end = 0, n

    def append(self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor) -> None:
        n = keys.shape[2]
        if n == 0:
            return
        self._reserve(n)
        end = self._end + n
        self._keys[:, :, self._end:end] = keys
        self._values[:, :, self._end:end] = values
        self._positions[self._end:end] = positions
        self._end = end

    def drop_front(self, n: int) -> None:
        """Forget the oldest `n` tokens (amortised: the buffer is compacted on a later append)."""
        assert 0 <= n <= len(self)
        if self._base is not None:
            dropped = min(n, self._base_len)
            keys, values, positions = self._base
            self._base = (keys[:, :, dropped:], values[:, :, dropped:], positions[dropped:])
            n -= dropped
            if not self._base_len:
                self._base = None
        self._start += n
        self._rot_end = max(self._rot_end, self._start)

    def rotated_keys(self, rope) -> torch.Tensor:
        """Keys [B, Hkv, n, d] rotated at their true positions, extended incrementally.

        RoPE is relative, so keys rotated once at true positions serve any query rotated
        at its true position; only the new tail is rotated on each call.
        """
        self._merge_base()
        version = (id(rope), getattr(rope, "version", 0))
        if self._rotated is None or self._rot_rope != version:
            self._rotated = torch.empty_like(self._keys)
            self._rot_end, self._rot_rope = self._start, version
        if self._rotated.shape[2] != self._keys.shape[2]:
            self._rotated = torch.empty_like(self._keys)
            self._rot_end = self._start
        if self._rot_end < self._end:
            a, b = self._rot_end, self._end
            self._rotated[:, :, a:b] = rope.rotate(self._keys[:, :, a:b], self._positions[a:b])
            self._rot_end = b
        return self._rotated[:, :, self._start:self._end]

    def slice(self, start: int, end: int | None = None):
        """(keys, values, positions) of tokens start..end, as views."""
        end = len(self) if end is None else end
        n_base = self._base_len
        if n_base and end <= n_base:
            keys, values, positions = self._base
            return keys[:, :, start:end], values[:, :, start:end], positions[start:end].long()
        if n_base and start < n_base:
            self._merge_base()
            n_base = 0
        a, b = self._start + start - n_base, self._start + end - n_base
        return self._keys[:, :, a:b], self._values[:, :, a:b], self._positions[a:b].long()

    def gather(self, index: torch.Tensor, device: torch.device | None = None):
        """(keys, values, positions) of the tokens at `index` (a 1-D tensor), moved to `device`."""
        index = index.to(self.device)
        self._hint_values(index)
        if self._base is None:
            index = index + self._start
            out = (self._keys.index_select(2, index), self._values.index_select(2, index),
                   self._positions.index_select(0, index))
        else:
            in_base = index < self._base_len
            live = (self._keys[:, :, self._start:self._end], self._values[:, :, self._start:self._end],
                    self._positions[self._start:self._end])
            out = tuple(_pick(base, buf, index, in_base, self._base_len, dim)
                        for base, buf, dim in zip(self._base, live, (2, 2, 0), strict=True))
        out = (*out[:2], out[2].long())
        if device is not None and torch.device(device) != self.device:
            out = tuple(t.to(device, non_blocking=True) for t in out)
        return out

    def _hint_values(self, index: torch.Tensor) -> None:
        """Adopted values may be a mapped file still on disk: ask for every selected run at once.
        `index`: [m] rows of every head or [Hkv, m] rows per head."""
        if not self._on_disk:
            return
        if self._base is not None:
            will_need_rows(self._base[1], index)
        elif self._adopted:
            will_need_rows(self._values[:, :, self._start:self._end], index)

    def will_read(self, index: torch.Tensor, keys: bool = True) -> None:
        """About to read the keys (unless not `keys`) and values at `index` ([Hkv, m] rows per head)
        where they lie (a compiled kernel): a mapped file still on disk is asked for them first."""
        self._hint_values(index)
        if keys and self._on_disk and self._adopted and self._base is None:
            will_need_rows(self._keys[:, :, self._start:self._end], index)

    def reorder_per_head(self, order: torch.Tensor) -> None:
        """Store KV head h's tokens in the order order[h] ([Hkv, n], each a permutation of the rows):
        row i of head h then holds the token that was at row order[h, i] (squeezed lays a head's
        keys out cluster by cluster, so that a lookup's clusters are read as runs). Positions stay
        in token order, one per token: the caller keeps `order` to pair a head's rows with theirs."""
        assert order.shape == (self.n_kv_heads, len(self)), "one permutation of the rows per KV head"
        order = order.to(self.device)
        self._keys, self._values = rows_of(self.keys, order), rows_of(self.values, order)
        self._positions = self.positions.to(POSITION_DTYPE)
        self._start, self._end = 0, self._positions.shape[0]
        self._rotated, self._rot_end, self._rot_rope = None, 0, None
        self._adopted, self._base, self._on_disk = False, None, False

    def gather_per_head(self, index: torch.Tensor, device: torch.device | None = None):
        """(keys, values) [B, Hkv, m, d] where KV head h takes the tokens at `index[h]` ([Hkv, m])."""
        index = index.to(self.device)
        self._hint_values(index)
        parts = [(self._keys[:, :, self._start:self._end], self._values[:, :, self._start:self._end],
                  index - self._base_len)]
        if self._base is not None:
            parts.insert(0, (self._base[0], self._base[1], index))
        out = None
        for keys, values, rows in parts:
            valid = (rows >= 0) & (rows < keys.shape[2])
            at = rows.clamp(0, max(keys.shape[2] - 1, 0))
            got = rows_of(keys, at), rows_of(values, at)
            out = got if out is None else tuple(torch.where(valid[None, :, :, None], new, old)
                                                 for new, old in zip(got, out, strict=True))
        keys, values = out
        if device is not None and torch.device(device) != self.device:
            keys, values = keys.to(device, non_blocking=True), values.to(device, non_blocking=True)
        return keys, values

    @property
    def nbytes(self) -> int:
        """Bytes of the live tokens (keys, values, positions, and the rotated-key cache if any)."""
        per_vector = self._keys[:, :, :1].numel() * self._keys.element_size()
        rotated = self._end - self._start if self._rotated is not None else 0
        return len(self) * (per_vector * 2 + self._positions.element_size()) + rotated * per_vector

    def state_dict(self) -> dict[str, torch.Tensor]:
        live = (self._keys[:, :, self._start:self._end], self._values[:, :, self._start:self._end])
        if self._base is not None:
            live = tuple(torch.cat((base, part), 2) for base, part in zip(self._base[:2], live, strict=True))
        return {"keys": live[0].contiguous(), "values": live[1].contiguous(),
                "positions": self.positions.to(POSITION_DTYPE)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Adopt saved tensors (no copy when they are already on this segment's device; appending
        later does not copy them either, see `_reserve`)."""
        self._keys = state["keys"].to(self.device)
        self._values = state["values"].to(self.device)
        self._positions = state["positions"].to(self.device, POSITION_DTYPE)  # older files hold int64
        self._start, self._end = 0, self._keys.shape[2]
        self._rotated, self._rot_end, self._rot_rope = None, 0, None
        self._adopted, self._base, self._on_disk = True, None, True

    def clone(self) -> KVSegment:
        copy = KVSegment.__new__(KVSegment)
        copy.device = self.device
        copy.load_state_dict({k: v.clone() for k, v in self.state_dict().items()})
        copy._on_disk = False  # copied into this process's memory
        return copy


def _pick(base: torch.Tensor, buffer: torch.Tensor, index: torch.Tensor, in_base: torch.Tensor,
          n_base: int, dim: int) -> torch.Tensor:
    """Rows `index` along `dim` of base ++ buffer, without concatenating them."""
    return interleave(base.index_select(dim, index[in_base]),
                      buffer.index_select(dim, index[~in_base] - n_base), in_base, dim)


class GrowingBuffer:
    """A tensor that grows along dim 0 with amortised appends and drops from the front."""

    def __init__(self, like: torch.Tensor, capacity: int = 64):
        self._data = like.new_empty(capacity, *like.shape[1:])
        self._start = self._end = 0

    def __len__(self) -> int:
        return self._end - self._start

    @property
    def data(self) -> torch.Tensor:
        return self._data[self._start:self._end]

    def append(self, rows: torch.Tensor) -> None:
        n = rows.shape[0]
        if self._end + n > self._data.shape[0]:
            live = self.data
            capacity = max(len(self) + n, 2 * self._data.shape[0])
            self._data = self._data.new_empty(capacity, *self._data.shape[1:])
            self._data[:len(live)] = live
            self._start, self._end = 0, len(live)
        self._data[self._end:self._end + n] = rows
        self._end += n

    def drop_front(self, n: int) -> None:
        assert 0 <= n <= len(self)
        self._start += n

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self._data.element_size()

    def clone(self) -> GrowingBuffer:
        copy = GrowingBuffer.__new__(GrowingBuffer)
        copy._data, copy._start, copy._end = self.data.clone(), 0, len(self)
        return copy

    @classmethod
    def from_tensor(cls, data: torch.Tensor) -> GrowingBuffer:
        buf = cls.__new__(cls)
        buf._data, buf._start, buf._end = data, 0, data.shape[0]
        return buf


@dataclass(slots=True)
class StoreLayout:
    """What a store's segments are made of; shared by the store and its layers (one object, so a
    layer needs no link back to its store: that cycle kept a finished sequence's memory, gigabytes,
    alive until Python's cycle collector happened to run)."""

    n_kv_heads: int
    head_dim: int
    dtype: torch.dtype
    device: torch.device
    offload_device: torch.device
    batch: int
    quant: QuantSpec | None  # int8/int4 segments when set (see kv/quant.py)


class LayerKV:
    """One layer's named segments plus method tensors (e.g. block representatives)."""

    def __init__(self, layout: StoreLayout):
        self._layout = layout
        self.segments: dict[str, KVSegment] = {}
        self.buffers: dict[str, GrowingBuffer] = {}
        self.offloaded: set[str] = set()

    @property
    def quantized(self) -> bool:
        """Whether this store keeps keys and values as int8/int4 codes."""
        return self._layout.quant is not None

    def segment(self, name: str, offload: bool = False, n_kv_heads: int | None = None) -> KVSegment:
        """The segment `name`, created on first use; `offload` puts it on the store's cold tier.

        `n_kv_heads` makes a segment with fewer heads (e.g. one per KV head for per-head
        selections); a store with a `quant` spec creates quantized segments.
        """
        if name not in self.segments:
            s = self._layout
            device = s.offload_device if offload else s.device
            if offload:
                self.offloaded.add(name)
            shape = (s.batch, n_kv_heads or s.n_kv_heads, s.head_dim, s.dtype, device)
            self.segments[name] = KVSegment(*shape) if s.quant is None else QuantizedSegment(*shape, s.quant)
        return self.segments[name]

    def buffer(self, name: str, like: torch.Tensor) -> GrowingBuffer:
        """The method buffer `name` (rows shaped like `like[0]`), created on first use."""
        if name not in self.buffers:
            self.buffers[name] = GrowingBuffer(like)
        return self.buffers[name]


class KVStore:
    """All layers' segments for one sequence, with byte accounting per device tier."""

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device | str, offload_device: torch.device | str | None = None,
                 batch: int = 1, quant: QuantSpec | None = None):
        self.n_layers = n_layers
        self.layout = StoreLayout(n_kv_heads, head_dim, dtype, torch.device(device),
                                  torch.device(offload_device) if offload_device else torch.device("cpu"),
                                  batch, quant)
        self.layers = [LayerKV(self.layout) for _ in range(n_layers)]

    n_kv_heads = property(lambda self: self.layout.n_kv_heads)
    head_dim = property(lambda self: self.layout.head_dim)
    dtype = property(lambda self: self.layout.dtype)
    device = property(lambda self: self.layout.device)
    offload_device = property(lambda self: self.layout.offload_device)
    batch = property(lambda self: self.layout.batch)
    quant = property(lambda self: self.layout.quant)

    def __getitem__(self, layer: int) -> LayerKV:
        return self.layers[layer]

    def set_quant(self, quant: QuantSpec | None) -> None:
        """Quantize the segments created from now on; only allowed while the store is empty."""
        if any(layer.segments for layer in self.layers):
            raise ValueError("KV quantization must be chosen before anything is stored")
        self.layout.quant = quant

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors: "{layer}.{seg|cold}.{name}.{keys|values|positions}" and "{layer}.buf.{name}".

        "cold" marks segments that live on the offload tier. A quantized segment's parts are
        its codes, scales and zero points instead of keys and values (see kv/quant.py).
        """
        state = {}
        for i, layer in enumerate(self.layers):
            for name, seg in layer.segments.items():
                kind = "cold" if name in layer.offloaded else "seg"
                for part, tensor in seg.state_dict().items():
                    state[f"{i}.{kind}.{name}.{part}"] = tensor
            for name, buf in layer.buffers.items():
                state[f"{i}.buf.{name}"] = buf.data.contiguous()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Replace every layer's contents with `state` (as produced by `state_dict`)."""
        self.layers = [LayerKV(self.layout) for _ in range(self.n_layers)]
        grouped: dict[tuple[int, str, bool], dict[str, torch.Tensor]] = defaultdict(dict)
        for key, tensor in state.items():
            index, kind, rest = key.split(".", 2)
            layer = self.layers[int(index)]
            if kind == "buf":
                layer.buffers[rest] = GrowingBuffer.from_tensor(tensor.to(self.device))
            else:
                name, part = rest.rsplit(".", 1)
                grouped[(int(index), name, kind == "cold")][part] = tensor
        for (index, name, offload), parts in grouped.items():
            self.layers[index].segment(name, offload=offload).load_state_dict(parts)

    def clone(self) -> KVStore:
        """An independent copy (a fork of this sequence's memory)."""
        copy = KVStore(self.n_layers, self.n_kv_heads, self.head_dim, self.dtype, self.device,
                       self.offload_device, self.batch, self.quant)
        for mine, theirs in zip(self.layers, copy.layers, strict=True):
            theirs.segments = {name: seg.clone() for name, seg in mine.segments.items()}
            theirs.offloaded = set(mine.offloaded)
            theirs.buffers = {name: buf.clone() for name, buf in mine.buffers.items()}
        return copy

    def bytes_by_device(self) -> dict[str, int]:
        """Bytes held per device ("cpu", "cuda:0", ...), segments and method tensors included."""
        totals: dict[str, int] = defaultdict(int)
        for layer in self.layers:
            for seg in layer.segments.values():
                totals[str(seg.device)] += seg.nbytes
            for buf in layer.buffers.values():
                totals[str(buf.data.device)] += buf.nbytes
        return dict(totals)

    @property
    def nbytes(self) -> int:
        return sum(self.bytes_by_device().values())

    def tokens(self, segment: str) -> int:
        return sum(len(layer.segments[segment]) for layer in self.layers if segment in layer.segments)
