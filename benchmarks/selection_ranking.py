"""Where each selection strategy ranks the needle's block, from one prefill per sample.

A prefill with `infllm` records, per layer, the question's queries (the prompt's last
execution block) and the memory keys and representatives. Every strategy of
`longreach.methods.selection` then scores the same memory, and we report the share of
layers whose top-k holds a needle block (recall@k) and the needle's median rank. This
separates "did the strategy point at the needle" from "did the model then answer" (that is
benchmarks/selection_real_text.py), and costs one prefill for all strategies.

    python benchmarks/selection_ranking.py --lengths 16k,32k --depths 0.1,0.5,0.9
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from common import ResultFile, markdown_table

import longreach
from longreach.bench import make_sample
from longreach.methods import method_config, selection
from longreach.methods.selection import SelectionRequest, block_mass_z, block_match_z, consensus, representative_scores
from longreach.units import parse_count

TASKS = {"niah_essay": ("niah", "niah"), "ruler_niah_single_2": ("ruler", "niah_single_2"),
         "ruler_niah_multikey_1": ("ruler", "niah_multikey_1"), "passkey_noise": ("passkey", "passkey")}


class Recorder(selection.PaperSelector):
    """The paper's selection, keeping what the prompt's last execution block saw per layer."""

    seen: dict[int, SelectionRequest] = {}

    def select(self, request):
        if request.phase == "final" and request.last_block_of_chunk:
            # A copy of the memory as it is now: the segment keeps growing while the answer decodes.
            Recorder.seen[request.layer] = SelectionRequest(**{**request.__dict__, "memory": None,
                                                               "memory_keys": request.all_keys().clone()})
        return super().select(request)


def strategy_scores(request: SelectionRequest, config, block_size: int) -> tuple[dict, dict]:
    """Block scores [n] (or [Hkv, n] per KV head) for one layer's question, per strategy, and
    the layer's z-scores [H, n] per pooled strategy (pooled over layers by the caller)."""
    question = selection.QuestionSelector(config)
    mass = question.block_mass(request)  # [H, n]
    n_kv = request.n_kv_heads
    cluster = selection.ClusterSelector(config)
    keys = request.all_keys()
    centroids = torch.stack([cluster.representative(keys[:, :, b:b + block_size], torch.zeros(1, 1, mass.shape[0]))
                             for b in range(0, keys.shape[2] - block_size + 1, block_size)])
    pooled = {"question_global": block_mass_z(request, config.question_tokens),
              "question_global:match": block_match_z(request, config.question_tokens),
              "cluster": cluster.question_z(SelectionRequest(**{**request.__dict__, "reprs": centroids}))}
    return {
        "paper": representative_scores(request),
        "question": mass.sum(dim=0),
        "question_per_head": mass.view(n_kv, -1, mass.shape[-1]).sum(dim=1),
        **{f"{name} (layer)": consensus(z) for name, z in pooled.items()},
    }, pooled


def needle_rank(scores: torch.Tensor, needle: list[int]) -> float:
    """Best rank (0 = first) of any needle block; averaged over KV heads for per-head scores."""
    order = scores.argsort(dim=-1, descending=True)
    ranks = torch.stack([(order == b).float().argmax(dim=-1) for b in needle]).amin(dim=0)
    return float(ranks.float().mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="16k")
    parser.add_argument("--depths", default="0.1,0.5,0.9")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--k", type=int, default=8, help="recall@k")
    parser.add_argument("--out", default="docs/results/selection_ranking.json")
    args = parser.parse_args()
    config = method_config("infllm")
    results = ResultFile(args.out, {"chat": True, "infllm_defaults": config.to_dict()})
    selection.SELECTORS["record"] = Recorder
    base = longreach.load(method="dense")
    lm = base.with_method("infllm", selection="record")
    for length in (parse_count(x) for x in args.lengths.split(",")):
        for name in args.tasks.split(","):
            task, subtask = TASKS[name]
            for depth in [float(d) for d in args.depths.split(",")] if task != "ruler" else [None]:
                key = f"{name}|{length}|{depth}"
                if results.done(key):
                    continue
                sample = make_sample(task, subtask, base.tokenizer, length, seed=0, chat=task != "passkey",
                                     depth=depth)
                Recorder.seen = {}
                lm.generate(sample.prompt_ids, 1, trace=True)
                results.put(key, measure(sample, config, Recorder.seen, args.k) | {"task": name, "length": length})
                print(key, {s: f"{v['recall']:.0%}" for s, v in results.data["cells"][key]["strategies"].items()},
                      flush=True)
    write_table(results, args)
    return 0


def measure(sample, config, seen: dict[int, SelectionRequest], k: int) -> dict:
    bs = config.block_size
    first = config.n_init  # memory starts after the sinks
    per_strategy: dict[str, list[float]] = {}
    votes: dict[str, list[torch.Tensor]] = {}
    for layer in sorted(seen):
        request = seen[layer]
        n_blocks = request.n_tokens // bs
        needle = sorted({(p - first) // bs for a, b in sample.needle_token_spans for p in range(a, b)
                         if 0 <= (p - first) // bs < n_blocks})
        scores, pooled = strategy_scores(request, config, bs)
        for name, value in scores.items():
            per_strategy.setdefault(name, []).append(needle_rank(value, needle))
        for name, z in pooled.items():
            votes.setdefault(name, []).append(z)
    for name, layers in votes.items():
        per_strategy[f"{name} (all layers)"] = [needle_rank(consensus(torch.stack(layers)), needle)] * len(seen)
    return {"needle_blocks": needle, "strategies": {
        name: {"recall": sum(r < k for r in ranks) / len(ranks), "median_rank": statistics.median(ranks)}
        for name, ranks in per_strategy.items()}}


def write_table(results: ResultFile, args) -> None:
    cells = results.data["cells"]
    names = list(next(iter(cells.values()))["strategies"]) if cells else []
    rows = [[key.replace("|", " "), *[f"{c['strategies'][n]['recall']:.0%} ({c['strategies'][n]['median_rank']:.0f})"
                                     for n in names]] for key, c in sorted(cells.items())]
    table = markdown_table(["sample (task length depth)", *names], rows)
    Path(args.out).with_suffix(".md").write_text(
        "# Where each strategy ranks the needle's block (SmolLM2-135M-Instruct, infllm defaults)\n\n"
        f"Command: `python benchmarks/selection_ranking.py {' '.join(sys.argv[1:])}`\n\n"
        f"Per sample and strategy: share of layers whose top-{args.k} blocks hold a needle block "
        "(median rank of the needle's block in parentheses, 0 = first) at the prompt's last "
        "execution block.\n\n" + table + "\n")
    print(table)


if __name__ == "__main__":
    sys.exit(main())
