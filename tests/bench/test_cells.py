import pytest

from longreach.bench.cells import Cell, MethodSpec, parse_depths, parse_lengths, parse_methods
from longreach.errors import LongreachError


def test_lengths_lists_and_ranges():
    assert parse_lengths("4k,8k,16k,32k") == [4096, 8192, 16384, 32768]
    assert parse_lengths("8k, 4k,4k") == [4096, 8192]
    spread = parse_lengths("2k:64k:8")
    assert spread[0] == 2048 and spread[-1] == 65536 and len(spread) == 8


def test_depths_are_percent_to_fractions():
    assert parse_depths("0:100:11") == [i / 10 for i in range(11)]
    assert parse_depths("10,50") == [0.1, 0.5]


@pytest.mark.parametrize("text", ["", "4k:8k", "8k:4k:3", "abc", "4k:8k:x"])
def test_bad_lengths(text):
    with pytest.raises(LongreachError):
        parse_lengths(text)


def test_bad_depth():
    with pytest.raises(LongreachError, match="outside"):
        parse_depths("0,150")


def test_methods_with_options_and_continuations():
    specs = parse_methods(["infllm:selection=question,topk_blocks=12,dense", "streaming"])
    assert [s.name for s in specs] == ["infllm", "dense", "streaming"]
    assert dict(specs[0].options) == {"selection": "question", "topk_blocks": "12"}
    assert specs[0].label == "infllm[selection=question,topk_blocks=12]"
    assert specs[1].label == "dense"


def test_values_canonical_and_defaults_dropped():
    a, = parse_methods(["infllm:n_local=2k,topk_blocks=8"])  # 8 is the default
    assert a.label == "infllm[n_local=2048]"
    assert parse_methods(["infllm:n_local=2048"]) == [a]


def test_shared_options_go_to_methods_that_have_them():
    specs = parse_methods(["dense,streaming"], {"window": "512"})
    assert specs == [MethodSpec("dense"), MethodSpec("streaming", (("window", "512"),))]
    with pytest.raises(LongreachError, match="apply to none"):
        parse_methods(["dense"], {"window": "512"})


@pytest.mark.parametrize("item, message", [
    ("nosuch", "unknown method"), ("infllm:topk_blocks", "KEY=VALUE"), ("infllm:bogus=1", "unknown option"),
    ("topk_blocks=3", "before any method"), ("infllm:topk_blocks=x", "not a valid"), (",", "no method")])
def test_bad_methods(item, message):
    with pytest.raises(LongreachError, match=message):
        parse_methods([item])


def test_cell_keys_distinguish_every_coordinate():
    keys = {Cell("niah", "niah", 4096, 0.5, 0).key("dense"), Cell("niah", "niah", 4096, 0.25, 0).key("dense"),
            Cell("niah", "niah", 8192, 0.5, 0).key("dense"), Cell("niah", "niah", 4096, 0.5, 1).key("dense"),
            Cell("niah", "niah", 4096, 0.5, 0).key("infllm")}
    assert len(keys) == 5
    assert Cell("ruler", "vt", 4096, None, 2).key("dense") == "ruler/vt/4096/-/2/dense"
