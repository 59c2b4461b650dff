"""Block selection: which memory blocks a block-memory method reads for a set of queries.

Selection decides whether a method reads past the window on real text (methods.md §10), so
it is a strategy of its own, chosen with the `selection` option and observable through the
engine's trace. Every strategy sees the same request and returns block indices, shared by
all heads ([k]) or one set per KV head ([Hkv, k]).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..attention import attend, received_mass
from ..clustering import kmeans
from ..kv.rows import split_runs


@dataclass
class SelectionRequest:
    layer: int
    q_global: torch.Tensor  # [B, H, q, d], rotated at the fixed memory distance
    memory_keys: torch.Tensor | None  # [B, Hkv, n_blocks * block_size, d], unrotated; or `memory`
    reprs: torch.Tensor  # [n_blocks, B, H, (r,) d] as built by `representative`
    topk: int
    block_size: int
    scale: float
    phase: str  # "prefill", "final" (the prompt's last chunk) or "decode"
    last_block_of_chunk: bool
    memory: object = None  # the memory segment itself (read in runs, see `key_runs`)

    def key_runs(self, step: int) -> Iterator[torch.Tensor]:
        """The memory keys [B, Hkv, m, d] in token order, `step` tokens at a time (a multiple of the
        block size), each run ending on a block unless it ends the memory. A stored context's mapped
        keys and the keys evicted since are read without copying them together; a quantized memory
        is dequantized one run at a time."""
        if self.memory is None:
            return split_runs(self.memory_keys, step)
        return self.memory.key_runs(step, self.block_size)

    def all_keys(self) -> torch.Tensor:
        """The memory keys as one tensor [B, Hkv, n, d] (a copy when they are in parts)."""
        return self.memory_keys if self.memory is None else self.memory.keys

    @property
    def n_tokens(self) -> int:
        return self.memory_keys.shape[2] if self.memory is None else len(self.memory)

    @property
    def n_kv_heads(self) -> int:  # without reading the keys (a quantized memory would dequantize them)
        return self.memory_keys.shape[1] if self.memory is None else self.memory.n_kv_heads


def _top(scores: torch.Tensor, topk: int) -> torch.Tensor:
    """Sorted indices of the topk largest scores along the last dim."""
    return scores.topk(topk, dim=-1).indices.sort(dim=-1).values.cpu()


def _top_nearest_last(scores: torch.Tensor, topk: int) -> torch.Tensor:
    """The topk blocks of `scores` [n], ordered so the best comes last (nearest the local window
    when memory is packed): runs of adjacent blocks stay in text order, runs sorted by their best."""
    chosen = _top(scores, topk).tolist()
    runs: list[list[int]] = []
    for block in chosen:
        if runs and runs[-1][-1] == block - 1:
            runs[-1].append(block)
        else:
            runs.append([block])
    runs.sort(key=lambda run: float(scores[run].max()))
    return torch.tensor([block for run in runs for block in run], dtype=torch.long)


class PaperSelector:
    """InfLLM's: the execution block's mean query against one representative per block (mean of
    the keys that received most attention), summed over heads, one choice shared by all heads."""

    per_head = False
    replay_last_token = False  # ask the engine to feed the prompt's last token as a decoding step

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
        return _top(representative_scores(request), request.topk)


def representative_scores(request: SelectionRequest) -> torch.Tensor:
    """[n_blocks]: the execution block's mean query against each block's representative
    (reprs [n, B, H, d]), summed over heads; batch item 0 decides."""
    mean_query = request.q_global.mean(dim=2)[0].float()  # [H, d]
    return torch.einsum("hd,nhd->n", mean_query, request.reprs[:, 0].float())


class MaxReprSelector(PaperSelector):
    """Several representatives per block, each scored on its own; a block counts by its best one."""

    def representative(self, keys, block_scores):
        return self._top_keys(keys, block_scores)  # [B, H, r, d]

    def select(self, request):
        return _top(best_representative_scores(request), request.topk)


def best_representative_scores(request: SelectionRequest) -> torch.Tensor:
    """[n_blocks]: the execution block's mean query against each block's best representative
    (reprs [n, B, H, r, d]), summed over heads."""
    mean_query = request.q_global.mean(dim=2)[0].float()  # [H, d]
    per_repr = torch.einsum("hd,nhrd->nhr", mean_query, request.reprs[:, 0].float())
    return per_repr.amax(dim=-1).sum(dim=-1)


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
        keys = request.all_keys()[:1].to(q.device)
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
        n_kv = request.n_kv_heads
        per_kv = mass.view(n_kv, -1, mass.shape[-1]).sum(dim=1)  # [Hkv, n]
        return _top(per_kv, request.topk)

    def select(self, request):
        chosen = super().select(request)
        if chosen.dim() == 1:  # the paper's shared choice, repeated for each KV head
            chosen = chosen[None].expand(request.n_kv_heads, -1)
        return chosen


def _block_logits(request: SelectionRequest, n_queries: int, key_chunk: int, scale: float = 1.0):
    """Yield the question's logits against the memory, a run of whole blocks at a time:
    [H, nq, blocks, block_size] for the last `n_queries` queries, times `scale`, float32.

    Every run is written into the same buffer (use a run before asking for the next), small
    enough to stay in the CPU cache for the reductions that follow: measured at 64K, runs of
    2048 keys in one reused buffer score a layer in 47 ms, fresh tensors of 8192 keys in 84 ms.
    """
    q = request.q_global[0, :, -n_queries:].float() * scale  # [H, nq, d]
    bs = request.block_size
    grouped = q.reshape(request.n_kv_heads, -1, q.shape[-1])  # [Hkv, G * nq, d]: GQA without copies
    step = max(key_chunk // bs, 1) * bs
    buffer = grouped.new_empty(grouped.shape[0] * grouped.shape[1] * step)
    for keys in request.key_runs(step):
        whole = keys.shape[2] // bs * bs  # a partial block can only end the memory
        if not whole:
            continue
        part = keys[0, :, :whole].to(q.device).float()  # [Hkv, m, d]
        out = buffer[:grouped.shape[0] * grouped.shape[1] * whole].view(*grouped.shape[:2], whole)
        logits = torch.bmm(grouped, part.transpose(1, 2), out=out)
        yield logits.view(q.shape[0], q.shape[1], -1, bs)  # [Hkv, G * nq, m] as [H, nq, m / bs, bs]


def block_match_z(request: SelectionRequest, n_queries: int, key_chunk: int = 2048) -> torch.Tensor:
    """[H, n_blocks]: each head's best logit over (query, key) pairs inside a block, as a z-score
    (minus the head's median block, over its spread). Scores a needle well until the memory holds
    a few hundred blocks; then chance maxima of other blocks catch up (see `block_mass_z`)."""
    best = [logits.amax(dim=(1, 3)) for logits in _block_logits(request, n_queries, key_chunk)]
    return standardise(torch.cat(best, dim=1))


def block_mass_z(request: SelectionRequest, n_queries: int, key_chunk: int = 2048) -> torch.Tensor:
    """[H, n_blocks]: how strongly each head singles out each block, question query by query.

    For one head and one query of the question, a block's score is the log of the attention mass
    the query would give the block's keys (the log-sum-exp of their scaled logits), made
    comparable as a z-score across the memory's blocks; the head's vote for a block is its best
    query's z. A retrieval head asked "...in San Francisco?" gives the needle's block a z far
    above the rest for the query tokens that match it, while a block that merely holds one
    large logit by chance does not stand out in mass.
    """
    mass = [_log_block_mass(logits) for logits in _block_logits(request, n_queries, key_chunk, request.scale)]
    return standardise(torch.cat(mass, dim=-1)).amax(dim=1)


def _log_block_mass(logits: torch.Tensor) -> torch.Tensor:
    """log sum exp(logits) over the last dim, in place (3-4x faster than torch.logsumexp)."""
    top = logits.amax(dim=-1, keepdim=True)
    return logits.sub_(top).exp_().sum(dim=-1).log_().add_(top[..., 0])


def standardise(best: torch.Tensor) -> torch.Tensor:
    """Block scores [..., n] as z-scores along the blocks: minus the median block, over the spread."""
    spread = best.std(dim=-1, keepdim=True).clamp_min(1e-4)
    return (best - best.median(dim=-1, keepdim=True).values) / spread


def consensus(z: torch.Tensor, heads: int = 3) -> torch.Tensor:
    """Block scores [n] from z-scores [..., n]: the sum of the `heads` strongest votes per block."""
    flat = z.reshape(-1, z.shape[-1])
    return flat.topk(min(heads, flat.shape[0]), dim=0).values.sum(dim=0)


class QuestionGlobalSelector(PaperSelector):
    """Question-aware across layers: retrieval heads, wherever they are, choose for every layer.

    At the prompt's last execution block every head of every layer scores each memory block for
    the question (`question_score`: `block_mass_z` by default, `block_match_z`); a layer reads
    the blocks its own heads single out. Those votes are pooled over all layers, and from the
    answer's first token on (the engine replays the prompt's last token as a decoding step, see
    `replay_last_token`) every layer reads the blocks the strongest heads of the whole model
    agree on. Earlier execution blocks use the paper's selection.
    """

    replay_last_token = True

    def __init__(self, config):
        super().__init__(config)
        self.votes: dict[int, torch.Tensor] = {}
        self.shared: torch.Tensor | None = None

    def question_z(self, request) -> torch.Tensor:
        """[H, n_blocks] z-scores of the blocks for the question (the prompt's last queries)."""
        score = block_mass_z if self.config.question_score == "mass" else block_match_z
        return score(request, self.config.question_tokens)

    def select(self, request):
        if request.phase == "final" and request.last_block_of_chunk:
            z = self.question_z(request)
            self.votes[request.layer] = z
            self.shared = None
            return _top_nearest_last(consensus(z), request.topk)
        if request.phase == "decode" and self.votes:
            if self.shared is None:
                self.shared = _top_nearest_last(consensus(torch.stack(list(self.votes.values()))), request.topk)
            # Blocks evicted after the question scored the memory were in its window or remainder
            # (always attended then): keep reading them, or a needle just past the window is lost.
            scored = next(iter(self.votes.values())).shape[-1]
            newer = torch.arange(scored, request.n_tokens // request.block_size)
            return torch.cat((self.shared, newer)) if len(newer) else self.shared
        return self.before_question(request)

    def before_question(self, request) -> torch.Tensor:
        """The choice for execution blocks before the question: the paper's."""
        return super().select(request)


class ClusterSelector(QuestionGlobalSelector):
    """Centroids as representatives: each block's keys are clustered (k-means, `repr_tokens`
    clusters per KV head, as Squeezed Attention clusters a context); a block scores by its best
    centroid. Question-aware across layers like `question_global`, at r/block_size of its cost."""

    def representative(self, keys, block_scores):
        batch, n_kv, size, dim = keys.shape
        centroids, _ = kmeans(keys.reshape(batch * n_kv, size, dim), self.config.repr_tokens,
                              iterations=5, spherical=False)
        n_heads = block_scores.shape[2]
        centroids = centroids.view(batch, n_kv, -1, dim).to(keys.dtype)
        return centroids.repeat_interleave(n_heads // n_kv, dim=1)  # [B, H, r, d]

    def question_z(self, request):
        q = request.q_global[0, :, -self.config.question_tokens:].float()  # [H, nq, d]
        centroids = request.reprs[:, 0].float()  # [n, H, r, d]
        return standardise(torch.einsum("hqd,nhrd->hnqr", q, centroids).amax(dim=(2, 3)))  # [H, n]

    def before_question(self, request):
        return _top(best_representative_scores(request), request.topk)


SELECTORS: dict[str, type[PaperSelector]] = {
    "paper": PaperSelector,
    "max_repr": MaxReprSelector,
    "question": QuestionSelector,
    "question_per_head": QuestionPerHeadSelector,
    "question_global": QuestionGlobalSelector,
    "cluster": ClusterSelector,
}
