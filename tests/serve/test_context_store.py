"""The context store: safe ids, add/list/remove, LRU of mapped contexts, damage and mismatch reported."""

from __future__ import annotations

import pytest
from serve_helpers import INFLLM_OPTIONS, document

from longreach.kv.persist import TENSORS_FILE, CorruptMemory, Fingerprint, IncompatibleMemory
from longreach.serve.contexts import (
    ContextExists,
    ContextNotFound,
    ContextStore,
    ContextTooLong,
    InvalidContextId,
    validate_id,
)


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", ".hidden", "..", "a..b", "x" * 65, "nul\x00", "é", "-a",
                                 "/abs", "a\\b", " a"])
def test_unsafe_ids_are_refused(bad):
    with pytest.raises(InvalidContextId):
        validate_id(bad)


@pytest.mark.parametrize("good", ["manual", "Report_2024-v1.2", "a", "x" * 64])
def test_safe_ids(good):
    assert validate_id(good) == good


@pytest.fixture
def store(tmp_path, chat_lm):
    return ContextStore(tmp_path / "store", Fingerprint.of(chat_lm))


def test_add_list_load_remove(store, chat_lm):
    info = store.add(chat_lm, "manual", document(30))
    assert info.status == "ready" and info.tokens > 300 and info.bytes > 0 and info.format == "chat"
    assert [i.id for i in store.list()] == ["manual"]
    memory = store.load(chat_lm, "manual")
    assert memory.position == info.tokens and store.load(chat_lm, "manual") is memory  # cached
    with pytest.raises(ContextExists):
        store.add(chat_lm, "manual", "other text")
    store.remove("manual")
    assert store.list() == [] and list(store.root.iterdir()) == []
    with pytest.raises(ContextNotFound):
        store.load(chat_lm, "manual")
    with pytest.raises(ContextNotFound):
        store.remove("manual")


def test_too_long_documents_are_refused(store, chat_lm):
    with pytest.raises(ContextTooLong, match="at most 50"):
        store.add(chat_lm, "big", document(30), max_tokens=50)
    assert store.list() == []


def test_lru_keeps_recent_contexts_within_the_byte_limit(store, chat_lm):
    a = store.add(chat_lm, "a", document(20))
    store.add(chat_lm, "b", document(25))
    store.cache_bytes = a.bytes + 1  # room for one
    for name in ("a", "b", "a"):
        store.load(chat_lm, name)
    assert store.loads_from_disk == 3
    store.cache_bytes = 1 << 30
    for name in ("b", "a", "b"):
        store.load(chat_lm, name)
    assert store.loads_from_disk == 4


def test_replaced_context_is_reloaded(store, chat_lm):
    store.add(chat_lm, "doc", document(10))
    first = store.load(chat_lm, "doc")
    store.remove("doc")
    store.add(chat_lm, "doc", document(40))
    assert store.load(chat_lm, "doc").position > first.position


def test_corrupt_context_is_reported_and_the_rest_stays_usable(store, chat_lm):
    store.add(chat_lm, "good", document(10))
    store.add(chat_lm, "broken", document(12))
    path = store.path("broken") / TENSORS_FILE
    path.write_bytes(path.read_bytes()[:-10])
    listed = {i.id: i for i in store.list()}
    assert listed["good"].status == "ready"
    assert listed["broken"].status == "corrupt" and "bytes" in listed["broken"].error
    with pytest.raises(CorruptMemory, match="'broken' is corrupt"):
        store.load(chat_lm, "broken")
    assert store.load(chat_lm, "good").position > 0
    (store.path("good") / "manifest.json").write_text("garbage")
    assert store.info("good").status == "corrupt"
    store.remove("broken")  # damaged contexts can still be removed


def test_context_of_another_method_config_is_refused_clearly(store, chat_lm):
    store.add(chat_lm, "doc", document(10))
    other = chat_lm.with_method("infllm", **{**INFLLM_OPTIONS, "topk_blocks": 2})
    other_store = ContextStore(store.root, Fingerprint.of(other))
    assert other_store.info("doc").status == "incompatible"
    with pytest.raises(IncompatibleMemory, match="topk_blocks=4.*add it again"):
        other_store.load(other, "doc")
