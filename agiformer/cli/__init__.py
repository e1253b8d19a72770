"""The `agiformer` command line: data, train, adapt, eval, generate, recall, inspect, patch, serve, mag.

Each command group registers its own sub-parser (`data`, `byte_model`, `patch`, `serve`, `mag`); `main` runs the one
chosen. Every user mistake (bad argument, missing file, damaged checkpoint, unknown corpus) ends with
one line on stderr saying what is wrong and what to do, and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from agiformer.cli import byte_model, data, mag, patch, serve
from agiformer.cli.common import Parser, formatter
from agiformer.errors import AGIFormerError


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="agiformer", formatter_class=formatter,
                    description="Byte-level language models with fast-weight memory and adaptive computation.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    for group in (data, byte_model, patch, serve, mag):
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.run(args) or 0
    except AGIFormerError as error:
        print(f"agiformer: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("agiformer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
