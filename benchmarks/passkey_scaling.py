"""Passkey accuracy and cost from 4K to 128K tokens on the embedded SmolLM2 (8K trained window).

For each method x length x depth x sample: accuracy, prefill and decode tokens/s, peak RSS and
KV bytes. In the same run, transformers' own `generate` on the same model at 4K and 8K is the
reference, and the machine's measured fp32 matmul GFLOP/s gives the prefill roofline.
Finished cells are kept in the JSON file: interrupt and rerun to continue.

    python benchmarks/passkey_scaling.py                       # the full grid (hours on 2 cores)
    python benchmarks/passkey_scaling.py --lengths 4k,8k --methods dense,infllm
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from common import ResultFile, markdown_table, matmul_gflops
from peers import best_of, hf_reference

import longreach
from longreach.methods import method_config
from longreach.tasks import passkey_sample, score_passkey
from longreach.units import parse_count

DEPTHS = (0.1, 0.5, 0.9)
LENGTHS = ("4k", "8k", "16k", "32k", "64k", "128k")


def samples_per_depth(method: str, length: int) -> int:
    """The grid of the engine issue: infllm 2 per depth to 32K then 1; streaming 1; dense 1 to 16K."""
    if method == "infllm":
        return 2 if length <= 32768 else 1
    if method == "dense":
        return 1 if length <= 16384 else 0
    return 1


def run_cell(lm, sample) -> dict:
    result = lm.generate(sample.prompt_ids, sample.max_new_tokens)
    s = result.stats
    return {"correct": score_passkey(result.text, sample.answers), "prediction": result.text,
            "answer": sample.answers[0], "prompt_tokens": s.prompt_tokens, "prompt_tps": s.prompt_tps,
            "generation_tps": s.generation_tps, "peak_rss_mb": s.peak_memory_mb, "kv_bytes": s.kv_bytes}


def attended_keys(lm, length: int) -> float:
    """Keys an average prefill query attends to under the method's own budget (for the roofline)."""
    cfg, trained = lm.method, lm.adapter.trained_window
    if cfg.name == "streaming":
        budget = cfg.n_sink + cfg.window
    elif cfg.name == "infllm":
        n_local = cfg.local_window(trained)
        budget = cfg.n_init + n_local + cfg.topk_blocks * cfg.block_size + cfg.execution_block(n_local) / 2
    else:
        budget = length
    return min(budget, length / 2)


