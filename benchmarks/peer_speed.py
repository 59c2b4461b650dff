"""Prefill and decode speed of longreach against transformers and llama.cpp, same prompt, same run.

The embedded SmolLM2-135M-Instruct on the classic passkey prompt at each length:
- transformers' own `generate` (float32, the weights longreach runs);
- longreach `dense` and `infllm` (float32), and both with `decode_weights=float16` (decode steps
  read float16 copies of the weights);
- llama.cpp on the very GGUF file the weights come from (4-bit Q4_1 weights, through
  llama-cpp-python; skipped with a note when it is not installed).
Every engine gets the same token ids and decodes exactly `--new-tokens` greedy tokens; each figure
is the best of `--repeats` runs, and the ratios compare figures from this one run. The table also
gives the weight bytes each engine streams per decoded token, which bounds decode speed on a CPU.

    python benchmarks/peer_speed.py                       # 1K, 4K, 8K
    python benchmarks/peer_speed.py --lengths 4k --repeats 3

llama-cpp-python has no wheel on PyPI: `pip install llama-cpp-python` builds llama.cpp from source
(about 10 minutes on 2 cores, needs a C++ compiler and cmake).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from common import ResultFile, machines_line, markdown_table
from peers import LlamaCpp, best_of, hf_reference, llama_cpp_available

import longreach
from longreach.models.loading import default_model_path
from longreach.tasks import passkey_sample
from longreach.units import parse_count

ENGINES = ("transformers", "dense", "infllm", "dense f16-decode", "infllm f16-decode", "llama.cpp")


def longreach_run(lm, ids: list[int], new_tokens: int, chunk: int) -> dict:
    """Prefill then exactly `new_tokens` greedy tokens through a Session (EOS ignored)."""
    session = lm.new_session()
    start = time.perf_counter()
    logits = session.prefill(ids, chunk)
    tokens = [int(logits.argmax())]
    first = time.perf_counter()
    for _ in range(new_tokens - 1):
        tokens.append(int(session.step(tokens[-1]).argmax()))
    last = time.perf_counter()
    return {"prompt_tokens": len(ids), "prompt_tps": len(ids) / (first - start),
            "generation_tps": (new_tokens - 1) / max(last - first, 1e-9), "tokens": tokens}


def run_engine(engine: str, sample, lms: dict, cpp, args) -> dict:
    if engine == "transformers":
        return hf_reference(lms["dense"], sample, args.new_tokens)
    if engine == "llama.cpp":
        return cpp.run(sample.prompt_ids, args.new_tokens)
    return longreach_run(lms[engine], sample.prompt_ids, args.new_tokens, args.chunk)


def weight_bytes(lm) -> int:
    """Bytes of the weights a decode step reads: every matrix of the layers and the lm head (the
    embedding contributes one row)."""
    model = lm.adapter.hf_model
    total = sum(p.numel() * p.element_size() for p in model.model.layers.parameters())
    total += sum(p.numel() * p.element_size() for p in model.model.norm.parameters())
    return total + model.lm_head.weight.numel() * model.lm_head.weight.element_size()


def summarise(cells: dict, weights: dict) -> str:
    rows = []
    for length in sorted({c["length"] for c in cells.values()}):
        at = {c["engine"]: c for c in cells.values() if c["length"] == length}
        hf, cpp = at.get("transformers"), at.get("llama.cpp")
        for engine in ENGINES:
            c = at.get(engine)
            if c is None:
                continue

            def ratio(ref, key, c=c):
                return f"{c[key] / ref[key]:.2f}" if ref else "n/a"
            same = "yes" if hf and c["tokens"] == hf["tokens"] else (
                f"{_common_prefix(c['tokens'], hf['tokens'])}/{len(hf['tokens'])}" if hf else "")
            rows.append([f"{length // 1024}K" if length >= 1024 else str(length), engine,
                         f"{c['prompt_tps']:.0f}", f"{c['generation_tps']:.1f}",
                         ratio(hf, "prompt_tps"), ratio(hf, "generation_tps"),
                         ratio(cpp, "prompt_tps"), ratio(cpp, "generation_tps"),
                         f"{weights[engine] / 2**20:.0f}", f"{weights[engine] * c['generation_tps'] / 1e9:.1f}",
                         same])
    return markdown_table(["length", "engine", "prefill tok/s", "decode tok/s", "prefill / HF", "decode / HF",
                           "prefill / llama.cpp", "decode / llama.cpp", "weights MiB read per token",
                           "weight GB/s at decode", "greedy tokens as HF"], rows)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="1k,4k,8k", help="prompt lengths (default: %(default)s)")
    parser.add_argument("--new-tokens", type=int, default=32, help="greedy tokens decoded by every engine")
    parser.add_argument("--repeats", type=int, default=2, help="runs per engine; the best is kept")
    parser.add_argument("--chunk", type=int, default=512, help="prefill chunk of longreach and llama.cpp's batch")
    parser.add_argument("--out", default="docs/results/peer_speed.json")
    args = parser.parse_args()
    if args.new_tokens < 2 or args.repeats < 1:
        print("--new-tokens must be at least 2 and --repeats at least 1", file=sys.stderr)
        return 2
    lengths = [parse_count(x) for x in args.lengths.split(",")]
    threads = torch.get_num_threads()
    results = ResultFile(args.out, {"new_tokens": args.new_tokens, "chunk": args.chunk, "threads": threads})
    dense = longreach.load(method="dense", prefill_chunk=args.chunk)
    half = longreach.load(method="dense", prefill_chunk=args.chunk, decode_weights="float16")
    lms = {"dense": dense, "infllm": dense.with_method("infllm"),
           "dense f16-decode": half, "infllm f16-decode": half.with_method("infllm")}
    gguf = default_model_path()
    weights = {engine: weight_bytes(dense) // (2 if "f16" in engine else 1) for engine in lms}
    weights |= {"transformers": weight_bytes(dense), "llama.cpp": gguf.stat().st_size}
    cpp = None
    if llama_cpp_available():
        cpp = LlamaCpp(gguf, n_ctx=max(lengths) + args.new_tokens + 16, threads=threads, batch=args.chunk)
    else:
        print("llama-cpp-python is not installed: llama.cpp is left out (pip install llama-cpp-python)",
              file=sys.stderr)
    for length in lengths:
        sample = passkey_sample(dense.tokenizer, length, 0.5, seed=0)
        for engine in ENGINES:
            key = f"{engine}|{length}"
            if results.done(key) or (engine == "llama.cpp" and cpp is None):
                continue
            best = best_of([run_engine(engine, sample, lms, cpp, args) for _ in range(args.repeats)])
            results.put(key, {"engine": engine, "length": length, "prompt_tokens": best["prompt_tokens"],
                              "prompt_tps": best["prompt_tps"], "generation_tps": best["generation_tps"],
                              "tokens": best["tokens"], "text": dense.tokenizer.decode(best["tokens"])})
            print(f"{key}: prefill {best['prompt_tps']:.0f} tok/s, decode {best['generation_tps']:.1f} tok/s",
                  flush=True)
    cells = results.data["cells"]
    table = summarise(cells, weights)
    out = Path(args.out)
    out.with_suffix(".md").write_text(
        "# Speed against transformers and llama.cpp, same prompt, same run\n\n"
        f"Command: `python benchmarks/peer_speed.py --lengths {args.lengths} --new-tokens {args.new_tokens} "
        f"--repeats {args.repeats}`\n\n" + table + f"\n\n{machines_line(list(cells.values()))} "
        f"{threads} threads for every engine.\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
