"""kv.persist: a session's memory saved and mapped back gives the same generations, for every method."""

from __future__ import annotations

import json
import os
import threading

import pytest
import torch
from safetensors import safe_open

from longreach.kv import tensorfile
from longreach.kv.persist import (
    LAST_LOGITS,
    MANIFEST_FILE,
    TEMP_PREFIX,
    TENSORS_FILE,
    CorruptMemory,
    Fingerprint,
    IncompatibleMemory,
    load_session,
    read_manifest,
    remove_stale_temporaries,
    save_session,
)
from longreach.kv.tensorfile import map_tensors, write_tensors
from tiny import prompt_ids, tiny_hf_model, tiny_lm

OPTIONS = {
    "dense": {},
    "streaming": {"n_sink": 4, "window": 40},
    "infllm": {"n_local": 32, "n_init": 4, "block_size": 8, "topk_blocks": 2, "exec_block": 16},
}


def _saved(tmp_path, method="infllm", model=None, n=200):
    lm = tiny_lm(method=method, model=model if model is not None else tiny_hf_model(), prefill_chunk=64,
                 **OPTIONS[method])
    ids = prompt_ids(n)
    session = lm.new_session()
    last = session.prefill(ids, 64)
    manifest = save_session(session, tmp_path / "ctx", Fingerprint.of(lm), ids, last_logits=last)
    return lm, session, manifest


@pytest.mark.parametrize("method", list(OPTIONS))
def test_round_trip_generates_like_the_live_session(tmp_path, method):
    lm, session, manifest = _saved(tmp_path, method)
    memory = load_session(lm, tmp_path / "ctx", verify=True)
    assert memory.position == session.position == 200 and manifest.token_ids == prompt_ids(200)
    before = {name: tensor.clone() for name, tensor in memory.state.items()}
    question = prompt_ids(30, seed=7)
    from_disk = [lm.generate(question, 12, context=memory) for _ in range(2)]
    live = lm.generate(question, 12, context=session)
    assert from_disk[0].token_ids == from_disk[1].token_ids == live.token_ids
    assert from_disk[0].stats.cached_tokens == 200
    # Forks share the mapped tensors: generation must never write into them.
    assert all(torch.equal(before[name], memory.state[name]) for name in before)


def test_files_are_standard_safetensors(tmp_path):
    _, session, _ = _saved(tmp_path)
    expected = session.store.state_dict()
    with safe_open(str(tmp_path / "ctx" / TENSORS_FILE), "pt") as f:
        assert set(f.keys()) == set(expected) | {LAST_LOGITS}
        for name in expected:
            assert torch.equal(f.get_tensor(name), expected[name])


def test_tensorfile_handles_dtypes_and_empty_tensors(tmp_path):
    tensors = {"a": torch.randn(2, 3), "b": torch.arange(5), "c": torch.randn(4).to(torch.bfloat16),
               "empty": torch.empty(1, 2, 0, 4), "flag": torch.tensor([True, False])}
    write_tensors(tmp_path / "t.safetensors", tensors)
    mapped = map_tensors(tmp_path / "t.safetensors")
    for name, tensor in tensors.items():
        assert mapped[name].dtype == tensor.dtype and torch.equal(mapped[name], tensor)


@pytest.mark.parametrize("kv_quant", [None, "int8"])
def test_loading_reads_ahead_all_but_the_memory_values(tmp_path, monkeypatch, kv_quant):
    hinted = threading.Event()
    ranges: list = []

    def record(wanted, mapped):
        ranges.extend(wanted)
        hinted.set()

    monkeypatch.setattr(tensorfile, "_will_need", record)
    lm = tiny_lm(method="infllm", model=tiny_hf_model(), prefill_chunk=64, kv_quant=kv_quant,
                 **OPTIONS["infllm"])
    session = lm.new_session()
    session.prefill(prompt_ids(200), 64)
    save_session(session, tmp_path / "ctx", Fingerprint.of(lm), prompt_ids(200))
    memory = load_session(lm, tmp_path / "ctx")
    assert hinted.wait(10)
    tensors = {**memory.state, LAST_LOGITS: memory.last_logits} if memory.last_logits is not None else memory.state
    at = {t.data_ptr(): name for name, t in tensors.items() if t.numel()}
    assert all(length == tensors[at[address]].nbytes for address, length in ranges)
    hinted_names = [at[address] for address, _ in ranges]
    skipped = set(at.values()) - set(hinted_names)
    layers_with_memory = {n.split(".")[0] for n in tensors if ".cold.memory.key" in n}
    assert layers_with_memory and {n.split(".")[0] for n in skipped} == layers_with_memory
    assert all(".cold.memory.value" in n for n in skipped)  # only the offloaded memory's values (or codes)
    layers = [int(n.split(".")[0]) for n in hinted_names if n[0].isdigit()]
    assert layers == sorted(layers)  # layer by layer, as a forward pass reads them
    floats = [r for r in ranges if tensors[at[r[0]]].dtype == torch.float32]
    assert floats == sorted(floats)  # tensors of one element size: also file order, one sequential read


