"""Block selection: which memory blocks a block-memory method reads for a set of queries.

Selection decides whether a method reads past the window on real text (methods.md §10), so
it is a strategy of its own, chosen with the `selection` option and observable through the
engine's trace. Every strategy sees the same request and returns block indices, shared by
all heads ([k]) or one set per KV head ([Hkv, k]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..attention import attend, received_mass


@dataclass
class SelectionRequest:
    layer: int
    q_global: torch.Tensor  # [B, H, q, d], rotated at the fixed memory distance
    memory_keys: torch.Tensor  # [B, Hkv, n_blocks * block_size, d], unrotated
    reprs: torch.Tensor  # [n_blocks, B, H, (r,) d] as built by `representative`
    topk: int
    block_size: int
    scale: float
    phase: str  # "prefill", "final" (the prompt's last chunk) or "decode"
    last_block_of_chunk: bool


def _top(scores: torch.Tensor, topk: int) -> torch.Tensor:
    """Sorted indices of the topk largest scores along the last dim."""
    return scores.topk(topk, dim=-1).indices.sort(dim=-1).values.cpu()


class PaperSelector:
    """InfLLM's: the execution block's mean query against one representative per block (mean of
    the keys that received most attention), summed over heads, one choice shared by all heads."""

    per_head = False

    def __init__(self, config):
        self.config = config

    def representative(self, keys: torch.Tensor, block_scores: torch.Tensor) -> torch.Tensor:
        """keys [B, Hkv, bs, d], scores [bs, B, H] -> [B, H, d]."""
        return self._top_keys(keys, block_scores).mean(dim=2)

    def _top_keys(self, keys, block_scores):
        n_heads = block_scores.shape[2]
        expanded = keys.repeat_interleave(n_heads // keys.shape[1], dim=1)  # [B, H, bs, d]
        top = block_scores.permute(1, 2, 0).topk(self.config.repr_tokens, dim=-1).indices  # [B, H, r]
        return expanded.gather(2, top[..., None].expand(-1, -1, -1, keys.shape[-1]))  # [B, H, r, d]

    def select(self, request: SelectionRequest) -> torch.Tensor:
        mean_query = request.q_global.mean(dim=2)[0].float()  # [H, d]; batch item 0 decides
        scores = torch.einsum("hd,nhd->n", mean_query, request.reprs[:, 0].float())
        return _top(scores, request.topk)


class MaxReprSelector(PaperSelector):
    """Several representatives per block, each scored on its own; a block counts by its best one."""

    def representative(self, keys, block_scores):
        return self._top_keys(keys, block_scores)  # [B, H, r, d]

    def select(self, request):
        mean_query = request.q_global.mean(dim=2)[0].float()  # [H, d]
        per_repr = torch.einsum("hd,nhrd->nhr", mean_query, request.reprs[:, 0].float())
        return _top(per_repr.amax(dim=-1).sum(dim=-1), request.topk)


class QuestionSelector(PaperSelector):
    """Question-aware: the prompt's last queries (the question) score every memory token exactly.

    At the last execution block of the prompt, the last `question_tokens` queries attend over
    the whole memory; each block's score is the attention mass it receives. That choice is
    kept for the answer's decoding steps; earlier execution blocks use the paper's selection.
    """

    def __init__(self, config):
        super().__init__(config)
        self.chosen: dict[int, torch.Tensor] = {}

    def select(self, request):
        if request.phase == "final" and request.last_block_of_chunk:
            self.chosen[request.layer] = self._by_question(request)
        if request.phase in ("final", "decode") and request.layer in self.chosen:
            return self.chosen[request.layer]
        return super().select(request)

    def block_mass(self, request) -> torch.Tensor:
        """[H, n_blocks]: attention mass the question's queries give each block (batch item 0)."""
        q = request.q_global[:1, :, -self.config.question_tokens:]
        keys = request.memory_keys[:1].to(q.device)
        lse = attend(q, keys, keys, request.scale).lse
        mass = received_mass(q, keys, lse, request.scale)[0]  # [H, n_tokens]
        return mass.view(mass.shape[0], -1, request.block_size).sum(dim=-1)

    def _by_question(self, request):
        return _top(self.block_mass(request).sum(dim=0), request.topk)


class QuestionPerHeadSelector(QuestionSelector):
    """Question-aware, and each KV head reads its own blocks (GQA keeps its saving)."""

    per_head = True

    def _by_question(self, request):
        mass = self.block_mass(request)  # [H, n]
        n_kv = request.memory_keys.shape[1]
        per_kv = mass.view(n_kv, -1, mass.shape[-1]).sum(dim=1)  # [Hkv, n]
        return _top(per_kv, request.topk)

    def select(self, request):
        chosen = super().select(request)
        if chosen.dim() == 1:  # the paper's shared choice, repeated for each KV head
            chosen = chosen[None].expand(request.memory_keys.shape[1], -1)
        return chosen


SELECTORS: dict[str, type[PaperSelector]] = {
    "paper": PaperSelector,
    "max_repr": MaxReprSelector,
    "question": QuestionSelector,
    "question_per_head": QuestionPerHeadSelector,
}
