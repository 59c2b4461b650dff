"""Block selection strategies for block-memory methods (which memory blocks a query reads)."""

from __future__ import annotations

import torch


class BlockSelector:
    """Chooses `topk` memory blocks for an execution block of queries."""

    def __init__(self, config):
        self.config = config

    def select(self, q_global: torch.Tensor, reprs: torch.Tensor, topk: int) -> torch.Tensor:
        """Block indices (1-D, sorted) for queries [B, H, q, d] given representatives [n, B, H, d]."""
        raise NotImplementedError


class PaperSelector(BlockSelector):
    """InfLLM's: the execution block's mean query against each block's representative, summed over heads."""

    def select(self, q_global, reprs, topk):
        mean_query = q_global.mean(dim=2)[0]  # [H, d] (batch item 0: blocks are shared across a batch)
        scores = torch.einsum("hd,nhd->n", mean_query.float(), reprs[:, 0].float())
        return scores.topk(topk).indices.sort().values.cpu()


SELECTORS: dict[str, type[BlockSelector]] = {"paper": PaperSelector}
