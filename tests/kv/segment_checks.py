"""Shared checks: a segment reads exactly like a reference segment holding the same tokens."""

import torch


def assert_same_reads(seg, reference, index: list[int], per_head: list[list[int]], slices) -> None:
    """Gathers (shared and per KV head) and slices of `seg` equal those of `reference`."""
    reads = [(seg.gather(torch.tensor(index)), reference.gather(torch.tensor(index))),
             (seg.gather_per_head(torch.tensor(per_head)), reference.gather_per_head(torch.tensor(per_head)))]
    reads += [(seg.slice(a, b), reference.slice(a, b)) for a, b in slices]
    for got, expected in reads:
        for mine, theirs in zip(got, expected, strict=True):
            assert torch.equal(mine, theirs)
