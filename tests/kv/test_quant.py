import pytest
import torch
from segment_checks import assert_same_reads
from transformers import LlamaConfig

from longreach.kv import KVStore, QuantizedSegment, QuantSpec
from longreach.kv.quant import pack, quantize, unpack
from longreach.rope import RotaryEmbedding


def _tokens(start, n, heads=2, dim=16):
    g = torch.Generator().manual_seed(start)
    keys = torch.randn(1, heads, n, dim, generator=g) * torch.linspace(0.1, 4.0, dim)  # outlier channels
    return keys, torch.randn(1, heads, n, dim, generator=g), torch.arange(start, start + n)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantize_dequantize_error_is_within_half_a_step(bits):
    x = torch.randn(4, 3, 64, 16) * 5
    codes, scale, zero = quantize(x, bits, dim=2)
    assert codes.dtype == torch.uint8 and int(codes.max()) <= 2 ** bits - 1
    restored = codes.float() * scale.float() + zero.float()
    step = scale.float()
    # half a step, plus float16 rounding of the zero point
    assert bool(((restored - x).abs() <= step / 2 + 1e-3 * zero.float().abs() + 1e-6).all())
    assert torch.equal(unpack(pack(codes, bits), bits), codes)


@pytest.mark.parametrize("bits,tolerance", [(8, 0.02), (4, 0.35)])
def test_quantized_segment_behaves_like_a_plain_one(bits, tolerance):
    rope = RotaryEmbedding(LlamaConfig(head_dim=16, hidden_size=32, num_attention_heads=2), 16)
    plain = KVStore(1, 2, 16, torch.float32, "cpu")[0].segment("s")
    store = KVStore(1, 2, 16, torch.float32, "cpu", quant=QuantSpec(bits, 8))
    quant = store[0].segment("s")
    start = 0
    for step in range(24):
        n = (1, 5, 13, 7)[step % 4]
        for seg in (plain, quant):
            seg.append(*_tokens(start, n))
        start += n
        if step % 5 == 4:
            plain.drop_front(9), quant.drop_front(9)
        if step % 3 == 0:
            quant.rotated_keys(rope)  # the rotated cache must follow appends, drops and growth
    assert len(plain) == len(quant) and torch.equal(plain.positions, quant.positions)
    for got, expected in [(quant.keys, plain.keys), (quant.values, plain.values),
                          (quant.rotated_keys(rope), plain.rotated_keys(rope)),
                          (quant.slice(3, 20)[0], plain.slice(3, 20)[0])]:
        assert (got - expected).abs().max() < tolerance * expected.abs().max()
    index = torch.tensor([0, 5, len(plain) - 1, 3])
    got, expected = quant.gather(index), plain.gather(index)
    assert torch.equal(got[2], expected[2]) and (got[0] - expected[0]).abs().max() < tolerance * 4
    per_head = torch.tensor([[0, 5, len(plain) - 1], [len(plain) - 2, 1, 2]])
    got_k, _ = quant.gather_per_head(per_head)
    assert torch.allclose(got_k[:, 1], quant.keys[:, 1].index_select(1, per_head[1]))


def test_state_dict_round_trip_and_clone():
    store = KVStore(2, 2, 16, torch.float32, "cpu", quant=QuantSpec(4, 8))
    store[0].segment("a").append(*_tokens(0, 21))
    store[0].segments["a"].drop_front(3)
    store[1].segment("b", offload=True).append(*_tokens(5, 3))
    copy = KVStore(2, 2, 16, torch.float32, "cpu", quant=QuantSpec(4, 8))
    copy.load_state_dict(store.state_dict())
    for layer, name in [(0, "a"), (1, "b")]:
        mine, theirs = store[layer].segments[name], copy[layer].segments[name]
        assert torch.equal(mine.keys, theirs.keys) and torch.equal(mine.values, theirs.values)
        assert torch.equal(mine.positions, theirs.positions)
    copy[0].segments["a"].append(*_tokens(40, 30))  # adopted tensors are never written in place
    assert len(store[0].segments["a"]) == 18
    clone = store.clone()
    assert clone.quant == store.quant
    assert torch.equal(clone[0].segments["a"].keys, store[0].segments["a"].keys)


def test_a_quantized_store_adopts_a_plain_state():
    plain = KVStore(1, 2, 16, torch.float32, "cpu")
    plain[0].segment("a").append(*_tokens(0, 20))
    quant = KVStore(1, 2, 16, torch.float32, "cpu", quant=QuantSpec(8, 8))
    quant.load_state_dict(plain.state_dict())
    assert (quant[0].segments["a"].keys - plain[0].segments["a"].keys).abs().max() < 0.05


