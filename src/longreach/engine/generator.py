"""The engine: chunked prefill and decoding over a model adapter and a method's policy."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from copy import copy as shallow_copy

import torch

from ..errors import LongreachError
from ..kv import KVStore
from ..methods import MethodConfig, MethodContext, Trace, method_config
from ..models import DecoderAdapter
from .memory import peak_mb, reset_peak
from .results import GenerationResult, GenerationStats
from .sampling import Sampler, SamplingParams

ProgressFn = Callable[[int, int], None]


class Session:
    """One sequence: its KV store, the method's policy and the next free position."""

    def __init__(self, adapter: DecoderAdapter, method: MethodConfig, offload_device=None,
                 trace: bool = False):
        self.adapter = adapter
        self.store = KVStore(adapter.n_layers, adapter.n_kv_heads, adapter.head_dim, adapter.dtype,
                             adapter.device, offload_device)
        self.trace = Trace() if trace else None
        ctx = MethodContext(n_layers=adapter.n_layers, n_heads=adapter.n_heads,
                            n_kv_heads=adapter.n_kv_heads, head_dim=adapter.head_dim,
                            scale=adapter.scale, trained_window=adapter.trained_window,
                            rope=_own_rope(adapter.rope), store=self.store, device=adapter.device,
                            trace=self.trace)
        try:
            self.policy = method.build(method.prepare(ctx))
        except ValueError as exc:
            raise LongreachError(f"method {method.name!r}: {exc}") from None
        self.position = 0

    def fork(self) -> Session:
        """An independent copy: same memory and position, so a stored context can serve many questions."""
        copy = Session.__new__(Session)
        copy.adapter, copy.trace, copy.position = self.adapter, None, self.position
        copy.store = self.store.clone()
        copy.policy = self.policy.__class__.__new__(self.policy.__class__)
        copy.policy.__dict__.update(self.policy.__dict__)
        copy.policy.store = copy.store
        copy.policy.ctx = dataclasses.replace(self.policy.ctx, store=copy.store, trace=None)
        if self.policy.rope.rope_type == "dynamic":  # the fork's length is its own from here on
            copy.policy.rope = copy.policy.ctx.rope = _own_rope(self.policy.rope)
        copy.policy.reset_caches()
        return copy

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[-1]
        positions = torch.arange(self.position, self.position + n, device=self.adapter.device)
        hidden = self.adapter.forward(ids.view(1, n), positions, self.policy)
        self.position += n
        return hidden

    def prefill(self, ids: list[int] | torch.Tensor, chunk: int = 512,
                on_progress: ProgressFn | None = None, all_logits: bool = False,
                final: bool = True) -> torch.Tensor:
        """Process prompt ids chunk by chunk, continuing after what the session holds.

        Returns the logits [V] of the last position (the lm head runs only there), or
        [n, V] for every position with `all_logits` (for prompt log-probabilities).
        `final=False` marks the ids as not ending the prompt (a stored document that a
        question will follow), so question-aware methods wait for the real end.
        """
        ids = torch.as_tensor(ids, dtype=torch.long)
        if ids.numel() == 0:
            raise LongreachError("the prompt is empty")
        replay = final and self.policy.replay_last_token and ids.numel() > 1
        body = ids[:-1] if replay else ids
        last, every = None, []
        for start in range(0, body.numel(), chunk):
            self.policy.phase = "final" if final and start + chunk >= body.numel() else "prefill"
            hidden = self._forward(body[start:start + chunk])
            last = hidden[:, -1]
            if all_logits:
                every.append(self.adapter.logits(hidden)[0])
            if on_progress:
                on_progress(min(start + chunk, body.numel()), ids.numel())
        self.policy.end_prefill()
        if replay:  # the method chose at the prompt's end; the last token reads that choice
            logits = self.step(int(ids[-1]))
            if on_progress:
                on_progress(ids.numel(), ids.numel())
            return torch.cat([*every, logits[None]]) if all_logits else logits
        return torch.cat(every) if all_logits else self.adapter.logits(last)[0]

    def prefill_document(self, ids: list[int] | torch.Tensor, document_end: int | None, chunk: int = 512,
                         on_progress: ProgressFn | None = None) -> torch.Tensor:
        """Prefill a prompt whose first `document_end` ids are a document and the rest a question:
        the document first, as a stored context (final=False), then the question; logits [V] of
        the last position. `document_end=None` prefills the prompt in one piece. A fixed-context
        method (squeezed) clusters what it holds at the first prefill's end: on a fork of an
        already clustered context the marked document is not clustered again."""
        if document_end is None:
            return self.prefill(ids, chunk, on_progress)
        total = len(ids)
        check_document_end(document_end, total)
        self.prefill(ids[:document_end], chunk, on_progress and (lambda done, _: on_progress(done, total)),
                     final=False)
        return self.prefill(ids[document_end:], chunk,
                            on_progress and (lambda done, _: on_progress(document_end + done, total)))

    def step(self, token: int) -> torch.Tensor:
        """Feed one token; logits [V] for the next."""
        self.policy.phase = "decode"
        hidden = self._forward(torch.tensor([token]))
        return self.adapter.logits(hidden[:, -1])[0]


