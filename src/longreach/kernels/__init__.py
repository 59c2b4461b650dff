"""CPU kernels compiled with numba for the decode step: attention of one query over a long run of
stored keys (torch's CPU flash kernel shares out its work by query blocks and heads, so one
query over 32K keys reads them at about half the speed the memory allows).

Used only when every tensor is float32 on the CPU, the batch is 1, and numba imports; set
LONGREACH_KERNELS=0 to use the torch path everywhere (the two agree to float32 rounding; tests
compare them). Compiled code is cached next to this package (or in numba's user cache), so only
the first call of a fresh install compiles (a few seconds).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
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


# Summation order may change (what lets the dot products vectorise); no other liberty is taken.
REASSOCIATE = {"reassoc", "contract"}


def compiled(fn):
    """numba-compile `fn` for one thread, releasing the GIL (so `in_parallel` can share out the
    work), cached on disk; without numba, `fn` itself (never called: `enabled` is then False)."""
    return numba.njit(nogil=True, fastmath=REASSOCIATE, cache=True)(fn) if numba is not None else fn


_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)


def threads() -> int:
    """Threads the kernels use: torch's count (`torch.set_num_threads`)."""
    return max(1, torch.get_num_threads())


def in_parallel(kernel, n_items: int, *args, parallel: bool = True, sizes=None) -> None:
    """Run kernel(*args, first, stop) over [0, n_items): with `parallel`, cut into one contiguous
    range per thread (of about equal total `sizes`, the items' costs, when given; else of equal
    counts), the first in the caller and the others in a pool of plain threads; without it, all in
    the caller.

    Plain threads rather than numba's parallel loops: numba's OpenMP pool is a second runtime next
    to torch's, and on a machine busy with other work its spinning threads made each call about
    200x slower (0.45 s instead of 2 ms); idle plain threads sleep. Waking one costs about 0.1 ms
    inside a decode step (torch's own threads hold the cores for a while after each of its ops),
    so callers ask for threads only when the work is much larger than that."""
    global _pool
    n = min(threads(), n_items) if parallel else 1
    cuts = [n_items * i // n for i in range(n + 1)]
    if sizes is not None and n > 1:
        ends = np.cumsum(sizes)
        cuts = [0, *(int(np.searchsorted(ends, ends[-1] * i / n)) + 1 for i in range(1, n)), n_items]
    if n == 1:
        kernel(*args, 0, n_items)
        return
    if _pool is None or _pool[0] != os.getpid() or _pool[1] < n - 1:  # a forked child needs its own
        if _pool is not None and _pool[0] == os.getpid():
            _pool[2].shutdown(wait=False)
        _pool = (os.getpid(), n - 1, ThreadPoolExecutor(n - 1, thread_name_prefix="longreach-kernel"))
    others = [_pool[2].submit(kernel, *args, cuts[i], cuts[i + 1]) for i in range(1, n)]
    kernel(*args, cuts[0], cuts[1])
    for future in others:
        future.result()
