"""The subcommands: passkey, ask, generate, methods."""

from __future__ import annotations

import argparse
import sys

from ..errors import LongreachError
from ..units import parse_count
from .common import (
    PrefillProgress,
    add_model_options,
    add_sampling_options,
    dump_json,
    load_lm,
    print_stats,
    read_text,
    sampling_kwargs,
)
from .serve_commands import add_store_option, question_text, run_ask_context

_FMT = argparse.ArgumentDefaultsHelpFormatter


def _passkey(sub):
    p = sub.add_parser("passkey", help="passkey retrieval at a given length", formatter_class=_FMT)
    p.add_argument("--length", default="32k", help="total tokens (prompt + answer), e.g. 4096 or 32k")
    p.add_argument("--depth", type=float, default=0.5, help="needle depth, 0 (start) .. 1 (end)")
    p.add_argument("--seed", type=int, default=0, help="picks the pass key")
    p.add_argument("--chat", action="store_true",
                   help="wrap the classic raw-text prompt in the model's chat template")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_model_options(p)
    p.set_defaults(run=run_passkey)


def run_passkey(args):
    from ..tasks import passkey_sample, score_passkey

    length = parse_count(args.length)
    if length < 64:
        raise LongreachError(f"--length {length} is too small for the passkey template")
    if not 0 <= args.depth <= 1:
        raise LongreachError("--depth must be within 0..1")
    lm = load_lm(args)
    sample = passkey_sample(lm.tokenizer, length, args.depth, args.seed, chat=args.chat)
    progress = PrefillProgress()
    result = lm.generate(sample.prompt_ids, sample.max_new_tokens, on_progress=progress)
    progress.close()
    correct = bool(score_passkey(result.text, sample.answers))
    if args.json:
        dump_json({"method": args.method, "length": length, "depth": args.depth, "answer": sample.answers[0],
                   "prediction": result.text, "correct": correct, "stats": result.stats.to_dict()})
        return 0
    print(f"pass key {sample.answers[0]} | model answered {result.text.strip()!r} | "
          f"{'CORRECT' if correct else 'WRONG'}")
    print_stats(result, args.method, file=sys.stdout)
    return 0


def _ask(sub):
    p = sub.add_parser("ask", help="answer a question about a long text file", formatter_class=_FMT)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="UTF-8 text file to read")
    source.add_argument("--context", help="id of a stored context (see `longreach context list`)")
    p.add_argument("--question", required=True, help="the question")
    add_store_option(p)
    add_model_options(p)
    add_sampling_options(p, max_new_tokens=128)
    p.set_defaults(run=run_ask)


def run_ask(args):
    if not args.question.strip():
        raise LongreachError("--question is empty")
    if args.context:
        return run_ask_context(args, _stream_out)
    document = read_text(args.file)
    sampling = sampling_kwargs(args)
    lm = load_lm(args)
    if not lm.method.fixed_context:
        user_text = f"{document}\n\n{question_text(args.question)}"
        _stream_out(lm, lm.chat_ids([{"role": "user", "content": user_text}]), args, sampling)
        return 0
    # a fixed-context method (squeezed) processes the document before the question, with the
    # same ids as a stored context of the file and a question over it
    from ..serve.prompts import chat_continuation, context_text
    context = context_text(lm, document)
    question = chat_continuation(lm, [{"role": "user", "content": question_text(args.question)}], context.head)
    _stream_out(lm, context.ids + question, args, sampling, document_end=len(context.ids))
    return 0


def _generate(sub):
    p = sub.add_parser("generate", help="continue a prompt", formatter_class=_FMT)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="prompt text")
    source.add_argument("--prompt-file", help="UTF-8 file holding the prompt")
    p.add_argument("--chat", action="store_true", help="send the prompt as a user message (chat template)")
    add_model_options(p, default_method="dense")
    add_sampling_options(p, max_new_tokens=200)
    p.set_defaults(run=run_generate)


def run_generate(args):
    text = read_text(args.prompt_file) if args.prompt_file else args.prompt
    if not text.strip():
        raise LongreachError("the prompt is empty")
    sampling = sampling_kwargs(args)
    lm = load_lm(args)
    ids = lm.chat_ids([{"role": "user", "content": text}]) if args.chat else lm.encode(text)
    _stream_out(lm, ids, args, sampling)
    return 0


def _stream_out(lm, ids, args, sampling: dict, context=None, document_end=None):
    progress = PrefillProgress()
    run = lm.run(ids, args.max_new_tokens, on_progress=progress, context=context, document_end=document_end,
                 **sampling)
    for piece in run:
        progress.close()
        sys.stdout.write(piece)
        sys.stdout.flush()
    progress.close()
    sys.stdout.write("\n")
    print_stats(run.result, args.method)


def _methods(sub):
    p = sub.add_parser("methods", help="list methods and their options", formatter_class=_FMT)
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(run=run_methods)


def run_methods(args):
    from ..methods import METHODS

    if args.json:
        dump_json({name: {"summary": cls.summary,
                          "options": {o: {"type": t, "default": d, "help": h} for o, t, d, h in cls.describe()}}
                   for name, cls in METHODS.items()})
        return 0
    for name, cls in METHODS.items():
        print(f"{name}: {cls.summary}")
        for option, kind, default, help_text in cls.describe():
            print(f"    {option:<14} {kind:<12} default {default!s:<8} {help_text}")
    return 0


REGISTER = [_passkey, _ask, _generate, _methods]
