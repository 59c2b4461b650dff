"""Decode speed with the compiled CPU kernels (longreach/kernels) against the torch path, same run.

For each method and length, the classic passkey prompt (depth 0.5) is prefilled once; then,
from forks of that one state, the same greedy tokens are decoded with the kernels (numba: one
query over 4K keys or more) and without them (LONGREACH_KERNELS=0: torch's flash kernel), the
two modes taking turns `--rounds` times, best kept. `squeezed` also gets a pass that times, per
layer call, its lookup with exact attention over the selected keys against exact attention over
the whole clustered context (`time_whole_context`), in both modes: the kernels speed up both,
the whole context read as one stream, the lookup compiled and its selected clusters read in
place as runs (each head's memory is stored cluster by cluster).

    python benchmarks/decode_kernels.py
    python benchmarks/decode_kernels.py --runs dense@8k,squeezed@32k --new-tokens 16
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from common import ResultFile, machines_line, markdown_table

import longreach
from longreach.tasks import passkey_sample
from longreach.units import parse_count

DEFAULT_RUNS = "dense@4k,dense@8k,dense@16k,infllm@32k,squeezed@8k,squeezed@32k"


def decode(session, logits, new_tokens: int, kernels: bool, timed: bool = False) -> dict:
    """Greedy tokens from a fork of `session`: one untimed step (a fork builds its caches), then
    `new_tokens` timed steps."""
    chosen = os.environ.get("LONGREACH_KERNELS")
    os.environ["LONGREACH_KERNELS"] = "1" if kernels else "0"
    try:
        fork = session.fork()
        policy = fork.policy
        if timed:
            policy.time_whole_context = True
        tokens = [int(logits.argmax())]
        tokens.append(int(fork.step(tokens[-1]).argmax()))
        if hasattr(policy, "reset_counters"):
            policy.reset_counters()
        start = time.perf_counter()
        for _ in range(new_tokens):
            tokens.append(int(fork.step(tokens[-1]).argmax()))
        out = {"generation_tps": new_tokens / (time.perf_counter() - start), "tokens": tokens}
        attention_us = policy.decode_attention_us() if timed else None
        if attention_us:
            out["lookup_us"], out["whole_us"] = attention_us
        return out
    finally:  # the caller's own setting, if any, comes back
        if chosen is None:
            os.environ.pop("LONGREACH_KERNELS", None)
        else:
            os.environ["LONGREACH_KERNELS"] = chosen


def run(method: str, length: int, args) -> dict:
    lm = longreach.load(method=method, prefill_chunk=args.chunk)
    sample = passkey_sample(lm.tokenizer, length, 0.5, seed=0)
    session = lm.new_session()
    start = time.perf_counter()
    logits = session.prefill_document(sample.prompt_ids, sample.context_end if lm.method.fixed_context else None,
                                      args.chunk)
    cell = {"method": method, "length": length, "prompt_tokens": len(sample.prompt_ids),
            "prompt_tps": len(sample.prompt_ids) / (time.perf_counter() - start)}
    runs = {True: [], False: []}
    for _ in range(args.rounds):  # the modes take turns, so that a slow spell of the machine hits both
        for kernels in (True, False):
            runs[kernels].append(decode(session, logits, args.new_tokens, kernels))
            if hasattr(session.policy, "time_whole_context"):
                runs[kernels][-1] |= {"timed": decode(session, logits, args.new_tokens, kernels, timed=True)}
    for kernels, name in ((True, "kernels"), (False, "torch")):
        best = max(runs[kernels], key=lambda r: r["generation_tps"])
        cell[f"{name}_tps"], cell[f"{name}_tokens"] = best["generation_tps"], best["tokens"]
        if "timed" in best:
            timed = min((r["timed"] for r in runs[kernels]), key=lambda t: t["lookup_us"] + t["whole_us"])
            cell[f"{name}_lookup_us"], cell[f"{name}_whole_us"] = timed["lookup_us"], timed["whole_us"]
    return cell


def summarise(cells: list[dict]) -> str:
    rows = []
    for c in sorted(cells, key=lambda c: (c["method"], c["length"])):
        attention = ""
        if "kernels_lookup_us" in c:
            attention = " / ".join(f"{c[f'{n}_whole_us']:.0f} / {c[f'{n}_lookup_us']:.0f} us "
                                   f"({c[f'{n}_whole_us'] / c[f'{n}_lookup_us']:.1f}x)" for n in ("torch", "kernels"))
        rows.append([c["method"], f"{c['length'] // 1024}K", f"{c['torch_tps']:.2f}", f"{c['kernels_tps']:.2f}",
                     f"{c['kernels_tps'] / c['torch_tps']:.2f}",
                     "yes" if c["kernels_tokens"] == c["torch_tokens"] else "no", attention])
    return markdown_table(["method", "length", "decode tok/s, torch", "decode tok/s, kernels", "kernels / torch",
                           "same greedy tokens", "squeezed, per layer: whole / lookup, torch / kernels"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="method@length list (default: %(default)s)")
    parser.add_argument("--new-tokens", type=int, default=24, help="timed decode steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per mode, taking turns; the best is kept")
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--out", default="docs/results/decode_kernels.json")
    args = parser.parse_args()
    try:
        runs = [(m, parse_count(n)) for m, n in (item.split("@") for item in args.runs.split(","))]
    except (ValueError, longreach.LongreachError):
        print(f"--runs: expected method@length items, e.g. dense@8k, got {args.runs!r}", file=sys.stderr)
        return 2
    unknown = sorted({m for m, _ in runs} - set(longreach.METHODS))
    if unknown or args.new_tokens < 1 or args.rounds < 1:
        print(f"unknown method(s) {unknown}" if unknown else "--new-tokens and --rounds must be >= 1",
              file=sys.stderr)
        return 2
    results = ResultFile(args.out, {"new_tokens": args.new_tokens, "chunk": args.chunk,
                                    "threads": torch.get_num_threads()})
    for method, length in runs:
        key = f"{method}|{length}"
        if not results.done(key):
            cell = run(method, length, args)
            results.put(key, cell)
            print(f"{key}: decode {cell['torch_tps']:.2f} -> {cell['kernels_tps']:.2f} tok/s", flush=True)
    cells = list(results.data["cells"].values())
    table = summarise(cells)
    Path(args.out).with_suffix(".md").write_text(
        "# Decode with the compiled CPU kernels against the torch path, same run\n\n"
        f"Command: `python benchmarks/decode_kernels.py --runs {args.runs} --new-tokens {args.new_tokens} "
        f"--rounds {args.rounds}`\n\n" + table + "\n\nThe last column (squeezed only): exact attention over the "
        "whole clustered context against squeezed's lookup plus exact attention over the keys it selects, "
        "per layer call of a decode step, both including the unclustered tokens (local window, sinks, "
        "question) that each attends too.\n\n" + machines_line(cells) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
