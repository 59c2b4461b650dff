"""The benchmark subcommands: `bench` (resumable sweeps), `report` and `lm-eval`."""

from __future__ import annotations

import argparse
import sys

from ..errors import LongreachError
from .common import DECODE_WEIGHTS_HELP, parse_options


class _FMT(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown only where they say something (not None, empty lists or flags)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool) or action.default == [] \
                or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)



def _split(values: list[str]) -> list[str] | None:
    items = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return items or None


def _bench(sub):
    p = sub.add_parser("bench", help="run a benchmark sweep (resumable) into a results directory",
                       formatter_class=_FMT,
                       description="Tasks x lengths x depths x methods x samples, one JSON line per sample. "
                                   "Run it again to resume: finished samples are skipped.")
    task = p.add_argument_group("task")
    task.add_argument("--task", required=True,
                      help="passkey, niah, ruler, infinitebench, longbench, longbench2 or jsonl")
    task.add_argument("--subtasks", "--datasets", dest="subtasks", action="append", default=[],
                      metavar="A,B", help="subtasks (ruler, infinitebench) or datasets (longbench); "
                                          "default: the task's standard set")
    task.add_argument("--lengths", default=None,
                      help="total token budgets, counted as RULER does (chat template + prompt + answer "
                           "prefix + tokens to generate): 4k,8k,32k or START:STOP:COUNT such as 2k:64k:8 "
                           "(default 4k)")
    task.add_argument("--max-length", default=None,
                      help="longbench, longbench2: LongBench's max_length, a cap in tokens on the raw prompt, "
                           "truncated in the middle before the chat template (the template and the answer "
                           "come on top, as in LongBench's pred.py); other tasks: a total budget, as --lengths. "
                           "Same syntax as --lengths")
    task.add_argument("--depths", default=None,
                      help="needle depths in percent: 0:100:11 or 10,50,90 (passkey, niah, infinitebench; "
                           "default 50)")
    task.add_argument("--samples", type=int, default=None,
                      help="samples per subtask, length and depth (default 5, niah 1); data tasks: at most "
                           "this many items per dataset (default all)")
    task.add_argument("--seed", type=int, default=0, help="seed of the first sample (sample i uses seed+i)")
    mode = task.add_mutually_exclusive_group()
    mode.add_argument("--chat", dest="chat", action="store_true", default=True,
                      help="wrap prompts in the model's chat template")
    mode.add_argument("--raw", dest="chat", action="store_false", help="raw prompts, for base models")
    task.add_argument("--data", default=None, help="data directory or file (longbench, longbench2, jsonl)")
    task.add_argument("--squad", default=None, help="SQuAD v2 dev JSON for RULER qa_1")
    task.add_argument("--hotpotqa", default=None, help="HotpotQA dev distractor JSON for RULER qa_2")
    task.add_argument("--max-prompt-tokens", type=int, default=None,
                      help="longbench, longbench2 with --lengths: also cap the raw prompt at this many tokens "
                           "(LongBench's model2maxlen); with --max-length, that is the cap")
    task.add_argument("--longbench-e", action="store_true", help="read LongBench-E files ({dataset}_e.jsonl)")
    task.add_argument("--max-new-tokens", type=int, default=None,
                      help="cap every task's generation length (smoke runs; part of the configuration)")
    model = p.add_argument_group("model and methods")
    model.add_argument("--model", default=None,
                       help="hub id, local directory or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    model.add_argument("--methods", "--method", dest="methods", action="append", default=[],
                       metavar="M[:K=V,...]",
                       help="methods, comma-separated, each with options: dense,infllm:selection=question "
                            "(default infllm)")
    model.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                       help="option for every listed method that has it, repeatable")
    model.add_argument("--prefill-chunk", type=int, default=512, help="prompt tokens per forward pass")
    model.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    model.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: fp32 on CPU)")
    model.add_argument("--decode-weights", default=None, metavar="float16", help=DECODE_WEIGHTS_HELP)
    run = p.add_argument_group("run")
    run.add_argument("--out", required=True, help="results directory (created; reused to resume)")
    run.add_argument("--ray", action="store_true", help="run the cells on Ray workers (one model each)")
    run.add_argument("--ray-address", default=None,
                     help="Ray cluster address (e.g. auto or ray://head:10001); implies --ray")
    run.add_argument("--workers", type=int, default=None,
                     help="Ray workers (default: one per GPU, else one per node)")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(run=run_bench_command)


