"""The compiled CPU kernels (longreach/kernels) against the torch path they replace."""

import pytest
import torch

from longreach import attention, kernels
from longreach.attention import _flash_cpu, attend
from longreach.kernels.decode import attend_one, attend_segments
from longreach.kv.rows import rows_of

pytestmark = pytest.mark.skipif(kernels.numba is None, reason="numba is not installed")


def _torch_attend(q, k, v, scale):
    out, lse = _flash_cpu(q, k, v, None, False, scale)
    return out, lse


@pytest.mark.parametrize("heads,groups,n", [(3, 3, 5000), (1, 4, 700), (2, 1, 1), (4, 2, 2049), (3, 3, 9000)])
def test_one_query_over_contiguous_keys_matches_torch(heads, groups, n):
    torch.manual_seed(n)
    q = torch.randn(1, heads * groups, 1, 64)
    k, v = torch.randn(1, heads, n, 64) * 2, torch.randn(1, heads, n, 64)
    out, lse = attend_one(q, k, v, 0.125)
    ref_out, ref_lse = _torch_attend(q, k, v, 0.125)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)


def test_keys_read_in_place_from_a_larger_buffer():
    """A store segment's live keys are a view with room after them and a dropped front."""
    torch.manual_seed(0)
    buffer_k, buffer_v = torch.randn(1, 3, 3000, 32), torch.randn(1, 3, 3000, 32)
    k, v = buffer_k[:, :, 100:2600], buffer_v[:, :, 100:2600]
    q = torch.randn(1, 6, 1, 32)
    out, lse = attend_one(q, k, v, 0.2)
    ref_out, ref_lse = _torch_attend(q, k.contiguous(), v.contiguous(), 0.2)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("heads,n", [(2, 700), (3, 4500)])  # 3 x 4500 rows: shared over threads