def check_document_end(document_end, n_ids: int) -> None:
    """Refuse a document end that is not a token index strictly inside a prompt of `n_ids` ids."""
    if isinstance(document_end, bool) or not isinstance(document_end, int) or not 0 < document_end < n_ids:
        raise LongreachError(f"document_end must be a token index inside the prompt (1..{max(n_ids - 1, 1)}), "
                             f"got {document_end!r}")


def _own_rope(rope):
    """`rope`, or a copy of it for one sequence when it is dynamic NTK: its frequencies follow the longest
    length it has rotated, so one shared by sessions (the adapter's) or by forks would give a sequence
    the frequencies of another's length."""
    return shallow_copy(rope) if rope.rope_type == "dynamic" else rope


class LongLM:
    """A loaded model plus a method: generate, stream and chat over inputs of any length."""

    def __init__(self, adapter: DecoderAdapter, tokenizer, method: MethodConfig,
                 prefill_chunk: int = 512, offload_device: str | None = None):
        if prefill_chunk < 1:
            raise LongreachError("prefill_chunk must be >= 1")
        self.adapter = adapter
        self.tokenizer = tokenizer
        self.method = method
        self.prefill_chunk = prefill_chunk
        self.offload_device = offload_device
        self.eos_ids = _eos_ids(adapter.hf_model, tokenizer)

    @property
    def device(self) -> torch.device:
        return self.adapter.device

    def with_method(self, method: str | MethodConfig, **options) -> LongLM:
        """The same loaded model with another method (no reload)."""
        config = method if isinstance(method, MethodConfig) else method_config(method, options)
        return LongLM(self.adapter, self.tokenizer, config, self.prefill_chunk, self.offload_device)

    def new_session(self, trace: bool = False) -> Session:
        return Session(self.adapter, self.method, self.offload_device, trace=trace)

    # --- text in, ids out ---------------------------------------------------------------
    def encode(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            if not prompt.strip():
                raise LongreachError("the prompt is empty")
            return self.tokenizer(prompt)["input_ids"]
        if len(prompt) == 0:
            raise LongreachError("the prompt is empty")
        return list(prompt)

    def chat_ids(self, messages: list[dict]) -> list[int]:
        if not messages:
            raise LongreachError("no messages given")
        if getattr(self.tokenizer, "chat_template", None) is None:
            text = "\n".join(m["content"] for m in messages)
            return self.encode(text)
        out = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
        return list(ids)

    # --- generation -------------------------------------------------------------------
    def generate(self, prompt: str | list[int], max_new_tokens: int = 128, *,
                 on_progress: ProgressFn | None = None, trace: bool = False,
                 context: Session | None = None, document_end: int | None = None,
                 **sampling) -> GenerationResult:
        """Generate a completion of `prompt` (text or token ids).

        Args:
            prompt: text (tokenized with the model's tokenizer) or token ids.
            max_new_tokens: generation limit.
            on_progress: called as (tokens prefilled, prompt tokens) after each chunk.
            trace: record the method's block selections in the result.
            context: a session already holding a processed document; the prompt continues a
                fork of it (the context itself is left unchanged).
            document_end: the prompt's first `document_end` tokens are a document and the rest
                a question about it: the document is prefilled first, as a stored context would
                be (a fixed-context method such as `squeezed` clusters it alone; with `context`,
                whose document was clustered already, it is not clustered again).
            **sampling: temperature, top_k, top_p, repetition_penalty, seed, stop.
        Returns:
            A GenerationResult with text, finish_reason and stats.
        """
        run = self.run(prompt, max_new_tokens, on_progress=on_progress, trace=trace, context=context,
                       document_end=document_end, **sampling)
        for _ in run:
            pass
        return run.result

    def stream(self, prompt: str | list[int], max_new_tokens: int = 128, *,
               on_progress: ProgressFn | None = None, context: Session | None = None,
               document_end: int | None = None, **sampling) -> Iterator[str]:
        """Yield text pieces as they are generated (arguments as for `generate`)."""
        yield from self.run(prompt, max_new_tokens, on_progress=on_progress, context=context,
                            document_end=document_end, **sampling)

    def run(self, prompt: str | list[int], max_new_tokens: int = 128, *,
            on_progress: ProgressFn | None = None, trace: bool = False,
            context: Session | None = None, document_end: int | None = None,
            **sampling) -> GenerationRun:
        """A generation to iterate over for text pieces; its `result` is set once iteration ends
        (arguments as for `generate`)."""
        params = SamplingParams(max_new_tokens=max_new_tokens, **sampling)
        ids = self.encode(prompt)
        if document_end is not None:
            check_document_end(document_end, len(ids))
        return GenerationRun(self, ids, params, on_progress, trace, context, document_end)

    def chat(self, messages: list[dict], max_new_tokens: int = 128, **kwargs) -> GenerationResult:
        """Generate the assistant's reply to `messages` using the tokenizer's chat template."""
        return self.generate(self.chat_ids(messages), max_new_tokens, **kwargs)


def _eos_ids(hf_model, tokenizer) -> set[int]:
    ids = set()
    for source in (getattr(hf_model, "generation_config", None), hf_model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if value is None:
            continue
        ids.update(value if isinstance(value, (list, tuple, set)) else [value])
    return ids


class GenerationRun:
    """One generation: iterate for text pieces; `result` is set when iteration ends.

    Stopping the iteration early (e.g. a client went away) simply abandons the run.
    """

    def __init__(self, lm: LongLM, ids: list[int], params: SamplingParams,
                 on_progress: ProgressFn | None, trace: bool, context: Session | None = None,
                 document_end: int | None = None):
        self.lm, self.ids, self.params = lm, ids, params
        self.on_progress, self.trace, self.context = on_progress, trace, context
        self.document_end = document_end
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[str]:
        lm, params = self.lm, self.params
        device = lm.device
        reset_peak(device)
        if self.context is not None:
            session = self.context.fork()
            cached = self.context.position
        else:
            session, cached = lm.new_session(trace=self.trace), 0
        sampler = Sampler(params, device)
        t0 = time.perf_counter()
        logits = session.prefill_document(self.ids, self.document_end, lm.prefill_chunk, self.on_progress)
        t1 = time.perf_counter()
        history = torch.tensor(self.ids, dtype=torch.long)
        generated: list[int] = []
        text, emitted, finish = "", 0, "length"
        hold = max((len(s) for s in params.stop), default=1) - 1
        for _ in range(params.max_new_tokens):
            token = sampler(logits, history)
            if token in lm.eos_ids:
                finish = "stop"
                break
            generated.append(token)
            history = torch.cat((history, torch.tensor([token])))
            text = lm.tokenizer.decode(generated, skip_special_tokens=True)
            cut = _first_stop(text, params.stop)
            if cut is not None:
                text, finish = text[:cut], "stop"
                break
            ready = len(text) - hold
            if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
                ready = min(ready, len(text.rstrip("\ufffd")))
            if ready > emitted:  # before computing the next token: a piece is out as soon as it is known
                yield text[emitted:ready]
                emitted = ready
            if len(generated) < params.max_new_tokens:
                logits = session.step(token)
        if len(text) > emitted:
            yield text[emitted:]
        t2 = time.perf_counter()
        stats = GenerationStats(
            prompt_tokens=len(self.ids), cached_tokens=cached, generated_tokens=len(generated),
            prefill_seconds=t1 - t0, decode_seconds=t2 - t1,
            prompt_tps=len(self.ids) / max(t1 - t0, 1e-9),
            generation_tps=len(generated) / max(t2 - t1, 1e-9) if generated else 0.0,
            peak_memory_mb=peak_mb(device), kv_bytes=session.store.nbytes,
            kv_bytes_by_device=session.store.bytes_by_device())
        trace = session.trace
        self.result = GenerationResult(text, generated, finish, stats, trace.selections if trace else None,
                                       trace.selection_seconds if trace else 0.0)


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [text.find(s) for s in stops if s in text]
    return min(hits) if hits else None
