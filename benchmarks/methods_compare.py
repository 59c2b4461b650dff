"""Every method and useful combination side by side on the embedded SmolLM2 (8K trained window).

For each configuration x task x length x sample: accuracy, prefill and decode tokens/s, KV bytes
at the end of the generation, and for `squeezed` the keys each decode step touches (selected
context keys + centroids scored + the unclustered tokens) against attending the whole context,
and the time of both per layer call (the whole context timed for the same query in the same step,
its result unused).
Tasks: the classic passkey (noise haystack, depths 0.1/0.5/0.9) and RULER's NIAH (essay
haystack, `--ruler` subtasks), `--samples` seeds each. `squeezed` gets the document first and
the question after it (its use case, a fixed context questioned many times): the document is
clustered in between, so the lookup decides the question's attention and the answer.
Finished cells are kept in the JSON file: interrupt and rerun to continue. Writes a markdown
table and one accuracy-vs-KV-memory plot with every configuration.

    python benchmarks/methods_compare.py                                  # the full grid (days on 2 cores)
    python benchmarks/methods_compare.py --lengths 4k,8k --configs dense,snapkv,squeezed
    python benchmarks/methods_compare.py --list                           # the configurations
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from common import ResultFile, machines_line, markdown_table
from methods_targets import target_rows

import longreach
from longreach.tasks import passkey_sample, score_passkey
from longreach.units import parse_count

LENGTHS = ("4k", "8k", "16k", "32k")
DEPTHS = (0.1, 0.5, 0.9)
SNAP = {"budget": 2048}
SQUEEZE = {"budget": 0.125}

# name -> (method, options, longest input worth running: a configuration attending densely that
# already scores 0/5 at 16K is not run at 32K, where dense attention costs about 6 minutes a cell
# on 2 cores (plain dense fails from 16K, past its trained window); positions=true must fit the
# trained window; self_extend and yarn (both YaRNs) go to 64K so that `--lengths 48k,64k` finds
# where each breaks)
CONFIGS: dict[str, tuple[str, dict, int]] = {
    "dense": ("dense", {}, 16384),
    "dense+int8": ("dense", {"kv_quant": "int8"}, 16384),
    "dense+int4": ("dense", {"kv_quant": "int4"}, 16384),
    "yarn": ("dense", {"rope_scaling": "yarn", "target_length": 32768}, 65536),
    # YaRN without its attention temperature: on SmolLM2 the paper's 0.1 ln(4) + 1 alone loses
    # the 4K passkey (measured), so both are reported
    "yarn-t1": ("dense", {"rope_scaling": "yarn", "target_length": 32768, "rope_attention_factor": 1.0}, 65536),
    "ntk": ("dense", {"rope_scaling": "ntk", "target_length": 32768}, 32768),
    # dynamic NTK and linear interpolation already score 0/5 at 16K (linear at every length): not run
    # at 32K, where each cell costs 6 minutes of dense prefill
    "dynamic-ntk": ("dense", {"rope_scaling": "dynamic", "target_length": 32768}, 16384),
    "linear": ("dense", {"rope_scaling": "linear", "target_length": 32768}, 16384),
    "self_extend": ("self_extend", {"group_size": 8, "window": 1024}, 65536),
    # group 16: Self-Extend's rule of thumb, W + (N - W) / G within 1/2 to 2/3 of the trained window,
    # holds at 32K with room to spare (group 8 reaches 4,992 of 8,192 positions there: 61%)
    "self_extend-g16": ("self_extend", {"group_size": 16, "window": 1024}, 65536),
    # group 6: at 32K the grouped positions reach 6,315 (77% of the window), a finer grouping than 8
    "self_extend-g6": ("self_extend", {"group_size": 6, "window": 1024}, 65536),
    "streaming": ("streaming", {}, 32768),
    # 0/5 at 16K (its 12K window attends densely): not run at 32K
    "streaming+yarn": ("streaming", {"window": 12288, "rope_scaling": "yarn", "rope_factor": 2.0}, 16384),
    "infllm": ("infllm", {}, 32768),
    "infllm+int8": ("infllm", {"kv_quant": "int8"}, 32768),
    "infllm+int4": ("infllm", {"kv_quant": "int4"}, 32768),
    "infllm+yarn": ("infllm", {"n_local": 4096, "rope_scaling": "yarn", "rope_factor": 2.0}, 32768),
    # compresses after a dense prefill: 0/5 at 16K, so not run at 32K (6 minutes a cell); the chunked
    # variants below compress as they go and are measured there
    "snapkv": ("snapkv", SNAP, 16384),
    "snapkv-chunk": ("snapkv", {**SNAP, "compress": "chunk"}, 32768),
    "snapkv-chunk-renumbered": ("snapkv", {**SNAP, "compress": "chunk", "positions": "renumbered"}, 32768),
    "h2o": ("snapkv", {**SNAP, "score": "h2o", "compress": "chunk", "positions": "renumbered"}, 32768),
    "tova": ("snapkv", {**SNAP, "score": "tova", "compress": "chunk", "positions": "renumbered"}, 32768),
    "squeezed": ("squeezed", SQUEEZE, 32768),
    "squeezed-2level": ("squeezed", {**SQUEEZE, "levels": 2}, 32768),
    "squeezed-threshold": ("squeezed", {**SQUEEZE, "selection": "threshold"}, 32768),
    "squeezed-full": ("squeezed", {"budget": 1.0}, 32768),  # same code path, whole context: the cost baseline
    "squeezed+int8": ("squeezed", {**SQUEEZE, "kv_quant": "int8"}, 32768),
    "squeezed-true": ("squeezed", {**SQUEEZE, "positions": "true"}, 8192),
    "squeezed-true+yarn": ("squeezed", {**SQUEEZE, "positions": "true", "rope_scaling": "yarn",
                                        "target_length": 32768}, 32768),
}


def samples(tokenizer, task: str, length: int, ruler: list[str], new_tokens: int, depths=DEPTHS, seeds=1):
    """(key, sample, scorer) for one task at one length: every depth (passkey) or subtask (RULER)
    with `seeds` seeds each."""
    if task == "passkey":
        for depth in depths:
            for seed in range(seeds):
                yield f"passkey|{depth}|{seed}", passkey_sample(tokenizer, length, depth, seed=seed), score_passkey
        return
    from longreach.bench.metrics import score_answers
    from longreach.bench.tasks import make_sample
    for subtask in ruler:
        for seed in range(seeds):
            sample = make_sample("ruler", subtask, tokenizer, length, seed=seed)
            sample.max_new_tokens = min(sample.max_new_tokens, new_tokens)
            def scorer(text, answers, meta=sample.meta):
                return score_answers(text, answers, meta)
            yield f"{subtask}|{seed}", sample, scorer


def run_cell(lm, sample, scorer, chunk: int, fixed_context: bool) -> dict:
    """Greedy generation through a Session (so the policy's counters can be read).

    `fixed_context`: the document is prefilled first and the question after it (squeezed clusters
    the document between the two, so its lookup decides the question and the answer)."""
    session = lm.new_session()
    if hasattr(session.policy, "time_whole_context"):  # squeezed: time the attention it replaces too
        session.policy.time_whole_context = True
    t0 = time.perf_counter()
    logits = session.prefill_document(sample.prompt_ids, sample.context_end if fixed_context else None, chunk)
    t1 = time.perf_counter()
    generated = []
    for _ in range(sample.max_new_tokens):
        token = int(logits.argmax())
        if token in lm.eos_ids:
            break
        generated.append(token)
        if len(generated) < sample.max_new_tokens:
            logits = session.step(token)
    t2 = time.perf_counter()
    text = lm.tokenizer.decode(generated, skip_special_tokens=True)
    cell = {"correct": float(scorer(text, sample.answers)), "prediction": text[:200],
            "answer": sample.answers[0],
            "prompt_tokens": len(sample.prompt_ids), "prompt_tps": len(sample.prompt_ids) / (t1 - t0),
            "generation_tps": max(len(generated) - 1, 0) / max(t2 - t1, 1e-9),
            "kv_bytes": session.store.nbytes}
    touched = getattr(session.policy, "touched", None)
    if touched and touched["steps"]:
        read = touched["selected"] + touched["centroids"] + touched["other"]
        cell["decode_keys_touched"] = read / touched["steps"]
        cell["decode_cost_ratio"] = (touched["context"] + touched["other"]) / max(read, 1)
        cell["decode_attention_us"], cell["decode_attention_whole_us"] = session.policy.decode_attention_us()
    return cell


def plot(cells: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = defaultdict(list)
    for c in cells:
        groups[(c["config"], c["length"])].append(c)
    fig, ax = plt.subplots(figsize=(12, 6.5))
    markers = {4096: "o", 8192: "s", 16384: "^", 32768: "D", 49152: "v", 65536: "P"}
    palette = [*plt.cm.tab20.colors, *plt.cm.tab20b.colors]  # 40 distinct colours, one per configuration
    colours = {name: palette[i % len(palette)] for i, name in enumerate(CONFIGS)}
    for (config, length), group in sorted(groups.items()):
        kv = sum(c["kv_bytes"] for c in group) / len(group) / 2**20
        accuracy = sum(c["correct"] for c in group) / len(group)
        ax.scatter(kv, accuracy, color=colours.get(config, "k"), marker=markers.get(length, "x"), s=40,
                   label=config if length == min(le for cf, le in groups if cf == config) else None)
    ax.set_xscale("log")
    ax.set_xlabel("KV memory at the end of generation (MiB, log scale)")
    ax.set_ylabel("accuracy (passkey + RULER NIAH)")
    ax.set_title("SmolLM2-135M: accuracy vs KV memory (marker: o 4K, s 8K, ^ 16K, D 32K, v 48K, P 64K)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the points
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summarise(cells: list[dict]) -> str:
    groups = defaultdict(list)
    for c in cells:
        groups[(c["config"], c["length"])].append(c)
    rows = []
    order = {name: i for i, name in enumerate(CONFIGS)}
    for (config, length), group in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1])):
        def mean(key, group=group):
            values = [c[key] for c in group if key in c]
            return sum(values) / len(values) if values else None
        by_task = defaultdict(list)
        for c in group:
            by_task[c["task"]].append(c["correct"])
        accuracy = ", ".join(f"{t} {sum(v) / len(v):.0%}" for t, v in sorted(by_task.items()))
        ratio, used, whole = mean("decode_cost_ratio"), mean("decode_attention_us"), mean("decode_attention_whole_us")
        rows.append([config, f"{length // 1024}K", accuracy, f"{mean('prompt_tps'):.0f}",
                     f"{mean('generation_tps'):.1f}", f"{mean('kv_bytes') / 2**20:.1f}",
                     f"{ratio:.1f}x" if ratio else "",
                     f"{whole:.0f} / {used:.0f} us = {whole / used:.1f}x" if used else ""])
    return markdown_table(["config", "length", "accuracy", "prefill tok/s", "decode tok/s", "KV MiB",
                           "decode keys: whole / touched", "decode attention per layer: whole / lookup"], rows)


def _kernel_cells(out: Path) -> dict:
    """decode_kernels.py's cells next to the grid's file (squeezed's decode time at 32K), if any."""
    path = out.with_name("decode_kernels.json")
    return json.loads(path.read_text()).get("cells", {}) if path.exists() else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default=",".join(LENGTHS), help="input lengths (default: %(default)s)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="configurations (see --list)")
    parser.add_argument("--tasks", default="passkey,ruler",
                        help="passkey and/or ruler (default: %(default)s)")
    parser.add_argument("--ruler", default="niah_single_2,niah_multikey_1", help="RULER NIAH subtasks")
    parser.add_argument("--ruler-new-tokens", type=int, default=24, help="generation cap for RULER answers")
    parser.add_argument("--depths", default=",".join(map(str, DEPTHS)),
                        help="passkey depths (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=1, help="seeds per passkey depth and per RULER subtask")
    parser.add_argument("--chunk", type=int, default=512, help="prefill chunk (default: %(default)s)")
    parser.add_argument("--out", default="docs/results/methods_compare.json")
    parser.add_argument("--list", action="store_true", help="print the configurations and exit")
    args = parser.parse_args()
    if args.list:
        for name, (method, options, longest) in CONFIGS.items():
            print(f"{name:26s} {method:12s} {options} (up to {longest // 1024}K)")
        return 0
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        print(f"unknown configuration(s): {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    lengths = [parse_count(x) for x in args.lengths.split(",")]
    depths = [float(x) for x in args.depths.split(",")]
    results = ResultFile(args.out, {"chunk": args.chunk, "ruler": args.ruler})
    base = longreach.load(method="dense", prefill_chunk=args.chunk)
    for name in names:
        method, options, longest = CONFIGS[name]
        lm = base.with_method(method, **options)
        for length in (le for le in lengths if le <= longest):
            for task in args.tasks.split(","):
                for key, sample, scorer in samples(base.tokenizer, task, length, args.ruler.split(","),
                                                   args.ruler_new_tokens, depths, args.samples):
                    cell_key = f"{name}|{length}|{key}"
                    if results.done(cell_key):
                        continue
                    cell = run_cell(lm, sample, scorer, args.chunk, fixed_context=lm.method.fixed_context)
                    cell |= {"config": name, "method": method, "options": options, "length": length,
                             "task": task, "sample": key}
                    results.put(cell_key, cell)
                    verdict = "OK " if cell["correct"] >= 1 else "BAD"
                    print(f"{cell_key}: {verdict} {cell['prediction'][:40]!r} "
                          f"{cell['prompt_tps']:.0f}/{cell['generation_tps']:.1f} tok/s, "
                          f"KV {cell['kv_bytes'] / 2**20:.1f} MiB", flush=True)
    cells = list(results.data["cells"].values())
    table = summarise(cells)
    out = Path(args.out)
    plot(cells, out.with_suffix(".png"))
    out.with_suffix(".md").write_text(
        "# Methods side by side on SmolLM2-135M-Instruct\n\n"
        "Command: `python benchmarks/methods_compare.py` (the whole grid; it is run in parts with "
        "`--lengths`, `--configs` and `--tasks`, each part skipping the cells already in the JSON file; "
        f"this table was last written by `--lengths {args.lengths} --configs {args.configs} "
        f"--tasks {args.tasks}`)\n\n"
        + table + "\n\n`squeezed` rows: each decode step also times exact attention over the whole context "
        "(the cost baseline of the last two columns), so their decode tok/s understate the method's own.\n"
        + f"\n{machines_line(cells)}\n\n![accuracy vs KV memory]({out.with_suffix('.png').name})\n"
        + "\n## Targets (issue 4)\n\n"
        + markdown_table(["target", "measured", "verdict"], target_rows(cells, _kernel_cells(out))) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
