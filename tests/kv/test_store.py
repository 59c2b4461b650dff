import torch
from segment_checks import assert_same_reads
from transformers import LlamaConfig

from longreach.kv import KVStore
from longreach.rope import RotaryEmbedding


def _tokens(start, n, heads=2, dim=8):
    g = torch.Generator().manual_seed(start)
    return (torch.randn(1, heads, n, dim, generator=g), torch.randn(1, heads, n, dim, generator=g),
            torch.arange(start, start + n))


def test_append_drop_and_grow_keep_contents():
    store = KVStore(1, 2, 8, torch.float32, "cpu")
    seg = store[0].segment("s")
    kept_k, kept_v, kept_p = [], [], []
    for step in range(40):
        k, v, p = _tokens(step * 13, 13)
        seg.append(k, v, p)
        kept_k.append(k), kept_v.append(v), kept_p.append(p)
        if step % 3 == 2:
            seg.drop_front(20)
    all_k, all_v, all_p = torch.cat(kept_k, 2), torch.cat(kept_v, 2), torch.cat(kept_p)
    n = len(seg)
    assert torch.equal(seg.keys, all_k[:, :, -n:])
    assert torch.equal(seg.values, all_v[:, :, -n:])
    assert torch.equal(seg.positions, all_p[-n:])


def test_rotated_cache_matches_fresh_rotation_after_drops_and_growth():
    rope = RotaryEmbedding(LlamaConfig(head_dim=8, hidden_size=16, num_attention_heads=2), 8)
    store = KVStore(1, 2, 8, torch.float32, "cpu")
    seg = store[0].segment("s")
    for step in range(30):
        seg.append(*_tokens(step * 7, 7))
        if step % 4 == 3:
            seg.drop_front(10)
        torch.testing.assert_close(seg.rotated_keys(rope), rope.rotate(seg.keys, seg.positions))


def test_byte_accounting_and_tiers():
    store = KVStore(2, 2, 8, torch.float32, "cpu", offload_device="meta")
    store[0].segment("hot").append(*_tokens(0, 10))
    cold = store[1].segment("cold", offload=True)
    assert cold.device.type == "meta"
    per_token = 2 * (2 * 8 * 4) + 4  # keys + values for 2 heads of 8 floats, plus an int32 position
    assert store.bytes_by_device()["cpu"] == 10 * per_token
    assert store.nbytes >= 10 * per_token


def test_state_dict_round_trip_and_clone_independence():
    store = KVStore(2, 2, 8, torch.float32, "cpu")
    store[0].segment("a").append(*_tokens(0, 5))
    store[1].segment("b", offload=True).append(*_tokens(5, 3))
    store[1].buffer("repr", torch.zeros(1, 4)).append(torch.ones(2, 4))
    copy = KVStore(2, 2, 8, torch.float32, "cpu")
    copy.load_state_dict(store.state_dict())
    assert torch.equal(copy[0].segments["a"].keys, store[0].segments["a"].keys)
    assert copy[1].offloaded == {"b"}
    assert torch.equal(copy[1].buffers["repr"].data, torch.ones(2, 4))
    clone = store.clone()
    clone[0].segments["a"].append(*_tokens(9, 2))
    assert len(store[0].segments["a"]) == 5 and len(clone[0].segments["a"]) == 7


