"""`squeezed`: Squeezed Attention (Hooper et al., 2025) — a clustered fixed context.

The fixed context is what is prefilled before `end_prefill` (a document asked many
questions; with `LongLM.generate(context=...)` every question forks it). At `end_prefill`
its keys are clustered with k-means per layer and KV head (`clustering.py`); centroids and
each key's cluster go into the store (buffers "centroids", "labels", and "coarse", "parent"
for the two-level index), so forks and saved memories keep them. Each later query scores
the centroids, keeps the best clusters up to a key budget (or above a calibrated
threshold) and attends exactly, in one softmax, to the selected keys plus every token
that is not clustered: the question, generated tokens and the context's last tokens.

Positions:
  true    the context is prefilled with exact causal attention and every key keeps its true
          position (the paper). Clustering runs on keys rotated at their positions and queries
          score them rotated at theirs. The whole input must fit the trained window (or use
          rope_scaling). The last `obs_window` context tokens are always attended.
  infllm  the context is prefilled by InfLLM, whose positions then hold for the questions:
          the InfLLM memory is clustered instead of searched by blocks; its keys stay unrotated
          and every selected key, like InfLLM's sinks ("init"), sits at the fixed distance
          n_local (the query is rotated once, at n_local, to score and attend them); the
          local window ("recent") and the new tokens keep true relative positions while
          closer than n_local, and move to distance n_local after that. RoPE positions then
          never exceed about n_local + the question, at any context length.

Layout: once clustered, the memory holds each KV head's keys cluster by cluster (positions per
head in the buffer "head_positions"), so the clusters a lookup selects are runs of rows; on the
CPU a decode step attends them where they lie, with the sinks and the unclustered tokens, in one
compiled call (`kernels.decode.attend_segments`). With true positions that call reads a copy of
the memory's keys rotated once at their positions (buffer "rotated_memory", counted in the
store's bytes; option rotated_copy=false does without it). Quantized memory keeps token order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .. import kernels
from ..attention import Partial, attend, merge
from ..clustering import ClusterIndex, calibrate_globally
from ..errors import LongreachError
from ..kernels.decode import attend_segments
from ..kv import GrowingBuffer
from ..kv.rows import rows_of
from ..kv.store import KVSegment
from .base import MethodConfig, Policy, check, option
from .infllm import InfLLMConfig

INDEX_BUFFERS = ("centroids", "labels", "coarse", "parent", "threshold")
# The clustered memory stores each KV head's keys cluster by cluster; this buffer [Hkv, n] holds the
# true position of each head's rows (the segment's own positions stay in token order).
HEAD_POSITIONS = "head_positions"
# positions=true, compiled decode: the clustered memory's keys rotated at their true positions,
# [1, Hkv, n, d] in the memory's layout (one more copy of the keys), made when the context is
# clustered (from the rotation the clustering needs) and saved with it
ROTATED_MEMORY = "rotated_memory"


@dataclass(slots=True)
class SqueezedConfig(MethodConfig):
    name = "squeezed"
    no_dynamic_ntk = "clusters keys at fixed rotations"
    fixed_context = True
    summary = "Squeezed Attention: clustered fixed context, each query attends its best clusters"

    positions: str = option("infllm", "infllm (InfLLM prefill and positions: any length) or true "
                                      "(dense prefill, true positions: the input must fit the window)")
    budget: float = option(0.125, "context keys each query attends per KV head: a fraction (<= 1) or a count")
    selection: str = option("budget", "budget (best clusters up to the budget, exact count) or threshold "
                                      "(clusters above a threshold keeping the budget on average)")
    levels: int = option(1, "1: score every centroid; 2: hierarchical lookup, coarse centroids first")
    cluster_size: int = option(16, "average keys per cluster")
    coarse_size: int = option(16, "clusters per coarse cluster (levels=2 and the tree k-means)")
    coarse_slack: float = option(4.0, "levels=2: the coarse clusters searched cover this many budgets")
    kmeans: str = option("tree", "tree (coarse k-means, then fine within each: fast) or flat (the paper's)")
    kmeans_iters: int = option(10, "Lloyd iterations per k-means")
    threshold_scope: str = option("global", "selection=threshold: one threshold for every layer and KV head "
                                            "(the paper's global quantile: the budget holds on average over "
                                            "all of them) or one per layer and head (each keeps the budget)")
    obs_window: int = option(64, "context tokens always attended (positions=true) and queries that "
                                 "calibrate the threshold")
    rotated_copy: bool = option(True, "positions=true on the CPU: keep the context's keys rotated at their "
                                      "positions (one more copy of them, counted in the KV bytes and saved "
                                      "with the context) so that a decode step reads its clusters in one "
                                      "compiled call; false: rotate the selected keys at every step (about "
                                      "2.4x slower decode at 8K)", runtime=True)
    n_init: int = option(128, "positions=infllm: InfLLM sink tokens")
    n_local: int | None = option(None, "positions=infllm: InfLLM local window (default: trained window / 16)")
    block_size: int = option(128, "positions=infllm: InfLLM block size during prefill")
    topk_blocks: int = option(16, "positions=infllm: InfLLM blocks retrieved during prefill")
    exec_block: int | None = option(None, "positions=infllm: InfLLM queries sharing one retrieval "
                                          "(default: 512, at most n_local)")

    def __post_init__(self):
        check(self.positions in ("infllm", "true"), "positions must be infllm or true")
        check(self.budget > 0, "budget must be > 0")
        check(self.selection in ("budget", "threshold"), "selection must be budget or threshold")
        check(self.threshold_scope in ("global", "head"), "threshold_scope must be global or head")
        check(self.levels in (1, 2), "levels must be 1 or 2")
        check(self.cluster_size >= 1 and self.coarse_size >= 1, "cluster_size and coarse_size must be >= 1")
        check(self.coarse_slack >= 1, "coarse_slack must be >= 1")
        check(self.kmeans in ("tree", "flat"), "kmeans must be tree or flat")
        check(self.kmeans_iters >= 1 and self.obs_window >= 1, "kmeans_iters and obs_window must be >= 1")

    def infllm(self) -> InfLLMConfig:
        return InfLLMConfig(n_init=self.n_init, n_local=self.n_local, block_size=self.block_size,
                            topk_blocks=self.topk_blocks, exec_block=self.exec_block, selection="paper")

    def build(self, ctx) -> SqueezedPolicy:
        check(ctx.store.batch == 1, "squeezed clusters one sequence (batch 1)")
        n_local = self.infllm().local_window(ctx.trained_window) if self.positions == "infllm" else None
        return SqueezedPolicy(ctx, self, n_local)


def _beyond(recent: KVSegment, position: int, distance: int, limit: int) -> int:
    """How many of the first `limit` tokens of `recent` (consecutive positions) lie at `distance`
    or more before `position`."""
    return min(max(position - distance + 1 - int(recent.positions[0]), 0), limit)


class SqueezedPolicy(Policy):
    # Set by a benchmark: each decode step also times exact attention over the whole clustered
    # context for the same query, the cost the lookup replaces (see `timing`).
    time_whole_context = False
    # Lay each KV head's clustered memory out cluster by cluster (tests turn it off to compare).
    cluster_layout = True

    def __init__(self, ctx, config: SqueezedConfig, n_local: int | None):
        super().__init__(ctx)
        self.config, self.n_local = config, n_local
        self.groups = ctx.n_heads // ctx.n_kv_heads
        self.reset_caches()

    def reset_caches(self):
        self._indexes: dict[int, ClusterIndex] = {}
        self._observed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._prefill = self.config.infllm().build(self.ctx) if self.n_local is not None else None
        self._whole: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.reset_counters()

    def reset_counters(self):
        # Decode cost, summed over layers and KV heads: context keys selected, context keys stored,
        # centroids scored, other keys attended ("steps" counts layer calls).
        self.touched = {"steps": 0, "selected": 0, "context": 0, "centroids": 0, "other": 0}
        # Decode time, summed over layer calls: the unclustered tokens ("other"), the lookup with its
        # exact attention over the selected keys ("lookup") and, with `time_whole_context`, exact
        # attention over every context key for the same query ("whole", not used for the output).
        # The compiled decode step (`_decode_in_place`) attends the unclustered tokens in the same
        # call as the selected keys: "other" is then the query's rotations and the step's
        # bookkeeping (the newest key's rotation among them), and "lookup" and "whole" each
        # include the unclustered tokens.
        self.timing = {"other": 0.0, "lookup": 0.0, "whole": 0.0}

    def decode_attention_us(self) -> tuple[float, float] | None:
        """Microseconds per decode layer call, both with the unclustered tokens: the lookup with its
        attention over the selected keys, and attention over the whole context (0 unless
        `time_whole_context`); None before any decode step."""
        steps, timing = self.touched["steps"], self.timing
        if not steps:
            return None
        return 1e6 * (timing["other"] + timing["lookup"]) / steps, 1e6 * (timing["other"] + timing["whole"]) / steps

    def clustered(self) -> bool:
        return "centroids" in self.store[0].buffers

    def attend(self, layer, q, k, v, positions):
        window = self.ctx.trained_window
        if layer == 0 and self.n_local is None and window and int(positions[-1]) >= window:
            raise LongreachError(f"squeezed with positions=true reached position {int(positions[-1])}, past the "
                                 f"trained window ({window}): use positions=infllm, or RoPE scaling")
        if not self.clustered():
            seen_q, seen_positions = self._observed.get(layer, (q[:, :, :0], positions[:0]))
            window = self.config.obs_window
            self._observed[layer] = (torch.cat((seen_q, q), 2)[:, :, -window:],
                                     torch.cat((seen_positions, positions))[-window:])
            if self._prefill is not None:
                self._prefill.phase = getattr(self, "phase", "prefill")
                return self._prefill.attend(layer, q, k, v, positions)
        kv, scale = self.store[layer], self.ctx.scale
        recent = kv.segment("recent")
        n_past = len(recent)
        recent.append(k, v, positions)
        started = self._clock()
        q_true = self.rope.rotate(q, positions)
        q_far = self.rope.rotate_one(q, self.n_local) if self.n_local is not None else None
        init, memory = kv.segments.get("init"), kv.segments.get("memory")
        if q.shape[2] == 1:
            out = self._decode_in_place(layer, q_true, q_far, recent, init, memory, int(positions[-1]), started)
            if out is not None:
                return out
        parts = self._recent(q_true, q_far, recent, positions, n_past)
        if init is not None and len(init):
            parts.append(attend(q_far, init.keys, init.values, scale))
        looked_up = self._clock()
        lookup_seconds = 0.0
        if memory is not None and len(memory) and self.clustered():
            q_memory = q_true if q_far is None else q_far
            parts.append(self._selected(layer, memory, q_memory))
            lookup_seconds = self._clock() - looked_up
            if q.shape[2] == 1 and self.time_whole_context:
                self._time_whole(layer, memory, q_memory)
        if q.shape[2] == 1:  # every KV head reads these (the other counters sum over KV heads too)
            self.timing["other"] += looked_up - started
            self.timing["lookup"] += lookup_seconds
            self._count_unclustered(recent, init)
        return merge(parts)[0]

    def _decode_in_place(self, layer, q_true, q_far, recent, init, memory, position, started) -> torch.Tensor | None:
        """A decode step over a memory laid out cluster by cluster, on the CPU in float32: the
        lookup, then one compiled call over the selected clusters (read where they lie), the sinks
        and the unclustered tokens, with no gather and no merge. None when this does not apply
        (the general path then runs)."""
        if (memory is None or not len(memory) or not self.clustered()
                or (self.n_local is None and not self._keeps_rotated_copy(memory))
                or HEAD_POSITIONS not in self.store[layer].buffers
                or not kernels.enabled(q_true, memory.keys, recent.keys)):
            return None
        index = self._index(layer)
        if index.threshold is not None:
            return None
        rotated = recent.rotated_keys(self.rope)
        if self.n_local is None:  # true positions everywhere: one query, keys rotated where they are
            queries, q_lookup, memory_keys = (q_true,), q_true, self._rotated_memory(layer, memory)
            others = [(0, rotated, recent.values, None)]
        else:
            # unclustered tokens at distance n_local or more sit at n_local (unrotated keys, q_far);
            # the nearer ones keep their true positions; positions in "recent" are consecutive
            far_end = _beyond(recent, position, self.n_local, len(recent))
            queries, q_lookup, memory_keys = (q_true, q_far), q_far, memory.keys
            others = [(1, recent.keys[:, :, :far_end], recent.values[:, :, :far_end], None),
                      (0, rotated[:, :, far_end:], recent.values[:, :, far_end:], None)]
            if init is not None and len(init):
                others.append((1, init.keys, init.values, None))
        at = len(queries) - 1  # the query the memory's keys are read with
        looked_up = self._clock()
        rows = self._rows_one(memory, q_lookup, index, self._budget(memory))
        memory.will_read(rows, keys=self.n_local is not None)  # true positions read the rotated copy
        got = attend_segments(queries, [(at, memory_keys, memory.values, rows), *others], self.ctx.scale)
        assert got is not None, "store segments hold each head's rows contiguously, as the kernel reads them"
        done = self._clock()
        self.timing["other"] += looked_up - started
        self.timing["lookup"] += done - looked_up
        self._count_unclustered(recent, init)
        if self.time_whole_context:  # the same call over every context key
            attend_segments(queries, [(at, memory_keys, memory.values, None), *others], self.ctx.scale)
            self.timing["whole"] += self._clock() - done
        return got[0]

    def _keeps_rotated_copy(self, memory) -> bool:
        """positions=true: whether the memory's keys are kept rotated (for the compiled decode step)."""
        return self.config.rotated_copy and self.ctx.device.type == "cpu" and kernels.enabled(memory.keys)

    def _rotated_memory(self, layer, memory) -> torch.Tensor:
        """The memory's keys rotated at their true positions, in its layout ([1, Hkv, n, d]), kept
        in the store: made when the context is clustered, or here for a context saved without it
        (the context is fixed once clustered, and a saved one is only reloaded with the same
        RoPE: its fingerprint holds the method's options)."""
        buffers = self.store[layer].buffers
        if ROTATED_MEMORY in buffers:
            assert buffers[ROTATED_MEMORY].data.shape == memory.keys.shape, "a rotated copy of this memory"
        else:
            keys = self._keys_at_true_positions(layer, memory, memory.keys.device)
            buffers[ROTATED_MEMORY] = GrowingBuffer.from_tensor(keys.contiguous())
        return buffers[ROTATED_MEMORY].data

    def _keys_at_true_positions(self, layer, memory, device) -> torch.Tensor:
        """Every memory key rotated at its true position, in the memory's layout [1, Hkv, n, d], on `device`."""
        keys = memory.keys.to(device)
        every_row = torch.arange(len(memory), device=device).expand(keys.shape[1], -1)
        return self.rope.rotate(keys, self._positions_of(layer, memory, every_row))

    def _count_unclustered(self, recent, init) -> None:
        """Count a decode step's unclustered keys: every KV head reads them (the other counters sum
        over KV heads too)."""
        self.touched["other"] += (len(recent) + (len(init) if init is not None else 0)) * self.ctx.n_kv_heads

    def _time_whole(self, layer, memory, q) -> None:
        """Time exact attention of `q` over every context key (keys read once, outside the timer)."""
        if layer not in self._whole:
            keys = memory.keys.to(self.ctx.device) if self.n_local is not None else \
                self._keys_at_true_positions(layer, memory, self.ctx.device)
            self._whole[layer] = keys, memory.values.to(self.ctx.device)
        started = self._clock()
        attend(q, *self._whole[layer], self.ctx.scale)
        self.timing["whole"] += self._clock() - started

    def _clock(self) -> float:
        if self.time_whole_context and self.ctx.device.type == "cuda":
            torch.cuda.synchronize()  # kernels run asynchronously: wait for them before reading the time
        return time.perf_counter()

    def _recent(self, q_true, q_far, recent, positions, n_past) -> list[Partial]:
        """Unclustered tokens: true relative positions within n_local, distance n_local beyond."""
        scale, keys, values = self.ctx.scale, recent.rotated_keys(self.rope), recent.values
        window = self.n_local or (1 << 62)
        pq = positions.to(recent.positions.device)[:, None]
        if q_true.shape[2] > window:  # a chunk longer than n_local: plain masks over everything
            distance = pq - recent.positions[None, :]
            return [attend(q_true, keys, values, scale, mask=(distance >= 0) & (distance < window)),
                    attend(q_far, recent.keys, values, scale, mask=distance >= window)]
        parts = [attend(q_true, keys[:, :, n_past:], values[:, :, n_past:], scale, causal=True)]
        near_from = _beyond(recent, int(positions[0]), window, n_past)
        if near_from < n_past:
            distance = pq - recent.positions[None, near_from:n_past]
            mask = distance < window
            parts.append(attend(q_true, keys[:, :, near_from:n_past], values[:, :, near_from:n_past], scale,
                                mask=None if bool(mask.all()) else mask))
        far_end = _beyond(recent, int(positions[-1]), window, n_past)
        if far_end:
            mask = (pq - recent.positions[None, :far_end]) >= window
            far_keys, far_values, _ = recent.slice(0, far_end)
            parts.append(attend(q_far, far_keys, far_values, scale, mask=None if bool(mask.all()) else mask))
        return parts

    def _selected(self, layer, memory, q) -> Partial:
        """Exact attention over the context keys each KV head's lookup selects."""
        cfg, g, index = self.config, self.groups, self._index(layer)
        budget = self._budget(memory)
        if q.shape[2] == 1 and index.threshold is None:
            return self._selected_one(layer, memory, q, index, budget)
        picks = [index.select(q[0, h * g:(h + 1) * g], self.ctx.scale, h, budget, cfg.coarse_slack)
                 for h in range(self.ctx.n_kv_heads)]
        # each head reads its own rows (padded to one width): each head's memory has its own layout
        width = max(1, *(rows.numel() for rows, _, _ in picks))
        padded = torch.stack([torch.cat((rows, rows.new_zeros(width - rows.numel()))) for rows, _, _ in picks])
        keys, values = memory.gather_per_head(padded, device=self.ctx.device)
        if self.n_local is None:  # true positions: rotate the selected keys where they are
            keys = self.rope.rotate(keys, self._positions_of(layer, memory, padded))
        outs = []
        for h, (rows, mask, _) in enumerate(picks):
            n = rows.numel()
            outs.append(attend(q[:, h * g:(h + 1) * g], keys[:, h:h + 1, :n], values[:, h:h + 1, :n],
                               self.ctx.scale, mask=None if bool(mask.all()) else mask))
        if q.shape[2] == 1:
            self.touched["steps"] += 1
            self.touched["selected"] += sum(rows.numel() for rows, _, _ in picks)
            self.touched["context"] += len(memory) * len(picks)
            self.touched["centroids"] += sum(scored for _, _, scored in picks)
        return Partial(torch.cat([p.out for p in outs], 1), torch.cat([p.lse for p in outs], 1))

    def _selected_one(self, layer, memory, q, index: ClusterIndex, budget: int) -> Partial:
        """A decode step's lookup (one query, key budget, one level or two) off the compiled path
        (`_decode_in_place`): every KV head's rows at once, gathered, each head reading only its
        own keys, in one attention call."""
        rows = self._rows_one(memory, q, index, budget)
        keys, values = memory.gather_per_head(rows, device=self.ctx.device)
        if self.n_local is None:  # true positions: rotate the selected keys where they are
            keys = self.rope.rotate(keys, self._positions_of(layer, memory, rows))
        return attend(q, keys, values, self.ctx.scale)

    def _budget(self, memory) -> int:
        """Context keys each KV head attends: the budget as a count (at least one)."""
        budget = self.config.budget
        return max(round(budget * len(memory)) if budget <= 1 else int(budget), 1)

    def _rows_one(self, memory, q, index: ClusterIndex, budget: int) -> torch.Tensor:
        """A decode step's rows [Hkv, n] of each KV head's memory, selected for q [1, H, 1, d]
        (counted in `touched`)."""
        rows, scored = index.select_one(q[0].view(self.ctx.n_kv_heads, self.groups, 1, -1), self.ctx.scale,
                                        budget, self.config.coarse_slack)
        self.touched["steps"] += 1
        self.touched["selected"] += rows.numel()
        self.touched["context"] += len(memory) * rows.shape[0]
        self.touched["centroids"] += scored
        return rows

    def _positions_of(self, layer, memory, rows) -> torch.Tensor:
        """True positions [Hkv, m] (int64, on rows' device) of each KV head's memory rows rows[h]."""
        table = self.store[layer].buffers.get(HEAD_POSITIONS)
        if table is not None:
            return table.data.gather(1, rows.to(table.data.device)).to(rows.device, torch.long)
        positions = memory.positions  # a context clustered in token order: one position per row
        return positions[rows.to(positions.device)].to(rows.device)

    def _index(self, layer) -> ClusterIndex:
        if layer not in self._indexes:
            buffers = self.store[layer].buffers
            self._indexes[layer] = ClusterIndex(*(buffers[name].data if name in buffers else None
                                                  for name in INDEX_BUFFERS))
        return self._indexes[layer]

    @torch.inference_mode()
    def end_prefill(self):
        """Cluster the fixed context, once: a later prompt (a question) is not clustered."""
        if self.clustered():
            return
        cfg = self.config
        indexes, calibrating = {}, []
        for layer in range(self.ctx.n_layers):
            kv = self.store[layer]
            if self.n_local is None:  # keep the last obs_window tokens out of the clusters
                recent, memory = kv.segment("recent"), kv.segment("memory", offload=True)
                move = max(len(recent) - cfg.obs_window, 0)
                memory.append(*(t.to(memory.device) for t in recent.slice(0, move)))
                recent.drop_front(move)
            memory = kv.segment("memory", offload=True)
            keys, positions = memory.keys.to(self.ctx.device), memory.positions
            if self.n_local is None:
                keys = self.rope.rotate(keys, positions)
            if len(memory):
                index = ClusterIndex.build(keys[0].float(), cfg.cluster_size, cfg.levels, cfg.coarse_size,
                                           cfg.kmeans, cfg.kmeans_iters)
            else:
                index = ClusterIndex(keys[0].float(), positions.new_zeros(keys.shape[1], 0))
            if self.cluster_layout and len(memory) and isinstance(memory, KVSegment):  # quantized: token order
                # each head's keys cluster by cluster: a lookup then reads its clusters as runs
                order = index.members.to(memory.device)
                kv.buffers[HEAD_POSITIONS] = GrowingBuffer.from_tensor(
                    positions[order].to(self.ctx.device, torch.int32))  # beside the other index tensors
                memory.reorder_per_head(order)
                if self.n_local is None and self._keeps_rotated_copy(memory):
                    kv.buffers[ROTATED_MEMORY] = GrowingBuffer.from_tensor(
                        rows_of(keys.to(memory.device), order).contiguous())
                index = index.in_cluster_order()
            if cfg.selection == "threshold" and len(memory):
                budget = round(cfg.budget * len(memory)) if cfg.budget <= 1 else int(cfg.budget)
                q, q_positions = self._observed[layer]
                if self.n_local is None:
                    q = self.rope.rotate(q, q_positions)
                else:
                    q = self.rope.rotate_one(q, self.n_local)
                g = self.groups
                calibrating.append((index, [q[0, h * g:(h + 1) * g] for h in range(self.ctx.n_kv_heads)],
                                    max(budget, 1)))
            indexes[layer] = index
        if calibrating and cfg.threshold_scope == "global":
            chosen, queries, budgets = zip(*calibrating, strict=True)  # one memory length: one budget
            calibrate_globally(list(chosen), list(queries), self.ctx.scale, budgets[0])
        else:
            for index, queries, budget in calibrating:
                index.calibrate(queries, self.ctx.scale, budget)
        for layer, index in indexes.items():
            for name, tensor in index.tensors().items():
                self.store[layer].buffers[name] = GrowingBuffer.from_tensor(tensor)
        self._indexes.update(indexes)  # this session's questions need not rebuild them (forks do, once)
        self._observed = {}
