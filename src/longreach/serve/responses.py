"""Shaping finished jobs into OpenAI responses, and job events into server-sent events."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse

from .errors import APIError
from .jobs import Generated
from .prompts import PromptIds
from .schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChunkChoice,
    ChunkDelta,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    Usage,
    new_id,
)
from .worker import Job

DONE = "data: [DONE]\n\n"


def usage(generations: list[Generated]) -> Usage:
    """Usage summed over choices; prompt tokens include the cached ones (OpenAI's convention)."""
    cached = sum(g.cached_tokens for g in generations)
    prompt = sum(g.prompt_tokens for g in generations) + cached
    return Usage.of(prompt, sum(len(g.token_ids) for g in generations), cached)


def chat_completion(model: str, generated: Generated) -> ChatCompletion:
    message = AssistantMessage(content=generated.text)
    choice = ChatChoice(message=message, finish_reason=generated.finish_reason)
    return ChatCompletion(model=model, choices=[choice], usage=usage([generated]))


def completion(model: str, generations: list[Generated], prompts: list[PromptIds], echo: bool) -> Completion:
    choices = []
    for index, (generated, prompt) in enumerate(zip(generations, prompts, strict=True)):
        prefix = prompt.text if echo else ""
        logprobs = None
        if generated.logprobs is not None:
            lp = generated.logprobs
            offset, offsets = (0 if echo else len(prompt.text)), []
            for token in lp.tokens:
                offsets.append(offset)
                offset += len(token)
            logprobs = CompletionLogprobs(tokens=lp.tokens, token_logprobs=lp.token_logprobs,
                                          top_logprobs=lp.top_logprobs, text_offset=offsets)
        choices.append(CompletionChoice(index=index, text=prefix + generated.text,
                                        finish_reason=generated.finish_reason, logprobs=logprobs))
    return Completion(model=model, choices=choices, usage=usage(generations))


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


class JobStream(StreamingResponse):
    """A server-sent event stream that cancels its job however the stream ends (client gone included)."""

    def __init__(self, job: Job, events: AsyncIterator[str]):
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.job = job

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


async def job_events(job: Job, keepalive: float) -> AsyncIterator[tuple[str, object]]:
    """(kind, data) of a job's events; ("comment", text) while waiting, so proxies and clients stay."""
    started = False
    while True:
        event = await job.channel.get(keepalive)
        if event is None:
            yield "comment", "keep-alive" if started else "queued"
            continue
        started = started or event.kind == "start"
        if event.kind == "progress":
            done, total = event.data
            yield "comment", f"prefill {done}/{total}"
            continue
        yield event.kind, event.data
        if event.kind in ("result", "error"):
            return


async def chat_stream(job: Job, model: str, include_usage: bool, keepalive: float) -> AsyncIterator[str]:
    """OpenAI chat.completion.chunk events, ending with `data: [DONE]`."""
    stream_id, created = new_id("chatcmpl"), int(time.time())

    def chunk(delta: ChunkDelta, finish: str | None = None) -> str:
        choice = ChunkChoice(delta=delta, finish_reason=finish)
        payload = ChatCompletionChunk(id=stream_id, created=created, model=model, choices=[choice])
        return sse(payload.model_dump())

    async for kind, data in job_events(job, keepalive):
        if kind == "comment":
            yield f": {data}\n\n"
        elif kind == "start":
            yield chunk(ChunkDelta(role="assistant", content=""))
        elif kind == "piece":
            yield chunk(ChunkDelta(content=data[1]))
        elif kind == "result":
            yield chunk(ChunkDelta(), data.finish_reason)
            if include_usage:
                yield sse(ChatCompletionChunk(id=stream_id, created=created, model=model, choices=[],
                                              usage=usage([data])).model_dump())
        elif kind == "error":
            yield sse(data.body())
    yield DONE


async def completion_stream(job: Job, model: str, prompt: PromptIds, echo: bool, include_usage: bool,
                            keepalive: float) -> AsyncIterator[str]:
    """OpenAI text_completion events for one prompt, ending with `data: [DONE]`."""
    stream_id, created = new_id("cmpl"), int(time.time())

    def chunk(text: str, finish: str | None = None, usage_: Usage | None = None, choices: bool = True) -> str:
        items = [CompletionChoice(text=text, finish_reason=finish)] if choices else []
        return sse(Completion(id=stream_id, created=created, model=model, choices=items, usage=usage_)
                   .model_dump())

    async for kind, data in job_events(job, keepalive):
        if kind == "comment":
            yield f": {data}\n\n"
        elif kind == "start" and echo:
            yield chunk(prompt.text)
        elif kind == "piece":
            yield chunk(data[1])
        elif kind == "result":
            yield chunk("", data[0].finish_reason)
            if include_usage:
                yield chunk("", usage_=usage(data), choices=False)
        elif kind == "error":
            yield sse(data.body())
    yield DONE


async def wait_result(job: Job, request: Request, poll: float = 1.0):
    """The job's result; its APIError is raised; a client that disconnects cancels the job."""
    try:
        while True:
            event = await job.channel.get(poll)
            if event is None:
                if await request.is_disconnected():
                    raise APIError(499, "the client closed the request", "cancelled")
                continue
            if event.kind == "result":
                return event.data
            if event.kind == "error":
                raise event.data
    finally:
        job.cancel()
