"""Stored contexts: a new question over a saved document vs processing document + question from scratch.

For each method and document length, in the same run on SmolLM2-135M-Instruct:
  scratch     time to first token for document + question processed from nothing;
  add         time to prefill the document and save its memory (safetensors + manifest);
  cold load   time for a fresh context store to map the saved memory after its file pages were
              evicted from the OS cache (posix_fadvise DONTNEED), as a restarted server sees it;
  cold TTFT   load + question prefill + first token; warm TTFT: the same with the context in memory
              (median of three questions);
  bytes on disk per 1K context tokens, and whether the stored answer equals the scratch answer.
The document is offline filler (varied sentences) with one fact in the middle; the question asks
for it. The context is cut to a multiple of the prefill chunk so both paths run the same chunks.
Finished cells are kept in the JSON file: interrupt and rerun to continue.

    python benchmarks/context_reuse.py                          # 32K and 64K, infllm (long on 2 cores)
    python benchmarks/context_reuse.py --lengths 2k --out /tmp/smoke.json   # a quick smoke run
    python benchmarks/context_reuse.py --methods infllm,streaming -o infllm:topk_blocks=8
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import ResultFile, markdown_table

import longreach
from longreach.kv.persist import TENSORS_FILE, Fingerprint
from longreach.serve.contexts import ContextStore
from longreach.serve.prompts import chat_continuation, chat_head, encode_text
from longreach.units import parse_count

FACT = "The warranty period of the Zentrix 4000 is seven years, starting on the day of purchase."
QUESTION = ("Answer the question about the text above.\n"
            "Question: What is the warranty period of the Zentrix 4000?")
COLOURS = ("red", "green", "blue", "amber", "violet", "grey", "white", "black")
THINGS = ("lamp", "valve", "pump", "door", "fan", "sensor", "panel", "cable")
NAMES = ("Ada", "Bo", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana", "Ivo", "Jun")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def filler(index: int) -> str:
    return (f"Note {index}: the {COLOURS[index % 8]} {THINGS[index * 3 % 8]} in room {index * 37 % 211} "
            f"was checked on {DAYS[index % 7]} by {NAMES[index * 7 % 10]}, "
            f"who logged {index * 13 % 97} units.")


def document_ids(lm, n_tokens: int, chunk: int) -> tuple[list[int], str]:
    """Chat-context ids (template opening + document) of exactly a multiple of `chunk` near `n_tokens`."""
    head = chat_head(lm.tokenizer)
    per_sentence = len(encode_text(lm.tokenizer, " ".join(filler(i) for i in range(50)))) / 50
    count = int(n_tokens / per_sentence) + 20
    sentences = [filler(i) for i in range(count)]
    sentences.insert(count // 2, FACT)
    ids = encode_text(lm.tokenizer, head + " ".join(sentences))
    target = n_tokens - n_tokens % chunk
    if len(ids) < target:
        raise SystemExit(f"document too short: {len(ids)} < {target} tokens")
    return ids[:target], head


def evict_from_page_cache(path: Path) -> None:
    """Drop the file's pages from the OS cache (they are clean after fsync), so the next read hits disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def first_token(lm, ids: list[int], max_new_tokens: int, context=None) -> tuple[float, str]:
    """(seconds to the first text piece, full answer) of a greedy generation."""
    start = time.perf_counter()
    run = lm.run(ids, max_new_tokens, context=context, temperature=0.0)
    ttft = None
    for _ in run:
        if ttft is None:
            ttft = time.perf_counter() - start
    return (ttft if ttft is not None else time.perf_counter() - start), run.result.text


