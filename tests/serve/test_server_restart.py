"""A stored context survives a restart: same answer, nothing recomputed; damage is reported, not fatal."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import openai
import pytest
from serve_helpers import Server, document

from longreach.kv.persist import TENSORS_FILE

QUESTION = [{"role": "user", "content": "What is the warranty period of the Zentrix 4000?"}]


def _ask(server: Server, context_id: str = "manual"):
    return server.client().chat.completions.create(model="longreach", messages=QUESTION, max_tokens=12,
                                                   temperature=0, extra_body={"context_id": context_id})


def _long_stream(server: Server, outcome: list) -> None:
    body = {"model": "longreach", "messages": QUESTION, "max_tokens": 3000, "temperature": 0, "stream": True}
    try:
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as response:
            outcome.append([line for line in response.iter_lines() if line.startswith("data: ")])
    except httpx.HTTPError as exc:  # the server may cut the stream when its grace period ends
        outcome.append(exc)


def test_context_survives_restart_without_reprocessing(tiny_model_dir, tmp_path):
    store = tmp_path / "store"
    extra = ["--shutdown-timeout", "2"]
    first = Server(tiny_model_dir, store, tmp_path / "first.log", extra)
    try:
        for name, text in (("manual", document(60)), ("spare", document(20))):
            created = httpx.post(f"{first.url}/v1/contexts", json={"name": name, "text": text}, timeout=120)
            assert created.status_code == 201, created.text
        tokens = httpx.get(f"{first.url}/v1/contexts/manual").json()["tokens"]
        before = _ask(first)
        assert before.usage.prompt_tokens_details.cached_tokens == tokens
        in_flight: list = []
        streamer = threading.Thread(target=_long_stream, args=(first, in_flight))
        streamer.start()
        deadline = time.monotonic() + 30
        while not first.health()["queue"]["running"] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        # Graceful stop with a generation in flight (uvicorn re-raises SIGTERM once it has shut down).
        assert first.stop() in (0, -signal.SIGTERM)
    streamer.join(timeout=30)
    assert in_flight and not streamer.is_alive()
    assert sorted(p.name for p in store.iterdir()) == ["manual", "spare"]  # no temporary left behind

    spare = store / "spare" / TENSORS_FILE
    spare.write_bytes(spare.read_bytes()[:-64])

    second = Server(tiny_model_dir, store, tmp_path / "second.log", extra)
    try:
        assert second.health()["stats"]["prefilled_tokens"] == 0
        after = _ask(second)
        assert after.choices[0].message.content == before.choices[0].message.content
        assert after.usage.prompt_tokens_details.cached_tokens == tokens
        assert after.usage.prompt_tokens == before.usage.prompt_tokens
        stats = second.health()["stats"]
        new_tokens = after.usage.prompt_tokens - tokens
        assert 0 < new_tokens < 40
        assert stats["prefilled_tokens"] == new_tokens  # only the question went through the model
        assert stats["contexts_added"] == 0 and stats["contexts_loaded_from_disk"] == 1
        streamed = second.client().chat.completions.create(
            model="longreach", messages=QUESTION, max_tokens=12, temperature=0, stream=True,
            extra_body={"context_id": "manual"})
        assert "".join(c.choices[0].delta.content or "" for c in streamed) == after.choices[0].message.content
        assert second.health()["stats"]["contexts_loaded_from_disk"] == 1  # kept in memory

        listed = {c["id"]: c for c in httpx.get(f"{second.url}/v1/contexts").json()["data"]}
        assert listed["manual"]["status"] == "ready"
        assert listed["spare"]["status"] == "corrupt" and "bytes" in listed["spare"]["error"]
        with pytest.raises(openai.APIStatusError) as exc:
            _ask(second, "spare")
        assert exc.value.status_code == 422 and exc.value.body["code"] == "context_corrupt"
        assert _ask(second).choices[0].message.content == before.choices[0].message.content
    finally:
        assert second.stop() in (0, -signal.SIGTERM)
