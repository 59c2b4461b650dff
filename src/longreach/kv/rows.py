"""Row helpers shared by the plain and quantized KV segments (tensors [B, H, n, d], rows along dim 2)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

# Stored true positions: 4 bytes per token per layer (positions stay far below 2**31); readers get int64.
POSITION_DTYPE = torch.int32


def split_runs(x: torch.Tensor, step: int) -> Iterator[torch.Tensor]:
    """Views of x [B, H, n, d] along dim 2, `step` rows at a time."""
    return (x[:, :, a:a + step] for a in range(0, x.shape[2], step))


def interleave(first: torch.Tensor, rest: torch.Tensor, in_first: torch.Tensor, dim: int) -> torch.Tensor:
    """Rows of `first` where `in_first` is true and of `rest` elsewhere, in index order along `dim`."""
    shape = list(first.shape)
    shape[dim] = in_first.shape[0]
    out = first.new_empty(shape)
    out.index_copy_(dim, in_first.nonzero()[:, 0], first)
    return out.index_copy_(dim, (~in_first).nonzero()[:, 0], rest)


def rows_of(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x [B, H, t, d] at rows [m] (every head) or [H, m] (one set of rows per head)."""
    if rows.dim() == 1:
        return x.index_select(2, rows)
    b, h, _, d = x.shape
    return x.gather(2, rows[None, :, :, None].expand(b, h, rows.shape[1], d))
