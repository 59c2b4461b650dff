"""Safetensors files written tensor by tensor and read back memory-mapped, without copies.

The format is the standard one (8-byte little-endian header size, JSON header, raw bytes),
so `safetensors.safe_open` reads these files; we write and map them ourselves because the
library's writer builds the whole file in memory and its reader copies each tensor.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from .readahead import will_need

DTYPE_CODES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
               torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
               torch.uint8: "U8", torch.bool: "BOOL"}
CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}


class TensorFileError(ValueError):
    """The file is not a readable safetensors file (truncated, bad header, ...)."""


def write_tensors(path: Path, tensors: dict[str, torch.Tensor],
                  should_stop: Callable[[], bool] | None = None) -> tuple[int, str, str]:
    """Write `tensors` to `path`, streaming each tensor's bytes, then fsync.

    Returns (file bytes, sha256 of the whole file, sha256 of the 8-byte size + header).
    Raises InterruptedError when `should_stop()` turns true between tensors.
    """
    # Larger elements first keeps every tensor aligned to its element size; within a size, names
    # in natural order ("2.x" before "10.x") put each layer's tensors in the order layers run.
    names = sorted(tensors, key=lambda n: (-tensors[n].element_size(), natural_key(n)))
    header, offset = {}, 0
    for name in names:
        t = tensors[name]
        if t.dtype not in DTYPE_CODES:
            raise TypeError(f"cannot save tensor {name} of dtype {t.dtype}")
        size = t.numel() * t.element_size()
        header[name] = {"dtype": DTYPE_CODES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned
    head = struct.pack("<Q", len(blob)) + blob
    digest = hashlib.sha256(head)
    with open(path, "wb") as f:
        f.write(head)
        for name in names:
            if should_stop is not None and should_stop():
                raise InterruptedError("cancelled while writing")
            t = tensors[name].detach().contiguous().cpu()
            if t.numel():
                data = memoryview(t.reshape(-1).view(torch.uint8).numpy())
                digest.update(data)
                f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return len(head) + offset, digest.hexdigest(), hashlib.sha256(head).hexdigest()


def natural_key(name: str) -> tuple:
    """Sort key for dotted names, numbers compared as numbers: "2.keys" < "10.keys"."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in name.split("."))


def header_sha256(path: Path) -> str:
    """sha256 of the 8-byte size and the header (cheap: the tensor data is not read)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise TensorFileError(f"{path.name} is truncated")
        (size,) = struct.unpack("<Q", raw)
        return hashlib.sha256(raw + f.read(size)).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def map_tensors(path: Path, prefetch: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, memory-mapped copy-on-write: nothing is read until used.

    `prefetch(name)` picks tensors the OS starts reading at once, in the background and in natural
    name order (layer by layer, as a forward pass uses them), so that a cold file is read in large
    sequential requests ahead of the caller's computation instead of page by page when touched.
    """
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    header, base = _parse_header(mapped, path.name)
    tensors, wanted = {}, []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = CODE_DTYPES[info["dtype"]], [int(d) for d in info["shape"]]
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise TensorFileError(f"{path.name}: bad header entry for tensor {name}") from None
        count = 1
        for dim in shape:
            count *= dim
        if end - start != count * dtype.itemsize or start < 0 or base + end > len(mapped):
            raise TensorFileError(f"{path.name}: tensor {name} does not fit the file (truncated?)")
        if count == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:
            flat = torch.frombuffer(mapped, dtype=dtype, count=count, offset=base + start)
            tensors[name] = flat.view(shape)
            if prefetch is not None and prefetch(name):
                wanted.append((natural_key(name), tensors[name]))
    if wanted:
        ranges = [(t.data_ptr(), t.numel() * t.element_size()) for _, t in sorted(wanted, key=lambda w: w[0])]
        threading.Thread(target=_will_need, args=(ranges, mapped), daemon=True).start()
    return tensors


def _will_need(ranges: list[tuple[int, int]], mapped: mmap.mmap) -> None:
    """Ask the OS to read these (address, length) ranges of `mapped` ahead, in this order.

    One hint per tensor: measured at 64K, hinting the file in 8 MiB requests (posix_fadvise)
    flooded the disk queue and made a cold first answer slower (5.8 s vs 3.8 s), since the pages
    the question needs at once then wait behind the read-ahead. The thread holds `mapped` so the
    addresses stay mapped until it ends, even if every tensor is dropped before (a load that
    fails its checks, a context evicted at once)."""
    for address, length in ranges:
        will_need(address, length)


def _parse_header(mapped, name: str) -> tuple[dict, int]:
    if len(mapped) < 8:
        raise TensorFileError(f"{name} is truncated")
    (size,) = struct.unpack("<Q", mapped[:8])
    if size > len(mapped) - 8:
        raise TensorFileError(f"{name}: header runs past the end of the file")
    try:
        header = json.loads(mapped[8:8 + size])
    except ValueError:
        raise TensorFileError(f"{name}: unreadable header") from None
    if not isinstance(header, dict):
        raise TensorFileError(f"{name}: unreadable header")
    return header, 8 + size
