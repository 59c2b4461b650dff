"""The serving subcommands: `serve`, `context add|list|rm`, and `ask --context`."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
import time
from pathlib import Path

from ..errors import LongreachError
from .common import PrefillProgress, add_model_options, dump_json, load_lm, parse_options, read_text

_FMT = argparse.ArgumentDefaultsHelpFormatter
QUESTION = "Answer the question about the text above.\nQuestion: {question}"


def question_text(question: str) -> str:
    """The user turn asking `question` about a document placed before it (shared by `ask`)."""
    return QUESTION.format(question=question)


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=None,
                        help="context store directory (default: $LONGREACH_STORE, else ./contexts)")


def _store_root(args) -> Path:
    from ..serve.config import default_store
    return Path(args.store) if args.store else default_store()


# --- serve -----------------------------------------------------------------------------------
def _serve(sub):
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server with a context store",
                       formatter_class=_FMT)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (loopback only by default)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--api-key-env", default=None, metavar="VAR",
                   help="require 'Authorization: Bearer <key>', the key read from this environment variable")
    add_store_option(p)
    p.add_argument("--served-model-name", default="longreach", help="the model id clients send")
    p.add_argument("--queue-size", type=int, default=16, help="requests waiting for the model; more get 429")
    p.add_argument("--max-prompt-tokens", type=int, default=32768, help="new prompt tokens per request")
    p.add_argument("--max-context-tokens", type=int, default=262144, help="tokens of one stored context")
    p.add_argument("--max-new-tokens", type=int, default=4096, help="largest max_tokens accepted")
    p.add_argument("--max-body-mb", type=float, default=8, help="request body cap (MiB)")
    p.add_argument("--max-upload-mb", type=float, default=64, help="POST /v1/contexts body cap (MiB)")
    p.add_argument("--cache-mb", type=float, default=8192, help="stored contexts kept mapped in memory (MiB)")
    p.add_argument("--verify-contexts", action="store_true",
                   help="check a context's full checksum when first loaded (slower for large contexts)")
    p.add_argument("--shutdown-timeout", type=float, default=10,
                   help="seconds to finish in-flight work on stop")
    p.add_argument("--log-level", default="info", help="uvicorn log level")
    add_model_options(p)
    p.set_defaults(run=run_serve)


def _api_key(name: str | None) -> str | None:
    if name is None:
        return None
    key = os.environ.get(name, "")
    if not key.strip():
        raise LongreachError(f"--api-key-env {name}: the environment variable is not set or empty")
    return key.strip()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_serve(args):
    try:
        import uvicorn

        from ..serve.app import create_app
    except ImportError as exc:
        raise LongreachError(f"serving needs the serve extra ({exc.name} is missing): "
                             "pip install 'longreach[serve]'") from None
    from ..serve.config import ServerConfig

    api_key = _api_key(args.api_key_env)
    if not _is_loopback(args.host) and api_key is None:
        print(f"warning: listening on {args.host} without an API key (see --api-key-env)", file=sys.stderr)
    mib = 1 << 20
    try:
        config = ServerConfig(
            store=_store_root(args), model_name=args.served_model_name, api_key=api_key,
            queue_size=args.queue_size, max_prompt_tokens=args.max_prompt_tokens,
            max_context_tokens=args.max_context_tokens, max_new_tokens=args.max_new_tokens,
            default_max_tokens=min(512, args.max_new_tokens), max_body_bytes=int(args.max_body_mb * mib),
            max_upload_bytes=int(args.max_upload_mb * mib), cache_bytes=int(args.cache_mb * mib),
            verify_contexts=args.verify_contexts, shutdown_grace_seconds=args.shutdown_timeout)
    except ValueError as exc:
        raise LongreachError(str(exc)) from None
    lm = load_lm(args)
    app = create_app(lm, config)
    print(f"serving {config.model_name} ({lm.method.name}) at http://{args.host}:{args.port}/v1, "
          f"contexts in {config.store}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=args.shutdown_timeout)
    return 0


# --- context add | list | rm ---------------------------------------------------------------
def _context(sub):
    p = sub.add_parser("context", help="manage stored contexts (documents processed once)",
                       formatter_class=_FMT)
    actions = p.add_subparsers(dest="context_command", required=True, parser_class=type(p))
    add = actions.add_parser("add", help="process a text file and store its memory", formatter_class=_FMT)
    add.add_argument("file", help="UTF-8 text file")
    add.add_argument("--name", default=None, help="context id (default: from the file name)")
    add.add_argument("--format", choices=("chat", "raw"), default="chat",
                     help="chat: questions come as chat messages; raw: completion prompts continue the text")
    add.add_argument("--system", default=None, help="system message the chat starts with")
    add.add_argument("--max-tokens", type=int, default=262144, help="refuse longer documents")
    add_store_option(add)
    add_model_options(add)
    add.set_defaults(run=run_context_add)
    listing = actions.add_parser("list", help="list stored contexts", formatter_class=_FMT)
    listing.add_argument("--verify", action="store_true", help="check every file's full checksum")
    listing.add_argument("--json", action="store_true", help="print as JSON")
    add_store_option(listing)
    listing.set_defaults(run=run_context_list)
    remove = actions.add_parser("rm", help="remove a stored context", formatter_class=_FMT)
    remove.add_argument("id", help="context id")
    add_store_option(remove)
    remove.set_defaults(run=run_context_rm)


def _default_name(path: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip(".-_")[:64]
    return name or "context"


def run_context_add(args):
    from ..kv.persist import Fingerprint
    from ..serve.contexts import ContextStore, validate_id

    name = validate_id(args.name or _default_name(args.file))
    text = read_text(args.file)
    store = ContextStore(_store_root(args))
    if store.path(name).exists():
        raise LongreachError(f"context {name!r} already exists; remove it first: longreach context rm {name}")
    lm = load_lm(args)
    store.fingerprint = Fingerprint.of(lm)
    progress = PrefillProgress(min_tokens=0)
    start = time.perf_counter()
    try:
        info = store.add(lm, name, text, args.format, args.system, max_tokens=args.max_tokens,
                         on_progress=progress, source=str(args.file))
    finally:
        progress.close()
    print(f"{info.id}\t{info.tokens} tokens\t{info.bytes / 2**20:.1f} MiB\t"
          f"{time.perf_counter() - start:.1f} s")
    return 0


def run_context_list(args):
    from ..serve.contexts import ContextStore

    infos = ContextStore(_store_root(args)).list(verify=args.verify)
    if args.json:
        dump_json({"contexts": [i.to_dict() for i in infos]})
        return 0
    if not infos:
        print(f"no contexts in {_store_root(args)}")
    for i in infos:
        detail = f"error: {i.error}" if i.status == "corrupt" else f"{i.method}, {i.format}"
        print(f"{i.id}\t{i.status}\t{i.tokens} tokens\t{i.bytes / 2**20:.1f} MiB\t{detail}")
    return 0


def run_context_rm(args):
    from ..serve.contexts import ContextStore, validate_id

    ContextStore(_store_root(args)).remove(validate_id(args.id))
    print(f"removed {args.id}")
    return 0


# --- ask --context ---------------------------------------------------------------------------
def run_ask_context(args, stream_out):
    from .common import sampling_kwargs

    """`longreach ask --context ID`: answer over a stored context, prefilling only the question."""
    from ..kv.persist import Fingerprint
    from ..methods import method_config
    from ..serve.contexts import ContextStore, validate_id
    from ..serve.prompts import chat_continuation, encode_text

    sampling = sampling_kwargs(args)
    store = ContextStore(_store_root(args))
    manifest = store.manifest(validate_id(args.context))
    saved = manifest.model_fingerprint
    wanted = method_config(args.method, parse_options(args.option))
    if (wanted.name, _jsonable(wanted.memory_options())) != (saved.method, saved.method_options):
        options = " ".join(f"-o {k}={v}" for k, v in saved.method_options.items() if v is not None)
        raise LongreachError(f"context {args.context!r} was added with {saved.describe()}; "
                             f"run with --method {saved.method} {options}".rstrip())
    lm = load_lm(args)
    store.fingerprint = Fingerprint.of(lm)
    start = time.perf_counter()
    memory = store.load(lm, args.context)
    loaded = time.perf_counter() - start
    if manifest.extra.get("format") == "chat":
        messages = [{"role": "user", "content": question_text(args.question)}]
        ids = chat_continuation(lm, messages, manifest.extra.get("head", ""))
    else:
        ids = encode_text(lm.tokenizer, "\n\n" + question_text(args.question))
    print(f"context {args.context}: {memory.position} tokens loaded in {loaded:.2f} s", file=sys.stderr)
    stream_out(lm, ids, args, sampling, context=memory)
    return 0


def _jsonable(options: dict) -> dict:
    import json
    return json.loads(json.dumps(options, sort_keys=True, default=str))


REGISTER = [_serve, _context]