@pytest.mark.parametrize("bits,limit", [(8, 0.27), (4, 0.15)])
@pytest.mark.parametrize("n", [1024, 4095])
def test_bytes_per_token_against_float32(bits, limit, n):
    """SmolLM2's shape (3 KV heads of 64, groups of 64): int8 <= 0.27x of float32, int4 about half
    that, everything counted (positions too), also at 4K with the longest key tail (63 tokens)."""
    plain = KVStore(1, 3, 64, torch.float32, "cpu")
    quant = KVStore(1, 3, 64, torch.float32, "cpu", quant=QuantSpec(bits, 64))
    keys, values = torch.randn(1, 3, n, 64), torch.randn(1, 3, n, 64)
    for store in (plain, quant):
        store[0].segment("s").append(keys, values, torch.arange(n))
    assert quant.nbytes <= limit * plain.nbytes


@pytest.mark.parametrize("bits", [8, 4])
def test_codes_do_not_depend_on_how_tokens_arrive(bits):
    """Every key passes through the float16 tail, so one append or many give the same codes, tail and
    reads; the tail holds the newest keys to float16 precision."""
    keys, values, positions = _tokens(0, 43)
    whole = QuantizedSegment(1, 2, 16, torch.float32, "cpu", QuantSpec(bits, 8))
    whole.append(keys, values, positions)
    pieces = QuantizedSegment(1, 2, 16, torch.float32, "cpu", QuantSpec(bits, 8))
    for a, b in ((0, 1), (1, 6), (6, 13), (13, 14), (14, 43)):
        pieces.append(keys[:, :, a:b], values[:, :, a:b], positions[a:b])
    for name, tensor in whole.state_dict().items():
        assert torch.equal(pieces.state_dict()[name], tensor), name
    assert whole.state_dict()["tail_keys"].dtype == torch.float16
    torch.testing.assert_close(whole.keys[:, :, 40:], keys[:, :, 40:], rtol=1e-3, atol=1e-3)
    assert whole.keys.dtype == torch.float32