def summarise(data: dict, flops_per_token: dict, gflops: float) -> str:
    groups = defaultdict(list)
    for cell in data["cells"].values():
        groups[(cell["method"], cell["length"])].append(cell)
    rows = []
    for (method, length), cells in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        n = len(cells)
        acc = sum(c["correct"] for c in cells) / n
        tps = sum(c["prompt_tps"] for c in cells) / n
        roof = tps * flops_per_token.get(method, {}).get(str(length), 0) / (gflops * 1e9) if gflops else 0
        rows.append([method, f"{length // 1024}K", f"{acc:.0%} ({sum(c['correct'] for c in cells):g}/{n})",
                     f"{tps:.0f}", f"{sum(c['generation_tps'] for c in cells) / n:.1f}",
                     f"{max(c['peak_rss_mb'] for c in cells):.0f}",
                     f"{sum(c['kv_bytes'] for c in cells) / n / 2**20:.0f}", f"{roof:.0%}"])
    table = markdown_table(["method", "length", "passkey accuracy", "prefill tok/s", "decode tok/s",
                            "peak RSS MB", "KV MiB", "roofline"], rows)
    ref = data["extra"].get("hf_reference", {})
    if ref:
        ref_rows = []
        for length, r in sorted(ref.items(), key=lambda kv: int(kv[0])):
            dense = r.get("dense", {})
            ref_rows.append([f"{int(length) // 1024}K", f"{r['prompt_tps']:.0f}", f"{r['generation_tps']:.1f}",
                             f"{dense.get('prompt_tps', 0):.0f}", f"{dense.get('generation_tps', 0):.1f}",
                             f"{dense.get('prompt_tps', 0) / r['prompt_tps']:.2f}",
                             f"{dense.get('generation_tps', 0) / r['generation_tps']:.2f}",
                             "yes" if dense.get("text") == r["text"] else "no"])
        table += "\n\nSame run, same prompt: transformers `generate` vs longreach `dense`\n\n" + markdown_table(
            ["length", "HF prefill tok/s", "HF decode tok/s", "dense prefill tok/s", "dense decode tok/s",
             "prefill ratio", "decode ratio", "same greedy text"], ref_rows)
    table += (f"\n\nMachine fp32 matmul: {gflops:.0f} GFLOP/s ({data['machine']['threads']} threads). Roofline: "
              "prefill FLOPs per token (projections, MLP, and attention over the keys the method reads) "
              "x tokens/s over that rate. Peak RSS: the process's high-water mark from the start of a "
              "cell; it includes memory the allocator kept from earlier cells run in the same process.")
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default=",".join(LENGTHS))
    parser.add_argument("--methods", default="infllm,streaming,dense")
    parser.add_argument("--out", default="docs/results/passkey_scaling.json")
    parser.add_argument("--skip-reference", action="store_true", help="skip the transformers reference")
    parser.add_argument("--depths", default=",".join(map(str, DEPTHS)), help="a subset, to run the grid in parts")
    parser.add_argument("--max-samples", type=int, default=None, help="cap samples per depth (a part of the grid)")
    args = parser.parse_args()
    lengths = [parse_count(x) for x in args.lengths.split(",")]
    methods = args.methods.split(",")
    defaults = {name: method_config(name).to_dict() for name in ("dense", "streaming", "infllm")}
    results = ResultFile(args.out, {"depths": DEPTHS, "template": "passkey (benchmarks.md section 3), raw",
                                    "method_defaults": defaults})
    base = longreach.load(method="dense")
    tokenizer = base.tokenizer

    gflops = results.data["extra"].get("matmul_gflops") or matmul_gflops()
    results.put_extra("matmul_gflops", gflops)
    if not args.skip_reference:
        reference = results.data["extra"].get("hf_reference", {})
        for length in (4096, 8192):
            if str(length) in reference:
                continue
            sample = passkey_sample(tokenizer, length, 0.5, seed=0)
            hf_runs, dense_runs = [], []
            for _ in range(2):  # interleaved, so both see the same machine load
                hf_runs.append(hf_reference(base, sample))
                dense = base.generate(sample.prompt_ids, 10)
                dense_runs.append({"prompt_tps": dense.stats.prompt_tps, "text": dense.text,
                                   "generation_tps": dense.stats.generation_tps})
            r = best_of(hf_runs)
            r["dense"] = best_of(dense_runs)
            reference[str(length)] = r
            results.put_extra("hf_reference", reference)
            print(f"reference {length}: HF {r['prompt_tps']:.0f} tok/s prefill, {r['generation_tps']:.1f} decode; "
                  f"dense {r['dense']['prompt_tps']:.0f} / {r['dense']['generation_tps']:.1f}", flush=True)

    flops = results.data["extra"].get("flops_per_token", {})
    for method in methods:
        lm = base.with_method(method)
        for length in lengths:
            n = samples_per_depth(method, length)
            flops.setdefault(method, {})[str(length)] = base.adapter.flops_per_token(attended_keys(lm, length))
            if args.max_samples is not None:
                n = min(n, args.max_samples)
            for depth in [float(d) for d in args.depths.split(",")]:
                for index in range(n):
                    key = f"{method}|{length}|{depth}|{index}"
                    if results.done(key):
                        continue
                    sample = passkey_sample(tokenizer, length, depth, seed=index)
                    cell = run_cell(lm, sample) | {"method": method, "length": length, "depth": depth,
                                                   "sample": index}
                    results.put(key, cell)
                    print(f"{key}: {'OK ' if cell['correct'] else 'BAD'} {cell['prediction']!r} "
                          f"{cell['prompt_tps']:.0f} tok/s, RSS {cell['peak_rss_mb']:.0f} MB", flush=True)
    results.put_extra("flops_per_token", flops)
    table = summarise(results.data, flops, gflops)
    Path(args.out).with_suffix(".md").write_text(
        "# Passkey scaling on SmolLM2-135M-Instruct\n\nCommand: `python benchmarks/passkey_scaling.py`\n\n"
        + table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