def test_one_query_over_rows_picked_per_head_matches_torch_over_the_gathered_rows(heads, n):
    """Head h reads rows[h] of its keys in place (runs and scattered rows, repeats allowed)."""
    torch.manual_seed(n)
    buffer_k, buffer_v = torch.randn(1, heads, 9000, 32), torch.randn(1, heads, 9000, 32)
    k, v = buffer_k[:, :, 50:8050], buffer_v[:, :, 50:8050]
    rows = torch.stack([torch.cat((torch.arange(h * 100, h * 100 + n // 2), torch.randint(0, 8000, (n - n // 2,))))
                        for h in range(heads)])
    q = torch.randn(1, heads * 2, 1, 32)
    out, lse = attend_one(q, k, v, 0.2, rows=rows)
    ref_out, ref_lse = _torch_attend(q, rows_of(k, rows), rows_of(v, rows), 0.2)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("long_memory", [False, True])  # True: 3 x 4096 picked rows, shared over threads
def test_segments_read_by_their_own_queries_make_one_softmax(long_memory):
    """Picked rows of one buffer, a strided view and a contiguous tensor, each read by its own
    query (and an empty segment): the merge of torch attention over each."""
    torch.manual_seed(3)
    heads, groups, d = 3, 3, 64
    q_near, q_far = torch.randn(1, heads * groups, 1, d), torch.randn(1, heads * groups, 1, d)
    memory_k, memory_v = torch.randn(1, heads, 9000, d) * 2, torch.randn(1, heads, 9000, d)
    n_rows = 4096 if long_memory else 300
    rows = torch.stack([torch.randperm(9000)[:n_rows].sort().values for _ in range(heads)])
    recent_k, recent_v = torch.randn(1, heads, 900, d), torch.randn(1, heads, 900, d)
    sinks_k, sinks_v = torch.randn(1, heads, 40, d), torch.randn(1, heads, 40, d)
    segments = [(1, memory_k, memory_v, rows), (1, recent_k[:, :, :600], recent_v[:, :, :600], None),
                (0, recent_k[:, :, 600:], recent_v[:, :, 600:], None), (1, sinks_k, sinks_v, None),
                (0, recent_k[:, :, :0], recent_v[:, :, :0], None)]
    out, lse = attend_segments((q_near, q_far), segments, 0.125)
    parts = [attention.Partial(*_torch_attend((q_near, q_far)[i], rows_of(k, rows) if r is not None else k,
                                              rows_of(v, rows) if r is not None else v, 0.125))
             for i, k, v, r in segments[:4]]
    ref_out, ref_lse = attention.merge(parts)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)


def test_unsuitable_layouts_are_declined():
    k = torch.randn(1, 2, 64, 100).transpose(2, 3)  # channels not contiguous
    assert attend_one(torch.randn(1, 2, 1, 64), k, k, 1.0) is None


def test_attend_uses_the_kernel_only_where_it_applies(monkeypatch):
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 4, 1, 16), torch.randn(1, 2, 9000, 16), torch.randn(1, 2, 9000, 16)
    calls, real = [], attention.attend_one
    monkeypatch.setattr(attention, "attend_one", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    with_kernel = attend(q, k, v, 0.25)
    attend(q, k[:, :, :1000], v[:, :, :1000], 0.25)  # fewer keys: torch's kernel
    assert len(calls) == 1
    monkeypatch.setenv("LONGREACH_KERNELS", "0")
    without = attend(q, k, v, 0.25)
    torch.testing.assert_close(with_kernel.out, without.out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(with_kernel.lse, without.lse, rtol=1e-5, atol=1e-5)
    assert not kernels.enabled(q)
    monkeypatch.delenv("LONGREACH_KERNELS")
    assert kernels.enabled(q) and not kernels.enabled(q.double())


def test_work_is_shared_out_in_contiguous_ranges_once_each(monkeypatch):
    import threading
    seen = []

    def record(tag, first, stop):
        seen.append((tag, first, stop, threading.current_thread().name))

    monkeypatch.setattr(kernels, "threads", lambda: 3)
    kernels.in_parallel(record, 10, "x")
    assert sorted(r[1:3] for r in seen) == [(0, 3), (3, 6), (6, 10)] and {r[0] for r in seen} == {"x"}
    runners = sorted(r[3] for r in seen)  # the caller's range, and the others in the pool's threads
    assert runners[0] == "MainThread" and all(name.startswith("longreach-kernel") for name in runners[1:])
    seen.clear()
    kernels.in_parallel(record, 2, "y")  # fewer items than threads
    assert sorted(r[1:3] for r in seen) == [(0, 1), (1, 2)]
    seen.clear()
    pool = kernels._pool
    monkeypatch.setattr(kernels, "_pool", (pool[0] + 1, pool[1], pool[2]))  # as seen from a forked child
    kernels.in_parallel(record, 4, "z")
    assert kernels._pool[0] == pool[0] and kernels._pool[2] is not pool[2]
    assert sorted(r[1:3] for r in seen) == [(0, 1), (1, 2), (2, 4)]
    seen.clear()
    monkeypatch.setattr(kernels, "threads", lambda: 2)
    kernels.in_parallel(record, 6, "w", sizes=[10, 1, 1, 1, 1, 6])  # cut where the costs halve
    assert sorted(r[1:3] for r in seen) == [(0, 1), (1, 6)]


def test_vectorised_exp_matches_exp_to_float32_rounding_and_sums_what_it_writes_in_place():
    import numpy as np

    from longreach.kernels.decode import exp_shifted

    x = np.concatenate((np.linspace(-100, 3, 20001), [3.0, -1e30])).astype(np.float32)
    out, bits = x.copy(), np.empty(x.shape[0], np.int32)
    total = exp_shifted(out, np.float32(3.0), bits)  # in place
    exact = np.exp((x - np.float32(3.0)).astype(np.float64))  # exp of the float32 difference, as expf
    normal = exact > 2e-38
    assert np.abs(out[normal] / exact[normal] - 1).max() < 5e-7
    assert (out[~normal] < 2e-38).all()
    assert out[-2] == 1.0  # the maximum is exactly 1
    assert np.isclose(total, out.astype(np.float64).sum(), rtol=1e-6)
