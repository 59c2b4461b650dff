"""The OpenAI-compatible API on a real uvicorn server, driven by the official `openai` client."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import torch
from serve_helpers import document

CHAT = [{"role": "user", "content": "Name three colours."}]


def test_health_is_open_and_models_need_the_key(server):
    assert server.health()["status"] == "ok"
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["longreach"]
    with pytest.raises(openai.AuthenticationError) as exc:
        server.client(api_key="wrong").models.list()
    assert exc.value.status_code == 401 and exc.value.body["code"] == "invalid_api_key"
    response = httpx.get(f"{server.url}/v1/models")
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"


def test_chat_completion(server):
    client = server.client()
    first = client.chat.completions.create(model="longreach", messages=CHAT, max_tokens=8, temperature=0)
    again = client.chat.completions.create(model="longreach", messages=CHAT, max_tokens=8, temperature=0)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].finish_reason in ("length", "stop")
    assert first.usage.completion_tokens <= 8 and first.usage.prompt_tokens > 10
    assert first.usage.prompt_tokens_details.cached_tokens == 0


def test_streaming_matches_the_full_answer(server):
    client = server.client()
    full = client.chat.completions.create(model="longreach", messages=CHAT, max_tokens=12, temperature=0)
    stream = client.chat.completions.create(model="longreach", messages=CHAT, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == full.choices[0].finish_reason
    assert chunks[-1].usage.total_tokens == full.usage.total_tokens


def test_stream_sends_prefill_progress_then_done(server):
    messages = [{"role": "user", "content": document(40)}]  # ~900 tokens, 64 per chunk
    body = {"model": "longreach", "messages": messages, "max_tokens": 3, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=server.headers(),
                      timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    progress = [line for line in lines if line.startswith(": prefill")]
    assert len(progress) >= 10 and progress[-1].split()[-1].split("/")[0] == progress[-1].split("/")[-1]
    data = [line for line in lines if line.startswith("data: ")]
    assert data[-1] == "data: [DONE]"
    assert json.loads(data[0][6:])["object"] == "chat.completion.chunk"


def test_completion_echo_logprobs_match_the_model(server, chat_lm):
    prompt = chat_lm.encode("The lamp in room seven was checked on day three.")
    result = server.client().completions.create(model="longreach", prompt=prompt, max_tokens=1, echo=True,
                                                logprobs=1, temperature=0)
    lp = result.choices[0].logprobs
    assert len(lp.token_logprobs) == len(prompt) + 1 and lp.token_logprobs[0] is None
    generated = lp.top_logprobs[-1]
    assert lp.token_logprobs[-1] == max(generated.values())  # greedy: the chosen token is the best
    session = chat_lm.new_session()
    expected = session.prefill(prompt, 64, all_logits=True).log_softmax(-1)
    want = expected[:-1].gather(1, torch.tensor(prompt[1:])[:, None])[:, 0]
    torch.testing.assert_close(torch.tensor(lp.token_logprobs[1:-1]), want, rtol=1e-4, atol=1e-4)
    assert result.choices[0].text.startswith(chat_lm.tokenizer.decode(prompt))
    assert result.usage.prompt_tokens == len(prompt) and result.usage.completion_tokens == 1


def test_completion_batch_and_stream(server):
    client = server.client()
    batch = client.completions.create(model="longreach", prompt=["Once upon", "The end"], max_tokens=4,
                                      temperature=0)
    assert [c.index for c in batch.choices] == [0, 1]
    single = client.completions.create(model="longreach", prompt="Once upon", max_tokens=4, temperature=0)
    assert single.choices[0].text == batch.choices[0].text
    streamed = client.completions.create(model="longreach", prompt="Once upon", max_tokens=4, temperature=0,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == single.choices[0].text


def _error(call):
    with pytest.raises(openai.APIStatusError) as exc:
        call()
    return exc.value


def test_errors_have_the_openai_shape_and_status(server):
    client = server.client()
    err = _error(lambda: client.chat.completions.create(model="gpt-4", messages=CHAT))
    assert err.status_code == 404 and err.body["code"] == "model_not_found"
    long_prompt = [{"role": "user", "content": document(80)}]  # > 1500 tokens
    err = _error(lambda: client.chat.completions.create(model="longreach", messages=long_prompt))
    assert err.status_code == 400 and err.body["code"] == "context_length_exceeded"
    err = _error(lambda: client.chat.completions.create(model="longreach", messages=CHAT, max_tokens=10**6))
    assert err.status_code == 400 and err.body["param"] == "max_tokens"
    err = _error(lambda: client.chat.completions.create(model="longreach", messages=CHAT, temperature=-1))
    assert err.status_code == 400 and "temperature" in err.body["message"]
    err = _error(lambda: client.chat.completions.create(model="longreach", messages=[]))
    assert err.status_code == 400
    headers = {**server.headers(), "Content-Type": "application/json"}
    bad_json = httpx.post(f"{server.url}/v1/chat/completions", content=b'{"model": ', headers=headers)
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    huge = httpx.post(f"{server.url}/v1/completions", json={"prompt": "x" * 200_000},
                      headers=server.headers())
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "body_too_large"
    missing = httpx.get(f"{server.url}/v1/nothing", headers=server.headers())
    assert missing.status_code == 404 and "error" in missing.json()
    assert server.health()["status"] == "ok"


def test_context_routes(server):
    headers, url = server.headers(), f"{server.url}/v1/contexts"
    created = httpx.post(url, json={"name": "api-doc", "text": document(30)}, headers=headers, timeout=60)
    assert created.status_code == 201, created.text
    info = created.json()
    assert info["status"] == "ready" and info["tokens"] > 300
    assert httpx.post(url, json={"name": "api-doc", "text": "x"}, headers=headers).status_code == 409
    assert httpx.post(url, json={"name": "../up", "text": "x"}, headers=headers).status_code == 400
    assert httpx.get(f"{url}/bad..id", headers=headers).status_code == 400
    assert httpx.get(f"{url}/absent", headers=headers).status_code == 404
    assert "api-doc" in [c["id"] for c in httpx.get(url, headers=headers).json()["data"]]
    assert httpx.get(f"{url}/api-doc?verify=true", headers=headers).json()["status"] == "ready"
    too_big = httpx.post(url, json={"name": "big", "text": "y" * (2 << 20)}, headers=headers)
    assert too_big.status_code == 413

    client = server.client()
    reply = client.chat.completions.create(model="longreach", messages=CHAT, max_tokens=5, temperature=0,
                                           extra_body={"context_id": "api-doc"})
    assert reply.usage.prompt_tokens_details.cached_tokens == info["tokens"]
    assert reply.usage.prompt_tokens > info["tokens"]
    err = _error(lambda: client.chat.completions.create(model="longreach", messages=CHAT,
                                                        extra_body={"context_id": "absent"}))
    assert err.status_code == 404 and err.body["code"] == "context_not_found"
    err = _error(lambda: client.chat.completions.create(model="longreach", messages=CHAT,
                                                        extra_body={"context_id": "../../etc/passwd"}))
    assert err.status_code == 400 and err.body["code"] == "invalid_context_id"
    assert httpx.delete(f"{url}/api-doc", headers=headers).json()["deleted"] is True
    assert httpx.delete(f"{url}/api-doc", headers=headers).status_code == 404


def test_completion_over_a_raw_context_scores_its_first_token(server, chat_lm):
    text = document(25)
    created = httpx.post(f"{server.url}/v1/contexts", json={"name": "raw-doc", "text": text, "format": "raw"},
                         headers=server.headers(), timeout=60)
    assert created.status_code == 201
    prompt = " The lamp in room"
    result = server.client().completions.create(model="longreach", prompt=prompt, max_tokens=0, echo=True,
                                                logprobs=2, temperature=0,
                                                extra_body={"context_id": "raw-doc"})
    lp = result.choices[0].logprobs
    assert result.usage.prompt_tokens_details.cached_tokens == created.json()["tokens"]
    assert None not in lp.token_logprobs and all(len(top) == 2 for top in lp.top_logprobs)

    session = chat_lm.new_session()  # the same steps in process: the document, then the prompt
    last = session.prefill(chat_lm.encode(text), 64, final=False).log_softmax(-1)
    ids = chat_lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    rows = torch.cat((last[None], session.prefill(ids, 64, all_logits=True).log_softmax(-1)[:-1]))
    want = rows.gather(1, torch.tensor(ids)[:, None])[:, 0]
    torch.testing.assert_close(torch.tensor(lp.token_logprobs), want, rtol=1e-4, atol=1e-4)
    err = _error(lambda: server.client().chat.completions.create(model="longreach", messages=CHAT,
                                                                 extra_body={"context_id": "raw-doc"}))
    assert err.status_code == 400 and "chat context" in err.body["message"]
