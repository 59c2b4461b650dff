"""The FastAPI application: OpenAI-compatible routes, the context store routes, health."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from ..errors import LongreachError
from ..kv.persist import Fingerprint
from .config import ServerConfig
from .contexts import ContextExists, ContextStore, validate_id
from .errors import APIError, bad_request, to_api_error, unknown_model
from .guard import BodyTooLarge, Guard
from .jobs import GenerateSpec, Runner
from .prompts import chat_continuation, completion_prompts
from .responses import JobStream, chat_completion, chat_stream, completion, completion_stream, wait_result
from .schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    ContextCreateRequest,
    ContextList,
    ContextObject,
    ModelCard,
    ModelList,
)
from .worker import Channel, Job, ModelWorker

log = logging.getLogger("longreach.serve")


@dataclass
class ServerState:
    """Everything one server instance owns (nothing is shared between instances)."""

    lm: object
    config: ServerConfig
    store: ContextStore
    worker: ModelWorker
    runner: Runner
    tokenizer_lock: threading.Lock
    started: int

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.config.model_name:
            raise unknown_model(name, self.config.model_name)

    def max_tokens(self, requested: int | None, default: int) -> int:
        value = default if requested is None else requested
        if value > self.config.max_new_tokens:
            limit = self.config.max_new_tokens
            raise bad_request(f"max_tokens is {value}; this server allows at most {limit}", "max_tokens")
        return value

    def check_prompt(self, n_tokens: int) -> None:
        if n_tokens > self.config.max_prompt_tokens:
            limit = self.config.max_prompt_tokens
            raise APIError(400, f"the prompt has {n_tokens} tokens; this server accepts at most {limit} new "
                                "tokens per request (store long documents as a context: POST /v1/contexts)",
                           "context_length_exceeded", "messages")

    def context_manifest(self, context_id: str, fmt: str | None = None):
        manifest = self.store.manifest(validate_id(context_id))
        if fmt is not None and manifest.extra.get("format") != fmt:
            raise bad_request(f"context {context_id!r} was added as {manifest.extra.get('format')} text; "
                              "chat requests need a chat context", "context_id")
        return manifest


def create_app(lm, config: ServerConfig) -> FastAPI:
    """Build the server for a loaded LongLM. The model worker starts and stops with the app's lifespan."""
    store = ContextStore(config.store, Fingerprint.of(lm), config.cache_bytes, config.verify_contexts)
    worker = ModelWorker(config.queue_size)
    tokenizer_lock = threading.Lock()
    runner = Runner(lm, store, worker, config.max_context_tokens, tokenizer_lock)
    state = ServerState(lm, config, store, worker, runner, tokenizer_lock, int(time.time()))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for info in await to_thread.run_sync(store.list):
            if info.status != "ready":
                log.warning("context %s is %s: %s", info.id, info.status, info.error)
        worker.start()
        yield
        await to_thread.run_sync(worker.stop, config.shutdown_grace_seconds)

    app = FastAPI(title="longreach", lifespan=lifespan)
    app.state.server = state
    app.add_middleware(Guard, api_key=config.api_key, max_body_bytes=config.max_body_bytes,
                       max_upload_bytes=config.max_upload_bytes)
    _install_error_handlers(app)
    _add_openai_routes(app, state)
    _add_context_routes(app, state)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(LongreachError)
    async def _longreach_error(request: Request, exc: LongreachError):
        return to_api_error(exc).response()

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge):
        return exc.error().response()

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return APIError(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None)).response()


async def parse_body(request: Request, schema: type[BaseModel]):
    """The request body validated against `schema`; bad JSON or fields are a 400 in the OpenAI shape."""
    raw = await request.body()
    try:  # large documents are parsed off the event loop
        data = json.loads(raw) if len(raw) < (1 << 20) else await to_thread.run_sync(json.loads, raw)
    except ValueError:
        raise APIError(400, "We could not parse the JSON body of your request: it is not valid JSON.",
                       "invalid_json") from None
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        raise bad_request(f"{where}: {first['msg']}" if where else first["msg"], where) from None


def _sampling(req) -> dict:
    if req.n != 1:
        raise bad_request("only n=1 is supported", "n")
    if req.presence_penalty or req.frequency_penalty:
        raise bad_request("presence_penalty and frequency_penalty are not supported; use repetition_penalty",
                          "presence_penalty")
    if req.logit_bias:
        raise bad_request("logit_bias is not supported", "logit_bias")
    return dict(temperature=1.0 if req.temperature is None else req.temperature,
                top_p=1.0 if req.top_p is None else req.top_p, top_k=req.top_k or 0,
                repetition_penalty=req.repetition_penalty or 1.0, seed=req.seed, stop=req.stop_strings())


async def _tokenize(state: ServerState, fn):
    def locked():
        with state.tokenizer_lock:
            return fn()
    return await to_thread.run_sync(locked)


