"""Exact softmax attention over several key segments, merged through their log-sum-exp.

A method splits what a query sees into segments (sinks, a local window, retrieved
blocks, the chunk itself), each with its own rotation; `attend` computes each part with
the fused kernel and `merge` combines them into one softmax over the union, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import kernels
from .kernels.decode import attend_one

_NEG_INF = float("-inf")
# One query over fewer keys than this: torch's kernel (the compiled one gains once it shares the
# work over threads, see kernels.decode.PARALLEL_MIN_ROWS; measured on SmolLM2, 3 KV heads).
_KERNEL_MIN_KEYS = 4096


@dataclass(slots=True)
class Partial:
    """Attention of a query set over one key segment: normalised output and its log-sum-exp."""

    out: torch.Tensor  # [B, H, q, d]
    lse: torch.Tensor  # [B, H, q]; -inf where the query saw no key


def _flash_cpu(q, k, v, mask, causal, scale):
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, 0.0, causal, attn_mask=mask, scale=scale)[:2]


def _expand_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    groups = n_heads // x.shape[1]
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
           mask: torch.Tensor | None = None, causal: bool = False) -> Partial:
    """Softmax attention of rotated queries over rotated keys.

    Args:
        q: [B, H, q, d]; k, v: [B, Hkv, m, d] with H a multiple of Hkv (GQA).
        mask: optional bool [q, m], True where the query may see the key.
        causal: square causal mask (q == m), query i sees keys 0..i.
    Returns:
        A Partial whose lse is -inf for queries that saw no key.
    """
    n_q, n_k = q.shape[-2], k.shape[-2]
    if n_k == 0:
        return Partial(q.new_zeros(q.shape), q.new_full(q.shape[:-1], _NEG_INF))
    assert not causal or n_q == n_k, "causal attention needs as many keys as queries"
    if n_q == 1 and mask is None and n_k >= _KERNEL_MIN_KEYS and q.shape[0] == 1 and kernels.enabled(q, k, v):
        got = attend_one(q, k, v, scale)  # a decode step over many keys: the compiled kernel
        if got is not None:
            return Partial(*got)
    if q.device.type == "cpu":
        additive = None
        if mask is not None:
            additive = torch.zeros(mask.shape, dtype=q.dtype, device=q.device)
            additive.masked_fill_(~mask, _NEG_INF)
        out, lse = _flash_cpu(q, k, v, additive, causal, scale)
    else:
        out, lse = _attend_reference(q, k, v, scale, mask, causal)
    if mask is not None:
        empty = ~mask.any(dim=-1)
        if bool(empty.any()):
            lse = lse.masked_fill(empty, _NEG_INF)
            out = out.masked_fill(empty[:, None], 0.0)
    return Partial(out, lse)


def _attend_reference(q, k, v, scale, mask, causal):
    # Off CPU: plain logits + softmax (kernels with a log-sum-exp output differ per backend).
    k, v = _expand_heads(k, q.shape[1]), _expand_heads(v, q.shape[1])
    logits = torch.matmul(q, k.transpose(-1, -2)).float() * scale
    if causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        logits = logits.masked_fill(~mask, _NEG_INF)
    lse = torch.logsumexp(logits, dim=-1)
    probs = torch.exp(logits - lse[..., None].clamp_min(-1e30)).nan_to_num(0.0)
    return torch.matmul(probs.to(v.dtype), v), lse


def merge(parts: list[Partial]) -> tuple[torch.Tensor, torch.Tensor]:
    """One softmax over the union of the parts' keys: (output [B,H,q,d], lse [B,H,q])."""
    if len(parts) == 1:
        return parts[0].out, parts[0].lse
    lse = torch.stack([p.lse for p in parts]).float()
    total = torch.logsumexp(lse, dim=0)
    weights = torch.exp(lse - total.clamp_min(-1e30)).nan_to_num(0.0)
    out = sum(w[..., None].to(p.out.dtype) * p.out for w, p in zip(weights, parts, strict=True))
    return out, total


def received_mass(q: torch.Tensor, k: torch.Tensor, lse: torch.Tensor, scale: float,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention mass each key receives from the queries, under the final softmax.

    Args:
        q: [B, H, q, d]; k: [B, Hkv, m, d]; lse: [B, H, q] of the merged softmax;
        mask: optional bool [q, m], True where the query saw the key.
    Returns:
        [B, H, m]: sum over queries of p(query -> key), per query head.
    """
    if q.device.type != "cpu" or q.shape[2] <= 32:  # few queries (decoding): plain matmul is cheaper
        return _received_mass_direct(q, k, lse, scale, mask)
    # Transposed attention: keys act as queries over the real queries, with -lse_i folded in
    # as one extra dimension; the kernel's log-sum-exp is then log(sum_i exp(s_ij - lse_i)).
    batch, n_heads, n_q, dim = q.shape
    pad = 8
    as_keys = torch.cat((q * scale, -lse[..., None].to(q.dtype), q.new_zeros(batch, n_heads, n_q, pad - 1)), -1)
    keys = _expand_heads(k, n_heads)
    as_queries = torch.cat((keys, keys.new_ones(*keys.shape[:3], 1), keys.new_zeros(*keys.shape[:3], pad - 1)), -1)
    additive = None
    if mask is not None:
        additive = torch.zeros(mask.shape[::-1], dtype=q.dtype, device=q.device)
        additive.masked_fill_(~mask.T, _NEG_INF)
    _, log_mass = _flash_cpu(as_queries, as_keys, torch.zeros_like(as_keys), additive, False, 1.0)
    mass = log_mass.exp()
    if mask is not None:
        mass = mass * mask.any(dim=0)  # keys no query saw: the kernel reports lse 0 for them
    return mass


def _received_mass_direct(q, k, lse, scale, mask):
    batch, n_heads, n_q, dim = q.shape
    n_kv = k.shape[1]
    groups = n_heads // n_kv
    qg = q.reshape(batch, n_kv, groups * n_q, dim)  # GQA: query heads of a KV head side by side
    logits = torch.matmul(qg, k.transpose(-1, -2)).float() * scale  # [B, Hkv, G*q, m]
    probs = (logits - lse.reshape(batch, n_kv, groups * n_q, 1).float()).exp_()
    probs = probs.view(batch, n_kv, groups, n_q, -1)
    if mask is not None:
        probs = probs.masked_fill(~mask, 0.0)
    return probs.sum(dim=-2).reshape(batch, n_heads, -1).to(q.dtype)


def summed_logits(q: torch.Tensor, k: torch.Tensor, scale: float,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over the queries that see each key of q.k * scale: [B, H, m] (linear, no softmax)."""
    n_heads = q.shape[1]
    if mask is None:
        summed = q.sum(dim=2, keepdim=True)  # [B, H, 1, d]
        return (summed * _expand_heads(k, n_heads)).sum(-1) * scale
    per_key = torch.matmul(mask.T.to(q.dtype), q)  # [B, H, m, d]: sum of the queries seeing each key
    return (per_key * _expand_heads(k, n_heads)).sum(-1) * scale
