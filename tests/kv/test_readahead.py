import mmap

import pytest
import torch

from longreach.kv import KVSegment, QuantizedSegment, QuantSpec, readahead


def _recorder(monkeypatch):
    calls = []
    monkeypatch.setattr(readahead, "_madvise", lambda addr, length, advice: calls.append((addr, length, advice)))
    return calls


def _covers(calls, address: int, nbytes: int) -> bool:
    return any(addr <= address and address + nbytes <= addr + length for addr, length, _ in calls)


def test_page_ranges_are_aligned_sorted_and_merged_when_they_share_or_touch_a_page():
    page = mmap.PAGESIZE
    starts = torch.tensor([2 * page + 100, 2 * page + 300, 3 * page + 1, 5 * page + 10, 7 * page - 8, 9 * page])
    got = readahead.page_ranges(starts, 8).tolist()
    # rows on pages 2 and 3: one range, to the last row's end; page 4 is a gap; the rows on pages 5
    # and 6 touch; page 8 is a gap before the last row
    assert got == [[2 * page, page + 9], [5 * page, 2 * page], [9 * page, 8]]
    assert readahead.page_ranges(torch.tensor([], dtype=torch.long), 8).shape == (0, 2)


def test_scattered_rows_cost_one_hint_per_page_range(monkeypatch):
    calls = _recorder(monkeypatch)
    values = torch.zeros(1, 1, 8192, 16)  # rows of 64 bytes: 64 rows per 4 KiB page
    readahead.will_need_rows(values, torch.arange(0, 4096, 3))  # 1366 runs of one row
    assert len(calls) <= 2  # one range (two if the tensor does not start on a page)
    assert all(_covers(calls, values[0, 0, row].data_ptr(), 64) for row in range(0, 4096, 3))


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
    for head in range(2):  # the adopted (possibly mapped) values: runs 5..7 and 299 of both heads
        assert _covers(calls, values[0, head, 5].data_ptr(), 3 * 8 * 4)
        assert _covers(calls, values[0, head, 299].data_ptr(), 8 * 4)
    assert all(addr + length <= values[0, 1, 299].data_ptr() + 8 * 4 for addr, length, _ in calls)
    # the appended rows live in this process: no hint goes past the adopted tensor

    calls.clear()
    fresh = KVSegment(1, 2, 8, torch.float32, torch.device("cpu"))
    fresh.append(keys, values, torch.arange(300))
    fresh.gather(index[:3])
    assert calls == []  # computed in this process: nothing to read from disk


@pytest.mark.parametrize("per_head", [False, True])
def test_gathering_from_an_adopted_quantized_segment_hints_its_value_codes(monkeypatch, per_head):
    live = QuantizedSegment(1, 2, 8, torch.float32, torch.device("cpu"), QuantSpec(8, 64))
    live.append(torch.randn(1, 2, 256, 8), torch.randn(1, 2, 256, 8), torch.arange(256))
    restored = QuantizedSegment(1, 2, 8, torch.float32, torch.device("cpu"), QuantSpec(8, 64))
    restored.load_state_dict({name: t.clone() for name, t in live.state_dict().items()})
    calls = _recorder(monkeypatch)
    first_rows = (64, 128) if per_head else (64, 64)  # per head: each KV head its own 64 rows
    if per_head:
        index = torch.stack([torch.arange(start, start + 64) for start in first_rows])
        pairs = zip(restored.gather_per_head(index), live.gather_per_head(index), strict=True)
    else:
        index = torch.arange(64, 128)
        pairs = zip(restored.gather(index), live.gather(index), strict=True)
    for got, expected in pairs:
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    for part in (restored._v.codes, restored._v.scale, restored._v.zero):
        row = part[0, 0, 0].numel() * part.element_size()
        assert all(_covers(calls, part[0, h, start].data_ptr(), 64 * row) for h, start in enumerate(first_rows))


def test_per_head_rows_hint_each_head_its_own_runs_and_skip_rows_outside(monkeypatch):
    calls = _recorder(monkeypatch)
    values = torch.zeros(1, 2, 1024, 64)  # rows of 256 bytes
    readahead.will_need_rows(values, torch.tensor([[10, 11, -1, 5000], [700, 701, 702, 900]]))
    row = 256
    expected = [(0, 10, 12), (1, 700, 703), (1, 900, 901)]
    assert len(calls) == len(expected)
    for (addr, length, _), (head, start, stop) in zip(calls, expected, strict=True):
        first = values.data_ptr() + (head * 1024 + start) * row
        assert addr <= first < addr + mmap.PAGESIZE and addr + length == first + (stop - start) * row


def test_gathering_per_head_from_adopted_tensors_hints_each_heads_values(monkeypatch):
    keys, values = torch.randn(1, 2, 300, 8), torch.randn(1, 2, 300, 8)
    segment = KVSegment(1, 2, 8, torch.float32, torch.device("cpu"))
    segment.load_state_dict({"keys": keys, "values": values, "positions": torch.arange(300)})
    segment.append(torch.randn(1, 2, 20, 8), torch.randn(1, 2, 20, 8), torch.arange(300, 320))
    calls = _recorder(monkeypatch)
    index = torch.tensor([[5, 6, 310], [200, 201, 305]])
    got_keys, got_values = segment.gather_per_head(index)
    assert torch.equal(got_values[0, 0, :2], values[0, 0, [5, 6]])
    assert torch.equal(got_keys[0, 1, :2], keys[0, 1, [200, 201]])
    row = 8 * 4
    assert _covers(calls, values[0, 0, 5].data_ptr(), 2 * row)
    assert _covers(calls, values[0, 1, 200].data_ptr(), 2 * row)
    assert not _covers(calls, values[0, 0, 200].data_ptr(), row)  # head 0 did not select row 200
    # rows 305/310 were appended in this process: no hint goes past the adopted tensor
    assert all(addr + length <= values[0, 1, 201].data_ptr() + row for addr, length, _ in calls)


def test_reading_in_place_from_adopted_tensors_hints_keys_and_values_of_each_head(monkeypatch):
    calls = _recorder(monkeypatch)
    keys, values = torch.randn(1, 2, 300, 8), torch.randn(1, 2, 300, 8)
    segment = KVSegment(1, 2, 8, torch.float32, torch.device("cpu"))
    segment.load_state_dict({"keys": keys, "values": values, "positions": torch.arange(300)})
    segment.will_read(torch.tensor([[5, 6, 7], [200, 201, 202]]))
    for tensor in (keys, values):
        assert _covers(calls, tensor[0, 0, 5].data_ptr(), 3 * 8 * 4)
        assert _covers(calls, tensor[0, 1, 200].data_ptr(), 3 * 8 * 4)
    calls.clear()
    segment.clone().will_read(torch.tensor([[5], [6]]))
    assert calls == []  # a copy in this process's memory
