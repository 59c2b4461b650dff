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
    outside [0, n) are ignored (a caller may pass indices that span several tensors). Rows that
    share or touch a page are hinted together, from the first one's page to the last one's end:
    scattered rows cost one call per page range, found without a Python loop over the rows."""
    if _madvise is None or tensor.device.type != "cpu" or tensor.stride(3) != 1 or tensor.shape[3] != tensor.stride(2):
        return
    ranges = page_ranges(_row_starts(tensor, index), tensor.stride(2) * tensor.element_size())
    for address, length in ranges.tolist():
        will_need(address, length)


def _row_starts(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Sorted addresses of the rows `index` picks in every (batch, head) of `tensor`."""
    batch, heads, n, _ = tensor.shape
    item = tensor.element_size()
    index = index.to("cpu", torch.int64)
    per_head = index.expand(heads, -1) if index.dim() == 1 else index
    heads_at = torch.arange(heads)[:, None] * tensor.stride(1)
    starts = [(tensor.data_ptr() + (b * tensor.stride(0) + heads_at + per_head * tensor.stride(2)) * item)[
        (per_head >= 0) & (per_head < n)] for b in range(batch)]
    return torch.cat(starts).unique(sorted=True)


def page_ranges(starts: torch.Tensor, row_bytes: int) -> torch.Tensor:
    """(address, length) [r, 2] covering rows of `row_bytes` at the sorted addresses `starts`:
    rows whose pages overlap or sit next to each other form one range, from the page holding its
    first row to its last row's end."""
    if starts.numel() == 0:
        return starts.new_zeros(0, 2)
    page = mmap.PAGESIZE
    first_page = starts - starts % page
    ends = starts + row_bytes
    breaks = (first_page[1:] > -(-ends[:-1] // page) * page).nonzero()[:, 0] + 1
    range_starts = first_page[torch.cat((breaks.new_zeros(1), breaks))]
    range_ends = ends[torch.cat((breaks - 1, breaks.new_full((1,), len(starts) - 1)))]
    return torch.stack((range_starts, range_ends - range_starts), 1)