def test_adopted_tokens_are_not_copied_when_the_segment_grows():
    """A stored context's mapped tensors stay where they are; new tokens go to a buffer after them,
    and every read (parts, slices, gathers, drops, saving) sees one run of tokens."""
    k, v, p = _tokens(0, 40)
    adopted = {"keys": k.clone(), "values": v.clone(), "positions": p.clone()}
    seg = KVStore(1, 2, 8, torch.float32, "cpu")[0].segment("memory")
    seg.load_state_dict(adopted)
    reference = KVStore(1, 2, 8, torch.float32, "cpu")[0].segment("memory")
    reference.append(k, v, p)
    for start in (40, 52):
        more = _tokens(start, 12)
        seg.append(*more)
        reference.append(*more)
    base, tail = seg.key_parts()
    assert base.data_ptr() == adopted["keys"].data_ptr() and tail.shape[2] == 24
    assert len(seg) == 64 and torch.equal(seg.positions, reference.positions)
    assert_same_reads(seg, reference, [45, 3, 60, 39, 40, 0], [[1, 50, 39, 63], [44, 2, 40, 7]],
                      [(0, 8), (30, 40), (41, 50)])
    for name, tensor in reference.state_dict().items():
        assert torch.equal(seg.state_dict()[name], tensor)
    seg.drop_front(10)
    reference.drop_front(10)
    assert torch.equal(torch.cat(seg.key_parts(), 2), reference.keys)
    assert seg.key_parts()[0].data_ptr() == adopted["keys"][:, :, 10:].data_ptr()
    seg.drop_front(35)  # past the adopted tokens
    reference.drop_front(35)
    assert len(seg.key_parts()) == 1 and torch.equal(seg.keys, reference.keys)
    assert torch.equal(adopted["keys"], k) and torch.equal(adopted["values"], v)  # never written


def test_a_straddling_slice_or_rotation_joins_the_parts_once():
    rope = RotaryEmbedding(LlamaConfig(head_dim=8, hidden_size=16, num_attention_heads=2), 8)
    k, v, p = _tokens(0, 20)
    seg = KVStore(1, 2, 8, torch.float32, "cpu")[0].segment("s")
    seg.load_state_dict({"keys": k, "values": v, "positions": p})
    seg.append(*_tokens(20, 5))
    keys, _, positions = seg.slice(15, 25)
    assert torch.equal(positions, torch.arange(15, 25)) and len(seg.key_parts()) == 1
    torch.testing.assert_close(seg.rotated_keys(rope), rope.rotate(seg.keys, seg.positions))


def test_reordering_each_head_moves_its_rows_and_leaves_the_adopted_file_alone():
    """Row i of head h becomes the token that was at order[h, i]; positions stay in token order;
    a segment over adopted tensors (a mapped file) with new tokens after them is copied, not written."""
    k, v, p = _tokens(0, 30)
    adopted = {"keys": k[:, :, :20].clone(), "values": v[:, :, :20].clone(), "positions": p[:20].clone()}
    seg = KVStore(1, 2, 8, torch.float32, "cpu")[0].segment("memory")
    seg.load_state_dict(adopted)
    seg.append(k[:, :, 20:], v[:, :, 20:], p[20:])  # a base and a buffer
    seg.drop_front(4)
    order = torch.stack([torch.randperm(26, generator=torch.Generator().manual_seed(h)) for h in range(2)])
    seg.reorder_per_head(order)
    for h in range(2):
        assert torch.equal(seg.keys[0, h], k[0, h, 4:][order[h]])
        assert torch.equal(seg.values[0, h], v[0, h, 4:][order[h]])
    assert torch.equal(seg.positions, p[4:].long()) and len(seg) == 26 and len(seg.key_parts()) == 1
    assert torch.equal(adopted["keys"], k[:, :, :20]) and torch.equal(adopted["values"], v[:, :, :20])
    picked = torch.tensor([[0, 5, 25], [3, 3, 9]])  # gathers read the new layout
    keys, values = seg.gather_per_head(picked)
    assert torch.equal(keys[0, 1], k[0, 1, 4:][order[1][picked[1]]])
    seg.append(*_tokens(30, 3))  # and it grows as before
    assert len(seg) == 29 and torch.equal(seg.positions[-3:], torch.arange(30, 33))


def test_rotation_takes_one_row_of_positions_per_head():
    rope = RotaryEmbedding(LlamaConfig(head_dim=8, hidden_size=16, num_attention_heads=2), 8)
    keys = torch.randn(1, 2, 5, 8)
    positions = torch.tensor([[3, 0, 7, 1, 2], [40, 41, 9, 8, 100]])
    rotated = rope.rotate(keys, positions)
    for h in range(2):
        assert torch.equal(rotated[:, h], rope.rotate(keys[:, h], positions[h]))
