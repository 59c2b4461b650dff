"""`snapkv`: compress the stored context to a KV budget (SnapKV, with H2O and TOVA scoring).

Until compression every token is attended exactly (as `dense`). Compression keeps, per KV
head, the `budget - obs_window` best-scored older tokens plus the last `obs_window` tokens:
  snapkv  attention the observation window's queries give each key (summed), then pooled
          along the sequence so neighbours of a hit survive with it (Li et al., 2024);
  h2o     attention each key accumulated from every query so far (Zhang et al., 2023);
  tova    attention of the last query alone (Oren et al., 2024).
Scores are summed over the query heads sharing a KV head and each KV head keeps its own
tokens (segments "kept.{h}", one head each), so GQA keeps its memory saving. Tokens after
the compression go to "tokens" with every head; generated tokens are not compressed.

`compress=end` compresses when the prompt is in (before its last token by default,
`first_token=compressed`, so the answer's first token reads the compressed KV; the official
code predicts it from the full prompt, which flatters one-token answers): a document stored with
`prefill(final=False)` waits for its question, so the compression follows the question
(a later prompt compresses again, to the same budget); `compress=chunk`
compresses after every prefill chunk, so memory stays within budget + chunk and, with
renumbered positions, the prefill stays inside the trained window at any input length.
Positions: `original` keeps each kept token's true position (beyond the trained window
this is out of distribution); `renumbered` gives kept tokens consecutive positions
0..budget-1 and later tokens follow them (as StreamingLLM counts positions in the cache).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..attention import Partial, attend, merge, received_mass
from ..kv import GrowingBuffer
from .base import MethodConfig, Policy, check, option

SCORES = ("snapkv", "h2o", "tova")


@dataclass(slots=True)
class SnapKVConfig(MethodConfig):
    name = "snapkv"
    no_dynamic_ntk = "keeps rotated positions fixed"
    summary = "SnapKV / H2O / TOVA: compress the stored prompt to a per-KV-head budget"

    budget: int = option(2048, "tokens kept per KV head after compression (observation window included)")
    obs_window: int = option(32, "last tokens always kept; with snapkv scoring, their queries vote")
    score: str = option("snapkv", "snapkv (window's attention, pooled), h2o (attention accumulated from "
                                  "every query) or tova (the last query's attention)")
    pool: str = option("max", "pooling of the scores along the sequence: max or avg")
    kernel: int | None = option(None, "pooling kernel (odd); default 7 for snapkv, 1 (none) for h2o and tova")
    positions: str = option("original", "original (true positions) or renumbered (kept at 0..budget-1)")
    compress: str = option("end", "end (once the prompt is in) or chunk (after every prefill chunk)")
    first_token: str = option("compressed", "compress=end: compressed (the answer's first token reads the "
                                            "compressed KV) or full (as the official code: it is predicted "
                                            "by the uncompressed prefill)")

    def __post_init__(self):
        check(self.budget >= 1, "budget must be >= 1")
        check(0 <= self.obs_window < self.budget, "obs_window must be in 0..budget-1")
        check(self.score in SCORES, f"score must be one of {', '.join(SCORES)}")
        check(self.pool in ("max", "avg"), "pool must be max or avg")
        check(self.kernel is None or (self.kernel >= 1 and self.kernel % 2 == 1),
              "kernel must be odd and >= 1")
        check(self.positions in ("original", "renumbered"), "positions must be original or renumbered")
        check(self.compress in ("end", "chunk"), "compress must be end or chunk")
        check(self.first_token in ("compressed", "full"), "first_token must be compressed or full")
        check(self.score != "snapkv" or self.obs_window >= 1, "snapkv scoring needs obs_window >= 1")

    def build(self, ctx) -> SnapKVPolicy:
        check(ctx.store.batch == 1, "snapkv selects tokens for one sequence (batch 1)")
        return SnapKVPolicy(ctx, self)


class SnapKVPolicy(Policy):
    def __init__(self, ctx, config: SnapKVConfig):
        super().__init__(ctx)
        self.config = config
        self.kernel = config.kernel or (7 if config.score == "snapkv" else 1)
        self.groups = ctx.n_heads // ctx.n_kv_heads
        self._observed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def reset_caches(self):
        self._observed = {}

    @property
    def replay_last_token(self) -> bool:
        # The engine holds the prompt's last token back until compression, then feeds it as a
        # decoding step, so the first answer token is predicted from the compressed KV like the rest.
        return self.config.compress == "end" and self.config.first_token == "compressed"

    def _kept(self, kv) -> list:
        return [kv.segment(f"kept.{h}", n_kv_heads=1) for h in range(self.ctx.n_kv_heads)]

    def _shift(self, tokens, kept, first_position: int) -> int:
        """True position minus the position used for RoPE (0 unless renumbered)."""
        if self.config.positions == "original" or (not len(tokens) and not len(kept[0])):
            return 0
        following = int(tokens.positions[-1]) + 1 if len(tokens) else len(kept[0])
        return first_position - following

    def attend(self, layer, q, k, v, positions):
        kv, scale, g = self.store[layer], self.ctx.scale, self.groups
        tokens, kept = kv.segment("tokens"), self._kept(kv)
        frame = positions - self._shift(tokens, kept, int(positions[0]))
        n_past = len(tokens)
        tokens.append(k, v, frame)
        observed = self._observed.get(layer)
        if observed is not None:
            q_all, p_all = torch.cat((observed[0], q), 2), torch.cat((observed[1], positions))
        else:
            q_all, p_all = q, positions
        window = max(self.config.obs_window, 1)
        self._observed[layer] = (q_all[:, :, -window:], p_all[-window:])

        q_rot = self.rope.rotate(q, frame)
        keys, values = tokens.rotated_keys(self.rope), tokens.values
        parts = [attend(q_rot, keys[:, :, n_past:], values[:, :, n_past:], scale, causal=True)]
        if n_past:
            parts.append(attend(q_rot, keys[:, :, :n_past], values[:, :, :n_past], scale))
        if len(kept[0]):
            per_head = [attend(q_rot[:, h * g:(h + 1) * g], seg.rotated_keys(self.rope), seg.values, scale)
                        for h, seg in enumerate(kept)]
            parts.append(Partial(torch.cat([p.out for p in per_head], 1),
                                 torch.cat([p.lse for p in per_head], 1)))
        out, lse = merge(parts)
        if self.config.score == "h2o":
            self._accumulate(kv, kept, q_rot, frame, keys, lse)
        if self.config.compress == "chunk" and getattr(self, "phase", "prefill") != "decode":
            self._compress(layer)
        return out

    def _accumulate(self, kv, kept, q_rot, frame, keys, lse):
        """H2O: add the attention mass each stored key received from this chunk's queries."""
        scale, g = self.ctx.scale, self.groups
        mask = kv.segment("tokens").positions[None, :] <= frame[:, None]
        mass = received_mass(q_rot, keys, lse, scale, mask)[0]  # [H, n_tokens]
        grouped = mass.view(self.ctx.n_kv_heads, g, -1).sum(1).T  # [n_tokens, Hkv]
        scores = kv.buffer("score", grouped)
        n_old = len(scores)
        if n_old:
            scores.data[:] += grouped[:n_old]
        scores.append(grouped[n_old:])
        if len(kept[0]):
            kept_mass = torch.stack([received_mass(q_rot[:, h * g:(h + 1) * g], seg.rotated_keys(self.rope),
                                                   lse[:, h * g:(h + 1) * g], scale)[0].sum(0)
                                     for h, seg in enumerate(kept)], 1)  # [n_kept, Hkv]
            kv.buffers["kept_score"].data[:] += kept_mass

    @torch.inference_mode()
    def end_prefill(self):
        if self.config.compress == "end" and getattr(self, "phase", "final") == "prefill":
            return  # a stored document a question will follow (prefill(final=False)): wait for it
        for layer in range(self.ctx.n_layers):
            self._compress(layer)

    # --- compression ------------------------------------------------------------------------
    def _compress(self, layer):
        cfg, kv = self.config, self.store[layer]
        tokens, kept = kv.segment("tokens"), self._kept(kv)
        n_kept = len(kept[0])
        if n_kept + len(tokens) <= cfg.budget:
            return
        keep_last = min(cfg.obs_window, len(tokens))
        n_prefix, n_select = len(tokens) - keep_last, cfg.budget - keep_last
        scores = self._scores(layer, kv, tokens, kept, n_prefix)  # [Hkv, n_kept + n_prefix]
        if self.kernel > 1:
            pool = F.max_pool1d if cfg.pool == "max" else F.avg_pool1d
            scores = pool(scores[:, None], self.kernel, stride=1, padding=self.kernel // 2)[:, 0]
        chosen = scores.topk(n_select, dim=-1).indices.sort(dim=-1).values  # [Hkv, n_select]
        prefix_k, prefix_v, prefix_p = tokens.slice(0, n_prefix)
        for h, seg in enumerate(kept):
            keys = torch.cat((seg.keys, prefix_k[:, h:h + 1]), 2).index_select(2, chosen[h])
            values = torch.cat((seg.values, prefix_v[:, h:h + 1]), 2).index_select(2, chosen[h])
            positions = torch.cat((seg.positions, prefix_p)).index_select(0, chosen[h])
            if cfg.positions == "renumbered":
                positions = torch.arange(n_select, device=positions.device)
            seg.drop_front(len(seg))
            seg.append(keys, values, positions)
        if cfg.score == "h2o":
            scores = kv.buffers["score"]
            old = kv.buffers["kept_score"].data if "kept_score" in kv.buffers else scores.data[:0]
            merged = torch.cat((old, scores.data[:n_prefix])).gather(0, chosen.T)
            kv.buffers["kept_score"] = GrowingBuffer.from_tensor(merged)
            scores.drop_front(n_prefix)
        if cfg.positions == "renumbered":  # the window follows the kept tokens
            last_k, last_v, _ = (t.clone() for t in tokens.slice(n_prefix))
            tokens.drop_front(len(tokens))
            tokens.append(last_k, last_v, torch.arange(n_select, cfg.budget, device=last_k.device))
        else:
            tokens.drop_front(n_prefix)

    def _scores(self, layer, kv, tokens, kept, n_prefix) -> torch.Tensor:
        """Score [Hkv, n_kept + n_prefix] of every token that may be dropped (kept ones first)."""
        cfg, g = self.config, self.groups
        if cfg.score == "h2o":
            kept_scores = kv.buffers["kept_score"].data if "kept_score" in kv.buffers else None
            prefix = kv.buffers["score"].data[:n_prefix]
            return (prefix if kept_scores is None else torch.cat((kept_scores, prefix))).T.float()
        q, true_positions = self._observed[layer]
        if cfg.score == "tova":
            q, true_positions = q[:, :, -1:], true_positions[-1:]
        frame = true_positions - (int(true_positions[-1]) - int(tokens.positions[-1]))
        q_rot = self.rope.rotate(q, frame)
        token_keys = tokens.rotated_keys(self.rope)
        visible = tokens.positions[None, :] <= frame[:, None]  # [w, n_tokens]
        out = []
        for h, seg in enumerate(kept):
            keys = torch.cat((seg.rotated_keys(self.rope), token_keys[:, h:h + 1]), 2)
            logits = (q_rot[:, h * g:(h + 1) * g] @ keys.transpose(-1, -2)).float() * self.ctx.scale
            mask = torch.cat((visible.new_ones(visible.shape[0], len(seg)), visible), 1)
            probs = logits.masked_fill(~mask, float("-inf")).softmax(-1)  # [B, g, w, n_kept + n_tokens]
            out.append(probs.sum((0, 1, 2))[:len(seg) + n_prefix])
        return torch.stack(out)
