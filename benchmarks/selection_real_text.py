"""Block selection on real text: essay NIAH and RULER's essay NIAH tasks, per selection strategy.

For each strategy x task x length x depth: accuracy, needle-block recall at the question
(retrievals made by the prompt's last execution block and the answer's decoding steps),
prefill tokens/s and the share of prefill time spent selecting blocks. The noise passkey is
included to show nothing regressed. Finished cells are kept: rerun to continue.

    python benchmarks/selection_real_text.py --lengths 8k,16k,32k,64k --selections paper,question_global

Prompts use the model's chat template (an instruct model answers the essay NIAH only so;
`--raw` for base models). `--options` sets further infllm options for every strategy.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from common import ResultFile, markdown_table

import longreach
from longreach.bench import make_sample, score
from longreach.diagnostics import needle_block_recall
from longreach.methods import method_config
from longreach.units import parse_count

TASKS = {  # name -> (task, subtask)
    "niah_essay": ("niah", "niah"),
    "ruler_niah_single_2": ("ruler", "niah_single_2"),
    "ruler_niah_single_3": ("ruler", "niah_single_3"),
    "ruler_niah_multikey_1": ("ruler", "niah_multikey_1"),
    "ruler_niah_multivalue": ("ruler", "niah_multivalue"),
    "ruler_niah_multiquery": ("ruler", "niah_multiquery"),
    "passkey_noise": ("passkey", "passkey"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="8k,16k,32k,64k")
    parser.add_argument("--depths", default="0.1,0.5,0.9", help="for niah and passkey (RULER draws its own)")
    parser.add_argument("--selections", default="paper,question_global",
                        help="strategies; question_global:match scores with the best logit (question_score=match); "
                             "+option=value sets an infllm option for one strategy, e.g. paper+repr_tokens=1")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--raw", dest="chat", action="store_false", help="raw prompts (default: chat template)")
    parser.add_argument("--options", default="", help="infllm options for every strategy, e.g. n_local=2048")
    parser.add_argument("--samples", type=int, default=1, help="seeds per cell")
    parser.add_argument("--out", default="docs/results/selection_real_text.json")
    args = parser.parse_args()
    lengths = [parse_count(x) for x in args.lengths.split(",")]
    depths = [float(x) for x in args.depths.split(",")]
    options = dict(item.split("=", 1) for item in args.options.split(",") if item)
    results = ResultFile(args.out, {"chat": args.chat, "options": options,
                                    "infllm_defaults": method_config("infllm").to_dict()})
    base = longreach.load(method="dense")
    for length in lengths:
        for name in args.tasks.split(","):
            task, subtask = TASKS[name]
            for depth, seed in [(d, s) for d in (depths if task != "ruler" else [None])
                                for s in range(args.samples)]:
                sample = make_sample(task, subtask, base.tokenizer, length, seed=seed, chat=args.chat, depth=depth)
                for selection in args.selections.split(","):
                    key = f"{selection}|{name}|{length}|{depth}|{seed}"
                    if results.done(key):
                        continue
                    lm = base.with_method("infllm", **{**options, **selection_options(selection)})
                    result = lm.generate(sample.prompt_ids, sample.max_new_tokens, trace=True)
                    recall = needle_block_recall(result.selections, sample.needle_token_spans,
                                                 from_position=len(sample.prompt_ids) - 1)
                    cell = {"selection": selection, "task": name, "length": length, "depth": depth,
                            "score": score(result.text, sample), "prediction": result.text[:200],
                            "answers": sample.answers, "recall": recall["recall"],
                            "recall_per_layer": recall["per_layer"], "prompt_tps": result.stats.prompt_tps,
                            "selection_share": result.selection_seconds / max(result.stats.prefill_seconds, 1e-9),
                            "haystack": sample.meta.get("haystack")}
                    results.put(key, cell)
                    print(f"{key}: score {cell['score']:.2f} recall {cell['recall']} "
                          f"{cell['prompt_tps']:.0f} tok/s, selection {cell['selection_share']:.1%} "
                          f"{cell['prediction'][:60]!r}", flush=True)
    table = summarise(results.data["cells"])
    Path(args.out).with_suffix(".md").write_text(
        "# Block selection on real text (SmolLM2-135M-Instruct, infllm)\n\n"
        f"Command: `python benchmarks/selection_real_text.py {' '.join(sys.argv[1:])}`\n\n" + table + "\n")
    print(table)
    return 0


def selection_options(spec: str) -> dict[str, str]:
    """infllm options of a selection spec: `strategy[:question_score][+option=value...]`,
    e.g. `question_global:match` or `question_global+block_size=64+topk_blocks=16`."""
    name, *pairs = spec.split("+")
    strategy, _, question_score = name.partition(":")
    options = dict(pair.split("=", 1) for pair in pairs)
    return {"selection": strategy, **({"question_score": question_score} if question_score else {}), **options}


def summarise(cells: dict) -> str:
    groups = defaultdict(list)
    for cell in cells.values():
        groups[(cell["task"], cell["length"], cell["selection"])].append(cell)
    rows = []
    for (task, length, selection), group in sorted(groups.items()):
        recalls = [c["recall"] for c in group if c["recall"] is not None]
        rows.append([task, f"{length // 1024}K", selection, f"{sum(c['score'] for c in group) / len(group):.0%}",
                     f"{sum(recalls) / len(recalls):.0%}" if recalls else "n/a",
                     f"{sum(c['prompt_tps'] for c in group) / len(group):.0f}",
                     f"{max(c['selection_share'] for c in group):.1%}", len(group)])
    return markdown_table(["task", "length", "selection", "accuracy", "needle-block recall", "prefill tok/s",
                           "selection / prefill time", "samples"], rows)


if __name__ == "__main__":
    sys.exit(main())