@pytest.mark.parametrize("quant", [None, QuantSpec(8, 8)])
def test_positions_are_stored_as_int32_and_read_as_int64(quant):
    """Positions cost 4 bytes per token; every read gives int64; a context saved with int64
    positions (before) still loads."""
    segment = KVStore(1, 2, 16, torch.float32, "cpu", quant=quant)[0].segment("s")
    segment.append(*_tokens(0, 21))
    assert segment._positions.dtype == torch.int32
    assert segment.positions.dtype == segment.slice(3, 9)[2].dtype == torch.long
    assert segment.gather(torch.tensor([0, 20, 5]))[2].tolist() == [0, 20, 5]
    old = {name: t.long() if name == "positions" else t for name, t in segment.state_dict().items()}
    assert segment.state_dict()["positions"].dtype == torch.int32
    restored = KVStore(1, 2, 16, torch.float32, "cpu", quant=quant)[0].segment("s")
    restored.load_state_dict(old)
    restored.append(*_tokens(21, 3))
    assert restored.positions.tolist() == list(range(24)) and restored._positions.dtype == torch.int32


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("n", [21, 24])
def test_bytes_are_counted_by_hand(bits, n):
    """2 KV heads of 16 channels, groups of 8: what a quantized store holds, byte by byte.

    Keys: the whole groups of 8 tokens as codes with a float16 scale and zero point per group, head
    and channel; the last n % 8 keys in float16 (the model is float32). Values: every token as codes
    with a float16 scale and zero point per token, head and group of 8 channels. Positions: one int32
    per token. The
    rotated-key cache, once built, adds codes, scales and zero points for the quantized keys only.
    """
    store = KVStore(1, 2, 16, torch.float32, "cpu", quant=QuantSpec(bits, 8))
    segment = store[0].segment("s")
    segment.append(*_tokens(0, n))
    code = bits / 8  # bytes per code
    grouped = n // 8 * 8
    keys = grouped * 2 * 16 * code + (n // 8) * 2 * 16 * (2 + 2) + (n - grouped) * 2 * 16 * 2
    values = n * 2 * 16 * code + n * 2 * (16 // 8) * (2 + 2)
    assert segment.nbytes == store.nbytes == keys + values + n * 4
    rope = RotaryEmbedding(LlamaConfig(head_dim=16, hidden_size=32, num_attention_heads=2), 16)
    segment.rotated_keys(rope)
    rotated = grouped * 2 * 16 * code + (n // 8) * 2 * 16 * (2 + 2)
    assert store.nbytes == keys + values + n * 4 + rotated


def test_quantization_is_chosen_before_storing():
    store = KVStore(1, 2, 16, torch.float32, "cpu")
    store[0].segment("a").append(*_tokens(0, 2))
    with pytest.raises(ValueError, match="before anything is stored"):
        store.set_quant(QuantSpec(8))


def test_adopted_codes_are_not_copied_when_the_segment_grows():
    """A stored context's quantized rows stay in their (mapped) tensors when tokens are appended;
    every read equals a segment that quantized all tokens itself, and saving joins the codes exactly."""
    spec = QuantSpec(8, 8)
    saved = KVStore(1, 2, 16, torch.float32, "cpu", quant=spec)[0].segment("m")
    saved.append(*_tokens(0, 43))  # 40 quantized key rows and a tail of 3
    saved.drop_front(2)
    state = {name: t.clone() for name, t in saved.state_dict().items()}
    adopted = {name: t.clone() for name, t in state.items()}
    seg = KVStore(1, 2, 16, torch.float32, "cpu", quant=spec)[0].segment("m")
    seg.load_state_dict(adopted)
    reference = KVStore(1, 2, 16, torch.float32, "cpu", quant=spec)[0].segment("m")
    reference.load_state_dict(state)
    reference._adopted = False  # grows by copying, as a segment built in memory does
    for start in (43, 55):
        for s in (seg, reference):
            s.append(*_tokens(start, 12))
    assert seg._base is not None and seg._base._k.codes is adopted["key_codes"]
    assert len(seg) == len(reference) == 65 and torch.equal(seg.positions, reference.positions)
    assert torch.equal(torch.cat(seg.key_parts(), 2), reference.keys) and len(seg.key_parts()) == 2
    assert torch.equal(seg.values, reference.values)
    rope = RotaryEmbedding(LlamaConfig(head_dim=16, hidden_size=32, num_attention_heads=2), 16)
    torch.testing.assert_close(seg.rotated_keys(rope), reference.rotated_keys(rope))
    assert_same_reads(seg, reference, [45, 3, 60, 37, 38, 0, 64], [[1, 50, 37, 64], [44, 2, 38, 7]],
                      [(0, 8), (30, 40), (41, 50)])
    assert seg.nbytes == reference.nbytes
    joined = KVStore(1, 2, 16, torch.float32, "cpu", quant=spec)[0].segment("m")
    joined.load_state_dict(seg.state_dict())
    assert torch.equal(joined.keys, reference.keys) and torch.equal(joined.values, reference.values)
    seg.drop_front(45)  # past the adopted rows
    reference.drop_front(45)
    assert seg._base is None and torch.equal(seg.keys, reference.keys)
    for name, tensor in state.items():
        assert torch.equal(adopted[name], tensor)  # never written


@pytest.mark.parametrize("bits", [8, 4])
def test_key_runs_are_dequantized_one_by_one_and_join_to_the_keys(bits):
    torch.manual_seed(0)
    live = QuantizedSegment(1, 2, 8, torch.float32, torch.device("cpu"), QuantSpec(bits, 32))
    live.append(torch.randn(1, 2, 256, 8), torch.randn(1, 2, 256, 8), torch.arange(256))
    seg = QuantizedSegment(1, 2, 8, torch.float32, torch.device("cpu"), QuantSpec(bits, 32))
    seg.load_state_dict({name: t.clone() for name, t in live.state_dict().items()})
    seg.append(torch.randn(1, 2, 80, 8), torch.randn(1, 2, 80, 8), torch.arange(256, 336))  # a stored base + more
    for step, align in ((64, 64), (128, 32), (1008, 16), (200, 100)):  # 256 % 100: the base is joined first
        runs = list(seg.key_runs(step, align))
        assert all(0 < run.shape[2] <= step for run in runs)
        assert all(sum(run.shape[2] for run in runs[:i]) % align == 0 for i in range(len(runs)))
        assert torch.equal(torch.cat(runs, 2), seg.keys)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("per_channel", [True, False])
def test_read_range_of_any_rows_equals_the_same_rows_of_a_whole_read(bits, per_channel):
    """Ranges with partial key groups at either edge, into a new tensor or into part of a larger one."""
    from longreach.kv.quant import _Codes
    x = torch.randn(2, 3, 32, 16) * torch.linspace(0.1, 4.0, 16)
    codes = _Codes(x, QuantSpec(bits, 8), per_channel, 32)
    codes.write(0, x)
    whole = codes.read_range(0, 32, torch.float32)
    assert (whole - x).abs().max() < (0.05 if bits == 8 else 0.6)
    for a, b in [(0, 8), (8, 24), (3, 8), (8, 13), (5, 29), (31, 32), (0, 32)]:
        torch.testing.assert_close(codes.read_range(a, b, torch.float32), whole[:, :, a:b], rtol=0, atol=0)
        into = torch.full((2, 3, 40, 16), float("nan"))
        got = codes.read_range(a, b, torch.float32, out=into[:, :, 4:4 + b - a])
        assert got.data_ptr() == into[:, :, 4:].data_ptr()
        torch.testing.assert_close(into[:, :, 4:4 + b - a], whole[:, :, a:b], rtol=0, atol=0)
        assert bool(into[:, :, :4].isnan().all()) and bool(into[:, :, 4 + b - a:].isnan().all())
