"""CPU kernels compiled with numba for the decode step's hot loops, where torch's general ops
cost more than the arithmetic: attention of one query over a long run of keys (torch's CPU flash
kernel splits work by query blocks, so one query over 32K keys runs at about half the memory
bandwidth), attention over rows picked per KV head (torch must copy them out first), and the
cluster lookup of `squeezed` (a dozen small ops of ~10-80 us each in torch).

Used only when every tensor is float32 on the CPU, the batch is 1, and numba imports; set
LONGREACH_KERNELS=0 to use the torch path everywhere (the two agree to float32 rounding; tests
compare them). Compiled code is cached next to this package (or in numba's user cache), so only
the first call of a fresh install compiles (a few seconds).
"""

from __future__ import annotations

import os

import torch

try:
    import numba
except ImportError:  # optional at run time: the torch path does the same work
    numba = None


def enabled(*tensors: torch.Tensor) -> bool:
    """Whether the numba kernels can take these tensors (float32 on the CPU)."""
    if numba is None or os.environ.get("LONGREACH_KERNELS", "1") == "0":
        return False
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def sync_threads() -> int:
    """numba's thread count follows torch's (`torch.set_num_threads`); returns it."""
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != threads:
        numba.set_num_threads(threads)
    return threads
