"""`longreach` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import sys

from ..errors import LongreachError
from . import bench_commands, commands, serve_commands


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="longreach", description="Long-context inference beyond a model's trained window.",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"longreach {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for register in commands.REGISTER + serve_commands.REGISTER + bench_commands.REGISTER:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except LongreachError as exc:
        print(f"longreach: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("longreach: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