def bench_config(args):
    """A BenchConfig from parsed arguments: every check that needs no model happens here."""
    from ..bench.cells import parse_depths, parse_lengths, parse_methods
    from ..bench.runner import BenchConfig
    from ..bench.sources import SweepSpec
    from ..bench.tasks import TaskOptions, get_task
    from ..models.adapter import check_decode_weights

    spec = get_task(args.task)
    if args.lengths and args.max_length:
        raise LongreachError("give --lengths or --max-length, not both")
    caps_prompt = bool(args.max_length) and spec.caps_prompt
    if caps_prompt and args.max_prompt_tokens is not None:
        raise LongreachError(f"give --max-length or --max-prompt-tokens, not both: for {args.task} both cap "
                             "the raw prompt")
    lengths = parse_lengths(args.lengths or args.max_length or "4k")
    depths = parse_depths(args.depths) if args.depths else None
    if args.workers is not None and args.workers < 1:
        raise LongreachError("--workers must be >= 1")
    options = TaskOptions(data=args.data, squad=args.squad, hotpotqa=args.hotpotqa,
                          max_prompt_tokens=args.max_prompt_tokens, longbench_e=args.longbench_e,
                          length_caps_prompt=caps_prompt)
    if spec.from_data and args.data is None:
        raise LongreachError(f"--task {args.task} reads local files: pass --data")
    sweep = SweepSpec(args.task, _split(args.subtasks), lengths, depths, args.samples, args.seed, args.chat,
                      options)
    methods = parse_methods(args.methods or ["infllm"], parse_options(args.option))
    check_decode_weights(args.decode_weights, "--decode-weights")
    return BenchConfig(sweep, args.out, methods, args.model, args.max_new_tokens, args.device, args.dtype,
                       args.prefill_chunk, bool(args.ray or args.ray_address), args.ray_address, args.workers,
                       args.progress, decode_weights=args.decode_weights)


def run_bench_command(args):
    from ..bench.runner import run_bench

    config = bench_config(args)
    summary = run_bench(config)
    print(f"{config.out}: {summary.line()}", file=sys.stderr)
    print(f"report: longreach report {config.out}", file=sys.stderr)
    return 0


def _report(sub):
    p = sub.add_parser("report", help="write report.md and report.html for a results directory",
                       formatter_class=_FMT)
    p.add_argument("dir", help="results directory written by `longreach bench`")
    p.add_argument("--threshold", type=float, default=85.6,
                   help="RULER effective-length bar (Llama-2-7B-chat at 4K)")
    p.set_defaults(run=run_report)


def run_report(args):
    from ..bench.report import write_report

    paths = write_report(args.dir, threshold=args.threshold)
    for path in paths:
        print(path)
    return 0


def _lm_eval(sub):
    p = sub.add_parser("lm-eval", help="run lm-evaluation-harness with longreach registered as a model",
                       description="Passes its arguments to lm-eval with `--model longreach` available, e.g. "
                                   "longreach lm-eval run --model longreach --model_args method=infllm "
                                   "--tasks ...  (--install-plugin makes plain `lm_eval` know it too)")
    p.add_argument("--install-plugin", action="store_true",
                   help="make `lm_eval --model longreach` work in this environment (writes a .pth hook)")
    p.add_argument("--uninstall-plugin", action="store_true", help="remove that hook")
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="arguments for lm-eval")
    p.set_defaults(run=run_lm_eval)


def run_lm_eval(args):
    from ..bench import lm_eval_plugin

    if args.install_plugin or args.uninstall_plugin:
        path = lm_eval_plugin.install() if args.install_plugin else lm_eval_plugin.uninstall()
        print(f"{'wrote' if args.install_plugin else 'removed'} {path}")
        return 0
    return lm_eval_plugin.run_cli(args.lm_eval_args)


REGISTER = [_bench, _report, _lm_eval]
