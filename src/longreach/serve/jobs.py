"""What the model worker does for a request: generate, score prompt tokens, add a context."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace

import torch

from .contexts import ContextInfo, ContextStore
from .prompts import PromptIds, context_text
from .worker import Job, ModelWorker


@dataclass(slots=True)
class GenerateSpec:
    """One generation: new prompt ids (after the context, if any) and sampling settings."""

    ids: list[int]
    max_tokens: int
    sampling: dict = field(default_factory=dict)  # temperature, top_p, top_k, seed, stop, repetition_penalty
    context_id: str | None = None
    stream: bool = False
    logprobs: int | None = None  # completions: top-n alternatives per token; None: no logprobs
    echo: bool = False


@dataclass(slots=True)
class TokenLogprobs:
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]


@dataclass(slots=True)
class Generated:
    """A finished generation, ready to be shaped into an API response."""

    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int      # new prompt tokens processed
    cached_tokens: int      # tokens reused from the stored context
    logprobs: TokenLogprobs | None = None


class Runner:
    """Runs jobs on the worker thread with the server's model and context store."""

    def __init__(self, lm, store: ContextStore, worker: ModelWorker, max_context_tokens: int,
                 tokenizer_lock: threading.Lock):
        self.lm, self.store, self.worker = lm, store, worker
        self.max_context_tokens, self.tokenizer_lock = max_context_tokens, tokenizer_lock

    def generate(self, job: Job, spec: GenerateSpec, index: int = 0) -> Generated:
        """Generate after the prompt (and stored context); stream pieces as ("piece", (index, text))."""
        memory = self.store.load(self.lm, spec.context_id) if spec.context_id else None
        cached = memory.position if memory is not None else 0
        if spec.max_tokens == 0 and (spec.echo or spec.logprobs is not None):
            generated = Generated("", [], "length", len(spec.ids), cached)  # scoring below reads the prompt
        else:
            run = self.lm.run(spec.ids, spec.max_tokens, on_progress=job.progress, context=memory,
                              **spec.sampling)
            for piece in run:
                job.check()
                if spec.stream:
                    job.emit("piece", (index, piece))
            result = run.result
            self.worker.count(prefilled_tokens=len(spec.ids), cached_tokens=result.stats.cached_tokens,
                              generated_tokens=len(result.token_ids))
            generated = Generated(result.text, list(result.token_ids), result.finish_reason, len(spec.ids),
                                  result.stats.cached_tokens)
        if spec.logprobs is not None:
            prefix, targets = ([], spec.ids + generated.token_ids) if spec.echo else (spec.ids,
                                                                                    generated.token_ids)
            generated.logprobs = self.score(job, memory, prefix, targets, spec.logprobs)
        return generated

    def complete(self, job: Job, prompts: list[PromptIds], spec: GenerateSpec) -> list[Generated]:
        """One generation per prompt, in order."""
        return [self.generate(job, replace(spec, ids=prompt.ids), index)
                for index, prompt in enumerate(prompts)]

    @torch.inference_mode()
    def score(self, job: Job, memory, prefix: list[int], targets: list[int], top_n: int) -> TokenLogprobs:
        """Log-probabilities of `targets` after (context +) `prefix`, and the `top_n` best per position."""
        lm, chunk = self.lm, self.lm.prefill_chunk
        session = memory.fork() if memory is not None else lm.new_session()
        previous = None  # log-probabilities predicting the next target
        if prefix:
            previous = session.prefill(prefix, chunk, job.progress).log_softmax(-1)
        elif memory is not None and memory.last_logits is not None:
            previous = memory.last_logits.float().log_softmax(-1)
        out = TokenLogprobs([], [], [])
        for start in range(0, len(targets), chunk):
            job.check()
            piece = targets[start:start + chunk]
            rows = session.prefill(piece, chunk, all_logits=True).log_softmax(-1)  # [n, V]
            if previous is None:
                out.token_logprobs.append(None)
                out.top_logprobs.append(None)
                predictors, scored = rows[:-1], piece[1:]
            else:
                predictors, scored = torch.cat((previous[None], rows[:-1])), piece
            picked = predictors.gather(1, torch.tensor(scored, dtype=torch.long)[:, None])[:, 0]
            out.token_logprobs.extend(picked.tolist())
            if top_n > 0:
                values, ids = predictors.topk(top_n, dim=-1)
                for row_values, row_ids in zip(values.tolist(), ids.tolist(), strict=True):
                    pairs = zip(row_ids, row_values, strict=True)
                    out.top_logprobs.append({self._piece(t): v for t, v in pairs})
            else:
                out.top_logprobs.extend({} for _ in scored)
            previous = rows[-1]
        out.tokens = [self._piece(t) for t in targets]
        self.worker.count(prefilled_tokens=len(prefix) + len(targets))
        return out

    def _piece(self, token_id: int) -> str:
        return self.lm.tokenizer.decode([token_id])

    def add_context(self, job: Job, name: str, text: str, fmt: str, system: str | None) -> ContextInfo:
        """Tokenize, prefill and save a document as context `name`."""
        with self.tokenizer_lock:  # request handlers tokenize on other threads
            document = context_text(self.lm, text, fmt, system)
        info = self.store.add_document(self.lm, name, document, fmt, system,
                                       max_tokens=self.max_context_tokens, on_progress=job.progress,
                                       should_stop=lambda: job.cancelled, source="api")
        self.worker.count(prefilled_tokens=info.tokens, contexts_added=1)
        return info
