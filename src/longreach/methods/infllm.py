"""`infllm`: InfLLM block memory (Xiao et al., 2024), training-free, CPU-first.

Per layer, tokens flow through three parts of the store:
  init    the first `n_init` tokens (attention sinks), kept always;
  recent  the local window (the last `n_local` tokens) plus a remainder shorter than a block;
  memory  evicted tokens grouped in blocks of `block_size`, on the offload device, each
          with a representative vector built from the keys that received most attention.
Queries are processed in execution blocks. Each block attends, in one exact softmax, to
the local window at renumbered (relative) positions, and to init tokens, the remainder
and the `topk_blocks` memory blocks it retrieves, all placed at the fixed distance
`n_local` (or packed in order before the window: `memory_positions`). RoPE positions
therefore never exceed n_local + exec_block (+ the read memory, packed).

Which blocks are read is a strategy of its own (`selection`, see selection.py and
docs/selection.md). The paper's is `selection=paper`; the default, `question_global`, lets
the retrieval heads of all layers choose with the question once the prompt ends. The
default budget (a local window of a sixteenth of the trained window, 8 blocks of 128) was
measured on SmolLM2, whose answers on real text degrade as more of the window is filled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..attention import attend, merge, received_mass, summed_logits
from ..kv.quant import dequantize, quantize
from .base import MethodConfig, Policy, check, option
from .selection import SELECTORS, PaperSelector, SelectionRequest


@dataclass(slots=True)
class InfLLMConfig(MethodConfig):
    name = "infllm"
    no_dynamic_ntk = "keeps every distance inside the window"
    summary = "InfLLM: sinks + local window + retrieved memory blocks at a fixed distance"

    n_init: int = option(128, "initial (sink) tokens always attended")
    n_local: int | None = option(None, "local window; default: a sixteenth of the model's trained window")
    block_size: int = option(128, "tokens per memory block")
    topk_blocks: int = option(8, "memory blocks retrieved per execution block")
    repr_tokens: int = option(4, "representative keys per block")
    repr_score: str = option("attention", "how keys earn representative rank: attention (softmax mass "
                                          "received, InfLLM's code) or dot (summed q.k, the paper's formula; cheaper)")
    exec_block: int | None = option(None, "queries sharing one retrieval; default: 512, at most n_local")
    selection: str = option("question_global", f"block selection strategy: {', '.join(SELECTORS)} "
                                                "(paper: InfLLM's own)")
    question_tokens: int = option(64, "question-aware selection: how many of the prompt's last queries score")
    question_score: str = option("mass", "question_global: a head's score for a block: mass (log attention mass "
                                         "per question query, z-scored, best query) or match (best logit, z-scored)")
    memory_positions: str = option("fixed", "where read memory sits: fixed (the paper: every token at distance "
                                            "n_local) or packed (in original order, just before the local window)")

    def __post_init__(self):
        check(self.n_init >= 0, "n_init must be >= 0")
        check(self.n_local is None or self.n_local >= 1, "n_local must be >= 1")
        check(self.block_size >= 1, "block_size must be >= 1")
        check(self.topk_blocks >= 0, "topk_blocks must be >= 0")
        check(1 <= self.repr_tokens <= self.block_size, "repr_tokens must be in 1..block_size")
        check(self.exec_block is None or self.exec_block >= 1, "exec_block must be >= 1")
        check(self.repr_score in ("attention", "dot"), "repr_score must be attention or dot")
        check(self.selection in SELECTORS, f"selection must be one of {', '.join(SELECTORS)}")
        check(self.question_tokens >= 1, "question_tokens must be >= 1")
        check(self.question_score in ("mass", "match"), "question_score must be mass or match")
        check(self.memory_positions in ("fixed", "packed"), "memory_positions must be fixed or packed")

    def local_window(self, trained_window: int) -> int:
        return self.n_local if self.n_local is not None else max(trained_window // 16, 1)

    def execution_block(self, n_local: int) -> int:
        return self.exec_block if self.exec_block is not None else min(512, n_local)

    def build(self, ctx) -> InfLLMPolicy:
        n_local = self.local_window(ctx.trained_window)
        exec_block = self.execution_block(n_local)
        check(exec_block <= n_local, f"exec_block ({exec_block}) must be <= n_local ({n_local})")
        if ctx.trained_window:
            check(n_local + exec_block <= ctx.trained_window,
                  f"n_local + exec_block ({n_local + exec_block}) exceeds the model's trained "
                  f"window ({ctx.trained_window})")
        return InfLLMPolicy(ctx, self, n_local, exec_block)


@dataclass(slots=True)
class _Plan:
    band_from: int
    full_from: int
    causal_from: int
    band_mask: torch.Tensor
    local_mask: torch.Tensor
    remainder_end: int
    remainder_mask: torch.Tensor | None


class InfLLMPolicy(Policy):
    def __init__(self, ctx, config: InfLLMConfig, n_local: int, exec_block: int):
        super().__init__(ctx)
        self.config = config
        self.n_local, self.exec_block = n_local, exec_block
        self.selector: PaperSelector = SELECTORS[config.selection](config)
        self._masks: dict[int, _Plan] = {}
        self._gathered: dict[int, tuple] = {}

    @property
    def replay_last_token(self) -> bool:
        return self.selector.replay_last_token

    def reset_caches(self):
        self._masks, self._gathered = {}, {}
        self.selector = SELECTORS[self.config.selection](self.config)

    # --- one layer, one chunk ---------------------------------------------------------
    def attend(self, layer, q, k, v, positions):
        step = self.exec_block
        if layer == 0:
            self._masks.clear()
        starts = range(0, q.shape[2], step)
        outs = [self._exec_block(layer, index, q[:, :, a:a + step], k[:, :, a:a + step],
                                 v[:, :, a:a + step], positions[a:a + step], last=index == len(starts) - 1)
                for index, a in enumerate(starts)]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)

    def _exec_block(self, layer, index, q, k, v, positions, last):
        kv, scale = self.store[layer], self.ctx.scale
        recent, init, memory = kv.segment("recent"), kv.segment("init"), kv.segment("memory", offload=True)
        scores = kv.buffer("score", q.new_zeros(1, q.shape[0], q.shape[1]))
        recent.append(k, v, positions)
        scores.append(q.new_zeros(k.shape[2], q.shape[0], q.shape[1]))
        if index not in self._masks:
            self._masks[index] = self._plan(positions, recent.positions)
        plan = self._masks[index]

        # Local stage: true relative positions (rotated keys cached at true positions).
        q_local = self.rope.rotate(q, positions)
        keys = recent.rotated_keys(self.rope)
        values = recent.values
        a, b, c = plan.band_from, plan.full_from, plan.causal_from
        parts = [attend(q_local, keys[:, :, c:], values[:, :, c:], scale, causal=True)]
        if c > b:
            parts.append(attend(q_local, keys[:, :, b:c], values[:, :, b:c], scale))
        if b > a:
            parts.append(attend(q_local, keys[:, :, a:b], values[:, :, a:b], scale, mask=plan.band_mask))

        # Memory keys are unrotated; selection scores them against the query rotated at n_local.
        q_global = self.rope.rotate_one(q, self.n_local)
        far_keys, far_values = self._retrieve(layer, kv, q_global, positions, last)
        if len(init):
            far_keys, far_values = [init.keys, *far_keys], [init.values, *far_values]
        remainder = recent.slice(0, plan.remainder_end)[:2] if plan.remainder_end else None
        if far_keys or remainder:
            far = list(zip(far_keys, far_values, strict=True))
            parts.extend(self._attend_far(q, q_global, far, remainder, positions, plan))
        out, lse = merge(parts)

        if self.config.repr_score == "attention":
            earned = received_mass(q_local, keys[:, :, a:], lse, scale, plan.local_mask)  # [B, H, m]
        else:
            earned = summed_logits(q_local, keys[:, :, a:], scale, plan.local_mask)
        scores.data[a:] += earned.permute(2, 0, 1)
        self._evict(kv, recent, init, memory, scores)
        return out

    def _attend_far(self, q, q_global, far: list, remainder, positions, plan):
        """Attention to the far parts, (keys, values) of init and the retrieved blocks, and the
        remainder (the oldest recent keys, which some queries see beyond n_local: masked).

        fixed: every key at distance n_local (the query rotated once, keys unrotated); each part is
        attended where it lies and the parts merge through their log-sum-exp (no copy of the
        memory into one tensor at every decode step).
        packed: keys keep their order, laid out just before the local window: key j at j and the
        block's last query at n_local + len(keys) - 1 (the remainder's last key, the newest far
        token, sits at distance n_local from it). Reading every block, every token keeps its true
        distance: packed memory is dense attention with the unread gaps closed.
        """
        scale = self.ctx.scale
        if self.config.memory_positions == "packed":
            parts = far + ([remainder] if remainder else [])
            keys, values = torch.cat([k for k, _ in parts], 2), torch.cat([v for _, v in parts], 2)
            n = keys.shape[2]
            keys = self.rope.rotate(keys, torch.arange(n))
            q_global = self.rope.rotate(q, positions - positions[-1] + self.n_local + n - 1)
            split = n - plan.remainder_end
            far = [(keys[:, :, :split], values[:, :, :split])] if split else []
            remainder = (keys[:, :, split:], values[:, :, split:]) if plan.remainder_end else None
        out = [attend(q_global, keys, values, scale) for keys, values in far if keys.shape[2]]
        if remainder:
            out.append(attend(q_global, *remainder, scale, mask=plan.remainder_mask))
        return out

    def _plan(self, positions, recent_positions) -> _Plan:
        """Split the recent tokens by what the block's queries see of them (indices into `recent`).

        [band_from, full_from): seen locally by some queries (distance < n_local), masked;
        [full_from, causal_from): seen locally by every query; [causal_from, end): the block itself;
        [0, remainder_end): seen by some queries beyond n_local, as memory.
        """
        first = int(recent_positions[0])
        p0, p1 = int(positions[0]), int(positions[-1])
        causal_from = p0 - first
        full_from = min(max(p1 - self.n_local + 1 - first, 0), causal_from)
        band_from = min(max(p0 - self.n_local + 1 - first, 0), full_from)
        pq = positions.to(recent_positions.device)[:, None]
        local_distance = pq - recent_positions[None, band_from:]
        local_mask = (local_distance >= 0) & (local_distance < self.n_local)
        band_mask = local_mask[:, :full_from - band_from]
        remainder_end = max(p1 - self.n_local + 1 - first, 0)
        remainder_mask = None
        if remainder_end:
            remainder_mask = (pq - recent_positions[None, :remainder_end]) >= self.n_local
        return _Plan(band_from, full_from, causal_from, band_mask, local_mask, remainder_end, remainder_mask)

    # --- memory -----------------------------------------------------------------------
    def _retrieve(self, layer, kv, q_global, positions, last):
        memory = kv.segments.get("memory")
        bs = self.config.block_size
        n_blocks = len(memory) // bs if memory is not None else 0
        if n_blocks == 0 or self.config.topk_blocks == 0:
            return [], []
        started = time.perf_counter()
        if n_blocks <= self.config.topk_blocks:
            blocks = torch.arange(n_blocks)
        else:
            request = SelectionRequest(layer, q_global, None, _representatives(kv), self.config.topk_blocks,
                                       bs, self.ctx.scale, self.phase, last, memory=memory)
            blocks = self.selector.select(request)
        if self.ctx.trace is not None:
            self.ctx.trace.selection_seconds += time.perf_counter() - started
            first = int(memory.positions[0])
            self.ctx.trace.record(layer, (int(positions[0]), int(positions[-1])),
                                  (blocks * bs + first).tolist(), bs, (first, first + n_blocks * bs))
        key = (n_blocks, tuple(blocks.flatten().tolist()))
        cached = self._gathered.get(layer)
        if cached is not None and cached[0] == key:
            return [cached[1]], [cached[2]]
        index = (blocks[..., None] * bs + torch.arange(bs)).flatten(-2)  # [m] or [Hkv, m]
        if index.dim() == 1:
            keys, values, _ = memory.gather(index, device=self.ctx.device)
        else:
            keys, values = memory.gather_per_head(index, device=self.ctx.device)
        self._gathered[layer] = (key, keys, values)
        return [keys], [values]

    def _evict(self, kv, recent, init, memory, scores):
        cfg = self.config
        if len(init) < cfg.n_init and len(recent) > self.n_local:
            move = min(cfg.n_init - len(init), len(recent) - self.n_local)
            init.append(*recent.slice(0, move))
            recent.drop_front(move)
            scores.drop_front(move)
        while len(recent) - cfg.block_size >= self.n_local:
            keys, values, positions = recent.slice(0, cfg.block_size)
            block_scores = scores.data[:cfg.block_size]  # [bs, B, H]
            representative = self.selector.representative(keys, block_scores)  # [B, H, (r,) d]
            memory.append(keys.to(memory.device), values.to(memory.device), positions.to(memory.device))
            _keep_representative(kv, representative[None])
            recent.drop_front(cfg.block_size)
            scores.drop_front(cfg.block_size)


# A quantized store keeps the block representatives (keys too) as int8 codes with a float16 scale
# and zero point per vector. In float32, one vector per query head per 128-token block would add
# 1.2% to SmolLM2's float32 KV and 4.3% to its int8 KV.
REPR_PARTS = ("repr_codes", "repr_scale", "repr_zero")


def _keep_representative(kv, rows: torch.Tensor) -> None:
    if not kv.quantized:
        kv.buffer("repr", rows).append(rows)
        return
    for name, part in zip(REPR_PARTS, quantize(rows, 8, dim=-1), strict=True):
        kv.buffer(name, part).append(part)


def _representatives(kv) -> torch.Tensor:
    """Every memory block's representatives [n, B, H, (r,) d] (a context stored before they were
    quantized keeps float ones)."""
    if "repr" in kv.buffers:
        return kv.buffers["repr"].data
    return dequantize(*(kv.buffers[name].data for name in REPR_PARTS))
