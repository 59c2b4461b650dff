"""Pieces shared by CLI subcommands: model/method options, input files, progress, output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import LongreachError

DECODE_WEIGHTS_HELP = "float16: decode with float16 copies of a float32 model's weights (about 2x faster on a CPU)"


def add_model_options(parser: argparse.ArgumentParser, default_method: str = "infllm") -> None:
    group = parser.add_argument_group("model and method")
    group.add_argument("--model", default=None,
                       help="hub id, local directory or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    group.add_argument("--method", default=default_method, help="long-context method (see `longreach methods`)")
    group.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                       help="method option, repeatable (e.g. -o n_local=2048 -o topk_blocks=8)")
    group.add_argument("--prefill-chunk", type=int, default=512, help="prompt tokens per forward pass")
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    group.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: fp32 on CPU)")
    group.add_argument("--decode-weights", default=None, metavar="float16", help=DECODE_WEIGHTS_HELP)


def add_sampling_options(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    group = parser.add_argument_group("generation")
    group.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help="generation limit")
    group.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    group.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    group.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    group.add_argument("--repetition-penalty", type=float, default=1.0, help="HF-style penalty (1 = off)")
    group.add_argument("--seed", type=int, default=None, help="sampling seed")
    group.add_argument("--stop", action="append", default=[], help="stop string, repeatable")


def sampling_kwargs(args) -> dict:
    """Sampling options of the command line, validated before any model is loaded."""
    from ..engine.sampling import SamplingParams

    kwargs = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                  repetition_penalty=args.repetition_penalty, seed=args.seed, stop=tuple(args.stop))
    if args.max_new_tokens < 0:
        raise LongreachError("--max-new-tokens must be >= 0")
    SamplingParams(max_new_tokens=args.max_new_tokens, **kwargs)
    return kwargs


def parse_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LongreachError(f"method option {pair!r} is not KEY=VALUE")
        options[key.strip().replace("-", "_")] = value.strip()
    return options


def load_lm(args):
    """Validate the method first (cheap), then load the model."""
    import longreach

    from ..methods import method_config
    from ..models.adapter import check_decode_weights
    from ..models.loading import auto_device, parse_dtype

    options = parse_options(args.option)
    method_config(args.method, options)
    if args.prefill_chunk < 1:
        raise LongreachError("--prefill-chunk must be >= 1")
    parse_dtype(args.dtype, auto_device())
    check_decode_weights(args.decode_weights, "--decode-weights")
    if sys.stderr.isatty():
        print("loading model ...", file=sys.stderr, flush=True)
    return longreach.load(args.model, args.method, device=args.device, dtype=args.dtype,
                          prefill_chunk=args.prefill_chunk, decode_weights=args.decode_weights, **options)


def read_text(path: str) -> str:
    """A UTF-8 text file's contents, or a one-line error."""
    p = Path(path)
    if not p.exists():
        raise LongreachError(f"file not found: {path}")
    if p.is_dir():
        raise LongreachError(f"{path} is a directory, not a file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise LongreachError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LongreachError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise LongreachError(f"{path} is empty")
    return text


class PrefillProgress:
    """A tqdm bar over prompt tokens (rate and ETA), shown on stderr for prompts worth waiting for."""

    def __init__(self, enabled: bool = True, min_tokens: int = 2048):
        self.enabled, self.min_tokens, self.bar = enabled, min_tokens, None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < self.min_tokens:
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="tok", desc="prefill", file=sys.stderr, leave=False,
                            dynamic_ncols=True)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def print_stats(result, method: str, file=sys.stderr) -> None:
    s = result.stats
    print(f"[{method}] prompt {s.prompt_tokens} tok at {s.prompt_tps:.1f} tok/s, "
          f"generated {s.generated_tokens} tok at {s.generation_tps:.1f} tok/s, "
          f"peak RSS {s.peak_memory_mb:.0f} MB, KV {s.kv_bytes / 2**20:.1f} MiB, "
          f"finish: {result.finish_reason}", file=file)


def dump_json(payload: dict) -> None:
    print(json.dumps(payload, indent=2, default=str))