def test_tensors_are_written_layer_by_layer_in_natural_order(tmp_path):
    names = ["10.cold.memory.keys", "2.cold.memory.keys", "1.cold.memory.keys", "2.buf.repr", "pos"]
    tensors = {name: torch.full((4,), float(i)) for i, name in enumerate(names)}
    tensors["pos"] = torch.arange(3)  # int64: larger elements come first whatever the name
    write_tensors(tmp_path / "t.safetensors", tensors)
    with safe_open(tmp_path / "t.safetensors", "pt") as f:
        assert set(f.keys()) == set(names)  # still a file the library reads
    raw = (tmp_path / "t.safetensors").read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    in_file = sorted(header, key=lambda name: header[name]["data_offsets"][0])
    assert in_file == ["pos", "1.cold.memory.keys", "2.buf.repr", "2.cold.memory.keys", "10.cold.memory.keys"]


def test_other_method_options_or_model_are_refused(tmp_path):
    lm, _, _ = _saved(tmp_path)
    other_options = lm.with_method("infllm", **{**OPTIONS["infllm"], "topk_blocks": 3})
    with pytest.raises(IncompatibleMemory, match="topk_blocks=2"):
        load_session(other_options, tmp_path / "ctx")
    other_model = tiny_lm(method="infllm", model=tiny_hf_model(seed=1), **OPTIONS["infllm"])
    with pytest.raises(IncompatibleMemory, match="another model"):
        load_session(other_model, tmp_path / "ctx")


def test_truncated_or_damaged_files_are_reported(tmp_path):
    lm, _, manifest = _saved(tmp_path)
    path = tmp_path / "ctx" / TENSORS_FILE
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(CorruptMemory, match="bytes"):
        load_session(lm, tmp_path / "ctx")
    flipped = bytearray(data)
    flipped[-50] ^= 0xFF
    path.write_bytes(bytes(flipped))
    load_session(lm, tmp_path / "ctx")  # only the header is checked by default (lazy loading)
    with pytest.raises(CorruptMemory, match="checksum"):
        load_session(lm, tmp_path / "ctx", verify=True)
    header = bytearray(data)
    header[20] ^= 0x01
    path.write_bytes(bytes(header))
    with pytest.raises(CorruptMemory):
        load_session(lm, tmp_path / "ctx")
    (tmp_path / "ctx" / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(CorruptMemory, match="unreadable"):
        read_manifest(tmp_path / "ctx")
    tampered = manifest.to_dict()
    tampered["token_ids"] = tampered["token_ids"][:-1]
    (tmp_path / "ctx" / MANIFEST_FILE).write_text(json.dumps(tampered))
    with pytest.raises(CorruptMemory, match="token ids"):
        read_manifest(tmp_path / "ctx")


def test_interrupted_write_leaves_nothing(tmp_path):
    lm = tiny_lm(method="dense")
    session = lm.new_session()
    session.prefill(prompt_ids(50), 64)
    with pytest.raises(InterruptedError):
        save_session(session, tmp_path / "ctx", Fingerprint.of(lm), prompt_ids(50), should_stop=lambda: True)
    assert list(tmp_path.iterdir()) == []
    save_session(session, tmp_path / "ctx", Fingerprint.of(lm), prompt_ids(50))
    with pytest.raises(FileExistsError):
        save_session(session, tmp_path / "ctx", Fingerprint.of(lm), prompt_ids(50))


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = tmp_path / f"{TEMP_PREFIX}ctx-999999999-abcd"  # no such pid
    dead.mkdir()
    (dead / TENSORS_FILE).write_bytes(b"half")
    alive = tmp_path / f"{TEMP_PREFIX}ctx-{os.getpid()}-abcd"
    alive.mkdir()
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert not dead.exists() and alive.exists()