def _add_openai_routes(app: FastAPI, state: ServerState) -> None:
    config, worker, runner = state.config, state.worker, state.runner

    @app.get("/health")
    async def health():
        running = worker.current is not None
        queue = {"waiting": worker.waiting, "capacity": worker.queue_size, "running": running}
        return {"status": "stopping" if worker.stopping else "ok", "model": config.model_name,
                "method": state.lm.method.name, "queue": queue,
                "stats": {**worker.stats(), "contexts_loaded_from_disk": state.store.loads_from_disk}}

    def card() -> ModelCard:
        method = {"name": state.lm.method.name, "options": state.lm.method.to_dict()}
        return ModelCard(id=config.model_name, created=state.started, method=method)

    @app.get("/v1/models")
    async def models():
        return ModelList(data=[card()]).model_dump()

    @app.get("/v1/models/{model:path}")
    async def model(model: str):
        state.check_model(model)
        return card().model_dump()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req = await parse_body(request, ChatCompletionRequest)
        state.check_model(req.model)
        sampling = _sampling(req)
        if req.tools or req.response_format not in (None, {"type": "text"}) or req.logprobs:
            raise bad_request("tools, response_format and logprobs are not supported for chat; "
                              "use /v1/completions for logprobs")
        max_tokens = state.max_tokens(req.max_completion_tokens or req.max_tokens, config.default_max_tokens)
        try:
            messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                        for m in req.messages]
        except ValueError as exc:
            raise bad_request(str(exc), "messages") from None

        def build() -> list[int]:
            if req.context_id is None:
                return state.lm.chat_ids(messages)
            manifest = state.context_manifest(req.context_id, "chat")
            return chat_continuation(state.lm, messages, manifest.extra.get("head", ""))

        ids = await _tokenize(state, build)
        state.check_prompt(len(ids))
        spec = GenerateSpec(ids, max_tokens, sampling, req.context_id, stream=req.stream)
        job = Job("chat", lambda job: runner.generate(job, spec), Channel(asyncio.get_running_loop()))
        worker.submit(job)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            events = chat_stream(job, config.model_name, include_usage, config.keepalive_seconds)
            return JobStream(job, events)
        generated = await wait_result(job, request)
        return chat_completion(config.model_name, generated).model_dump()

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await parse_body(request, CompletionRequest)
        state.check_model(req.model)
        sampling = _sampling(req)
        if req.suffix or (req.best_of or 1) > 1:
            raise bad_request("suffix and best_of are not supported")
        max_tokens = state.max_tokens(req.max_tokens, 16)
        if req.context_id is not None:
            await to_thread.run_sync(state.context_manifest, req.context_id)
        continues = req.context_id is not None
        prompts = await _tokenize(state, lambda: completion_prompts(state.lm, req.prompt, continues))
        for prompt in prompts:
            state.check_prompt(len(prompt.ids))
        if req.stream and (len(prompts) > 1 or req.logprobs is not None):
            raise bad_request("streaming supports one prompt and no logprobs", "stream")
        spec = GenerateSpec(prompts[0].ids, max_tokens, sampling, req.context_id, req.stream, req.logprobs,
                            req.echo)
        job = Job("completion", lambda job: runner.complete(job, prompts, spec),
                  Channel(asyncio.get_running_loop()))
        worker.submit(job)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            events = completion_stream(job, config.model_name, prompts[0], req.echo, include_usage,
                                       config.keepalive_seconds)
            return JobStream(job, events)
        generations = await wait_result(job, request)
        return completion(config.model_name, generations, prompts, req.echo).model_dump()


def _add_context_routes(app: FastAPI, state: ServerState) -> None:
    store, worker, runner = state.store, state.worker, state.runner

    @app.post("/v1/contexts", status_code=201)
    async def add_context(request: Request):
        req = await parse_body(request, ContextCreateRequest)
        path = store.path(req.name)
        if path.exists():
            raise ContextExists(f"context {req.name!r} already exists; remove it first")
        job = Job("add-context", lambda job: runner.add_context(job, req.name, req.text, req.format,
                                                                 req.system),
                  Channel(asyncio.get_running_loop()))
        worker.submit(job)
        info = await wait_result(job, request)
        return JSONResponse(ContextObject(**info.to_dict()).model_dump(), status_code=201)

    @app.get("/v1/contexts")
    async def list_contexts():
        infos = await to_thread.run_sync(store.list)
        return ContextList(data=[ContextObject(**i.to_dict()) for i in infos]).model_dump()

    @app.get("/v1/contexts/{context_id}")
    async def get_context(context_id: str, verify: bool = False):
        info = await to_thread.run_sync(store.info, validate_id(context_id), verify)
        return ContextObject(**info.to_dict()).model_dump()

    @app.delete("/v1/contexts/{context_id}")
    async def delete_context(context_id: str):
        await to_thread.run_sync(store.remove, validate_id(context_id))
        return {"id": context_id, "object": "context", "deleted": True}
