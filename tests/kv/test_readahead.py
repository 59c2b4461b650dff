import mmap

import torch

from longreach.kv import KVSegment, QuantizedSegment, QuantSpec, readahead


def test_runs_are_sorted_consecutive_spans():
    assert readahead.runs(torch.tensor([9, 5, 6, 7, 1, 2, 6])) == [(1, 3), (5, 8), (9, 10)]
    assert readahead.runs(torch.tensor([3])) == [(3, 4)]
    assert readahead.runs(torch.tensor([], dtype=torch.long)) == []


def _recorder(monkeypatch):
    calls = []
    monkeypatch.setattr(readahead, "_madvise", lambda addr, length, advice: calls.append((addr, length, advice)))
    return calls


def test_hints_cover_the_selected_rows_of_every_head_page_aligned(monkeypatch):
    calls = _recorder(monkeypatch)
    values = torch.zeros(1, 3, 4096, 64)  # rows of 256 bytes
    readahead.will_need_rows(values, torch.tensor([130, 131, 132, 1000]))
    row, page = 256, mmap.PAGESIZE
    assert len(calls) == 6 and all(advice == mmap.MADV_WILLNEED for *_, advice in calls)
    for (addr, length, _), (head, start, stop) in zip(calls, [(h, a, b) for h in range(3)
                                                          for a, b in ((130, 133), (1000, 1001))], strict=True):
        first = values.data_ptr() + (head * 4096 + start) * row
        assert addr % page == 0 and addr <= first < addr + page
        assert addr + length == first + (stop - start) * row


def test_no_hint_for_tensors_whose_rows_are_not_contiguous(monkeypatch):
    calls = _recorder(monkeypatch)
    readahead.will_need_rows(torch.zeros(1, 2, 64, 8).transpose(2, 3), torch.tensor([1]))
    assert calls == []


def test_gathering_from_adopted_tensors_hints_the_values_and_returns_the_same_rows(monkeypatch):
    calls = _recorder(monkeypatch)
    keys, values = torch.randn(1, 2, 300, 8), torch.randn(1, 2, 300, 8)
    segment = KVSegment(1, 2, 8, torch.float32, torch.device("cpu"))
    segment.load_state_dict({"keys": keys, "values": values, "positions": torch.arange(300)})
    segment.append(torch.randn(1, 2, 20, 8), torch.randn(1, 2, 20, 8), torch.arange(300, 320))
    index = torch.tensor([5, 6, 7, 299, 300, 310])
    got_keys, got_values, got_positions = segment.gather(index)
    assert torch.equal(got_values[:, :, :4], values[:, :, [5, 6, 7, 299]])
    assert torch.equal(got_keys[:, :, :4], keys[:, :, [5, 6, 7, 299]])
    assert got_positions.tolist() == index.tolist()
    hinted = {addr for addr, *_ in calls}
    first = values.data_ptr() + 5 * 8 * 4
    assert first - first % mmap.PAGESIZE in hinted  # the adopted (possibly mapped) values
    assert len(calls) == 2 * 2  # runs 5..7 and 299 of both heads; the appended rows live in this process

    calls.clear()
    fresh = KVSegment(1, 2, 8, torch.float32, torch.device("cpu"))
    fresh.append(keys, values, torch.arange(300))
    fresh.gather(index[:3])
    assert calls == []  # computed in this process: nothing to read from disk


def test_gathering_from_an_adopted_quantized_segment_hints_its_value_codes(monkeypatch):
    live = QuantizedSegment(1, 2, 8, torch.float32, torch.device("cpu"), QuantSpec(8, 64))
    live.append(torch.randn(1, 2, 256, 8), torch.randn(1, 2, 256, 8), torch.arange(256))
    restored = QuantizedSegment(1, 2, 8, torch.float32, torch.device("cpu"), QuantSpec(8, 64))
    restored.load_state_dict({name: t.clone() for name, t in live.state_dict().items()})
    calls = _recorder(monkeypatch)
    index = torch.arange(64, 128)
    for got, expected in zip(restored.gather(index), live.gather(index), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert len(calls) == 3 * 2  # codes, scales and zero points of both heads: one run each
    assert calls[0][0] <= restored._v.codes[0, 0, 64].data_ptr() < calls[0][0] + calls[0][1]