def run_cell(lm, length: int, max_new_tokens: int, root: Path) -> dict:
    context_ids, head = document_ids(lm, length, lm.prefill_chunk)
    question_ids = chat_continuation(lm, [{"role": "user", "content": QUESTION}], head)

    scratch_ttft, scratch_answer = first_token(lm, context_ids + question_ids, max_new_tokens)
    print(f"  scratch: first token after {scratch_ttft:.1f} s: {scratch_answer!r}", flush=True)

    store = ContextStore(root, Fingerprint.of(lm))
    name = f"doc-{lm.method.name}-{length}"
    if store.path(name).exists():
        store.remove(name)
    start = time.perf_counter()
    info = store.add_ids(lm, name, context_ids, extra={"format": "chat", "head": head})
    add_seconds = time.perf_counter() - start
    evict_from_page_cache(store.path(name) / TENSORS_FILE)

    cold = ContextStore(root, Fingerprint.of(lm))  # a restarted server: nothing mapped, nothing cached
    start = time.perf_counter()
    memory = cold.load(lm, name)
    load_seconds = time.perf_counter() - start
    question_ttft, stored_answer = first_token(lm, question_ids, max_new_tokens, context=memory)
    warm = [first_token(lm, question_ids, max_new_tokens, context=cold.load(lm, name)) for _ in range(3)]
    warm_ttft, warm_answer = sorted(warm)[1]  # the median of three: one run varies by ~20% here
    cold_ttft = load_seconds + question_ttft
    print(f"  stored: load {load_seconds:.2f} s, first token {cold_ttft:.2f} s cold / "
          f"{warm_ttft:.2f} s warm: {stored_answer!r}", flush=True)
    cold.remove(name)
    return {"method": lm.method.name, "options": lm.method.to_dict(), "length": length,
            "context_tokens": len(context_ids), "question_tokens": len(question_ids),
            "scratch_ttft_s": scratch_ttft, "add_s": add_seconds, "bytes": info.bytes,
            "bytes_per_1k_tokens": info.bytes / len(context_ids) * 1000, "load_s": load_seconds,
            "cold_ttft_s": cold_ttft, "warm_ttft_s": warm_ttft, "warm_runs_s": [t for t, _ in warm],
            "ttft_ratio": cold_ttft / scratch_ttft,
            "same_answer": stored_answer == scratch_answer and all(a == stored_answer for _, a in warm),
            "scratch_answer": scratch_answer, "stored_answer": stored_answer,
            "fact_found": "seven" in stored_answer.lower() or "7" in stored_answer}


LEGEND = ("TTFT: time to the first answer token. Warm: the stored context mapped and its pages in memory, "
          "as a server keeps recently used contexts (median of three questions). Cold: a fresh store maps "
          "the saved memory whose file pages were evicted from the OS cache, as after a restart. Targets "
          "(issue 5): a new question over a stored 64K context <= 1% of scratch, load <= 2 s.")


def summarise(cells: list[dict]) -> str:
    rows = []
    for c in sorted(cells, key=lambda c: (c["method"], c["length"])):
        quant = c["options"].get("kv_quant")
        rows.append([c["method"] + (f" + {quant} KV" if quant else ""), f"{c['context_tokens'] // 1024}K",
                     f"{c['scratch_ttft_s']:.1f}", f"{c['add_s']:.1f}", f"{c['load_s']:.2f}",
                     f"{c['cold_ttft_s']:.2f}", f"{c['warm_ttft_s']:.2f}",
                     f"{c['warm_ttft_s'] / c['scratch_ttft_s']:.2%}", f"{c['ttft_ratio']:.2%}",
                     f"{c['bytes'] / 2**20:.0f}", f"{c['bytes_per_1k_tokens'] / 2**20:.1f}",
                     "yes" if c["same_answer"] else "no", "yes" if c["fact_found"] else "no"])
    return markdown_table(["method", "context", "scratch TTFT s", "add s", "cold load s", "cold TTFT s",
                           "warm TTFT s", "warm/scratch", "cold/scratch", "MiB on disk", "MiB per 1K tok",
                           "same answer", "fact found"], rows)


def parse_method_options(pairs: list[str], methods: list[str]) -> dict[str, dict]:
    options: dict[str, dict] = {m: {} for m in methods}
    for pair in pairs:
        method, sep, rest = pair.partition(":")
        key, eq, value = rest.partition("=")
        if not sep or not eq or method not in options:
            raise SystemExit(f"-o {pair!r}: expected METHOD:KEY=VALUE for one of {', '.join(methods)}")
        options[method][key] = value
    return options


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="32k,64k", help="document lengths in tokens")
    parser.add_argument("--methods", default="infllm", help="comma-separated methods")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="METHOD:KEY=VALUE",
                        help="method option, repeatable")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="answer length")
    parser.add_argument("--store", default=None, help="where contexts are written (default: a temp dir)")
    parser.add_argument("--out", default="docs/results/context_reuse.json", help="JSON results (.md beside)")
    args = parser.parse_args()
    lengths = [parse_count(x) for x in args.lengths.split(",")]
    methods = args.methods.split(",")
    options = parse_method_options(args.option, methods)
    results = ResultFile(args.out, {"options": options, "max_new_tokens": args.max_new_tokens})
    root = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="context-reuse-"))
    base = longreach.load(method="dense")
    try:
        for method in methods:
            lm = base.with_method(method, **options[method])
            for length in lengths:
                key = f"{method}|{length}"
                if results.done(key):
                    continue
                print(f"{key}:", flush=True)
                results.put(key, run_cell(lm, length, args.max_new_tokens, root))
    finally:
        if not args.store:
            shutil.rmtree(root, ignore_errors=True)
    table = summarise(list(results.data["cells"].values()))
    command = "python benchmarks/context_reuse.py " + " ".join(sys.argv[1:])
    Path(args.out).with_suffix(".md").write_text(
        "# Stored contexts vs processing from scratch (SmolLM2-135M-Instruct)\n\n"
        f"Command: `{command.strip()}`\n\n{LEGEND}\n\n" + table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
