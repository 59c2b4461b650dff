"""lm-evaluation-harness model `longreach`: any lm-eval task through a long-context method.

    lm_eval --model longreach --model_args method=infllm,n_local=1024 --tasks ...
    longreach lm-eval run --model longreach --model_args model=HUB_ID,method=dense --tasks ...

model_args: model (hub id, directory or .gguf; default the embedded model), method (default infllm),
device, dtype, decode_weights, prefill_chunk, max_length (left-truncate longer contexts; default none: the method
handles any length), logit_rows (rows of logits held at once when scoring); every other key is an
option of the method (validated like `-o`).
"""

from __future__ import annotations

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

_IGNORED = ("batch_size", "max_batch_size", "trust_remote_code", "pretrained_model_name_or_path")


@register_model("longreach")
class LongreachLM(TemplateLM):
    """An lm-eval model over `longreach.load(...)`: greedy generation and prompt log-probabilities."""

    def __init__(self, model: str | None = None, method: str = "infllm", device: str | None = None,
                 dtype: str | None = None, prefill_chunk: int = 512, max_length: int | None = None,
                 logit_rows: int = 2048, lm=None, decode_weights: str | None = None, **options):
        """Load the model (or wrap `lm`, an already loaded LongLM) with `method` and its options."""
        super().__init__()
        import longreach

        options = {k: v for k, v in options.items() if k not in _IGNORED}
        if device and str(device).startswith("cuda") and not torch.cuda.is_available():
            device = None  # lm-eval passes cuda by default; run where the machine can
        if lm is None:
            lm = longreach.load(model, method, device=device, dtype=dtype, prefill_chunk=int(prefill_chunk),
                                decode_weights=decode_weights or None, **options)
        elif options or method != lm.method.name:
            lm = lm.with_method(method, **options)
        self.lm = lm
        self.tokenizer = lm.tokenizer
        self.model_name = str(model or "SmolLM2-135M-Instruct")
        self.max_length = int(max_length) if max_length else None
        self.logit_rows = int(logit_rows)
        self._device = lm.device

    # --- tokens -------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        return eos if eos is not None else min(self.lm.eos_ids, default=0)

    @property
    def prefix_token_id(self) -> int:
        bos = getattr(self.tokenizer, "bos_token_id", None)
        return bos if bos is not None else self.eot_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        if add_special_tokens is None:
            return list(self.tokenizer(string)["input_ids"])
        return list(self.tokenizer(string, add_special_tokens=add_special_tokens)["input_ids"])

    @property
    def tokenizer_name(self) -> str:
        return self.model_name.replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    # --- scoring ------------------------------------------------------------------------
    def _logprobs(self, ids: list[int], first_scored: int) -> tuple[float, bool]:
        """Sum of log p(ids[i] | ids[:i]) for i >= first_scored (>= 1), and whether each was the argmax.

        The unscored prefix is prefilled in one call; the scored part in pieces of `logit_rows`
        tokens with every position's logits, so memory stays bounded for long inputs.
        """
        session = self.lm.new_session()
        chunk = self.lm.prefill_chunk
        if first_scored > 1:
            session.prefill(ids[:first_scored - 1], chunk)
        total, greedy = 0.0, True
        for start in range(first_scored - 1, len(ids) - 1, self.logit_rows):
            end = min(start + self.logit_rows, len(ids) - 1)
            logits = session.prefill(ids[start:end], chunk, all_logits=True).float()  # [n, V]
            targets = torch.tensor(ids[start + 1:end + 1], device=logits.device)
            logprobs = torch.log_softmax(logits, dim=-1)
            total += logprobs.gather(-1, targets[:, None]).sum().item()
            greedy = greedy and bool((logits.argmax(-1) == targets).all())
        return total, greedy

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False,
                              **kwargs) -> list[tuple[float, bool]]:
        out = []
        for key, context_enc, continuation_enc in tqdm(requests, disable=disable_tqdm, desc="loglikelihood"):
            ids = list(context_enc) + list(continuation_enc)
            if self.max_length and len(ids) > self.max_length:
                ids = ids[-self.max_length:]
            answer = self._logprobs(ids, len(ids) - len(continuation_enc))
            out.append(answer)
            self.cache_hook.add_partial("loglikelihood", key, answer)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-document log-likelihood in one pass: the method holds the full context, no windows."""
        out = []
        for (string,) in tqdm([r.args for r in requests], disable=disable_tqdm, desc="loglikelihood_rolling"):
            ids = [self.prefix_token_id] + self.tok_encode(string, add_special_tokens=False)
            value = self._logprobs(ids, 1)[0]
            out.append(value)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), value)
        return out

    # --- generation ---------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for context, gen_kwargs in tqdm([r.args for r in requests], disable=disable_tqdm,
                                        desc="generate_until"):
            kwargs = dict(gen_kwargs or {})
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.pop("max_gen_toks", kwargs.pop("max_new_tokens", 256)))
            do_sample = bool(kwargs.pop("do_sample", False))
            temperature = float(kwargs.pop("temperature", 0.0)) if do_sample else 0.0
            sampling = {"temperature": temperature}
            for name in ("top_p", "top_k", "seed"):
                if do_sample and kwargs.get(name) is not None:
                    sampling[name] = kwargs[name]
            ids = self.tok_encode(context)
            if self.max_length and len(ids) + max_new > self.max_length:
                ids = ids[-max(self.max_length - max_new, 1):]
            text = self.lm.generate(ids, max_new, stop=until, **sampling).text
            out.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return out
