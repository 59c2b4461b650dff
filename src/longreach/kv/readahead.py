"""Read-ahead hints for tensors whose pages may still be on disk (a memory-mapped stored context).

Gathering a few blocks of a mapped tensor faults its pages in one range after another, each
waiting for the disk. Hinting every range first lets the OS read them all at once; for memory
that is already resident (or not backed by a file) the hint costs a system call and does nothing.
"""

from __future__ import annotations

import ctypes
import mmap

import torch

_MADV_WILLNEED = getattr(mmap, "MADV_WILLNEED", None)


def _load_madvise():
    if _MADV_WILLNEED is None:  # not a POSIX system
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise  # libc, already loaded in the process
    except (OSError, AttributeError, TypeError):
        return None
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    return madvise


_madvise = _load_madvise()


def runs(index: torch.Tensor) -> list[tuple[int, int]]:
    """Sorted runs [start, stop) of consecutive values in a 1-D index."""
    if index.numel() == 0:
        return []
    values = index.unique(sorted=True)
    breaks = (values[1:] - values[:-1] != 1).nonzero()[:, 0] + 1
    starts = torch.cat((values[:1], values[breaks])).tolist()
    stops = torch.cat((values[breaks - 1] + 1, values[-1:] + 1)).tolist()
    return list(zip(starts, stops, strict=True))


def will_need(address: int, length: int) -> None:
    """Hint the OS to read the pages of [address, address + length) of this process's memory.

    Called through ctypes, the system call runs without the GIL: a hint that waits for a busy
    disk queue does not stop the caller's other threads."""
    if _madvise is None or length <= 0:
        return
    aligned = address - address % mmap.PAGESIZE
    _madvise(aligned, address + length - aligned, _MADV_WILLNEED)


def will_need_rows(tensor: torch.Tensor, index: torch.Tensor) -> None:
    """Hint the OS to read rows `index` (along dim 2) of a CPU tensor [B, H, n, d] whose rows are
    contiguous: `index` [m] names the rows of every head, [H, m] the rows of each head. Rows
    outside [0, n) are ignored (a caller may pass indices that span several tensors). Runs that
    share or touch a page are hinted together: scattered rows cost one call per page range."""
    if _madvise is None or tensor.device.type != "cpu" or tensor.stride(3) != 1 or tensor.shape[3] != tensor.stride(2):
        return
    item = tensor.element_size()
    row_bytes = tensor.stride(2) * item
    inside = (index >= 0) & (index < tensor.shape[2])
    shared = runs(index[inside]) if index.dim() == 1 else None
    ranges = []
    for b in range(tensor.shape[0]):
        for h in range(tensor.shape[1]):
            head = tensor.data_ptr() + (b * tensor.stride(0) + h * tensor.stride(1)) * item
            spans = shared if shared is not None else runs(index[h][inside[h]])
            ranges.extend((head + start * row_bytes, (stop - start) * row_bytes) for start, stop in spans)
    for address, length in page_ranges(ranges):
        will_need(address, length)


def page_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(address, length) ranges widened to page boundaries, sorted, with those that overlap or
    sit on adjacent pages merged into one."""
    page = mmap.PAGESIZE
    merged: list[list[int]] = []
    for start, end in sorted((a - a % page, a + n) for a, n in ranges if n > 0):
        if merged and start <= -(-merged[-1][1] // page) * page:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end - start) for start, end in merged]
