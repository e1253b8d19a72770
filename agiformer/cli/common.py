"""What every command group shares: the parser that turns mistakes into one-line errors, argument
types that refuse bad values before any work starts, and checkpoint lookup."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path

from agiformer.errors import AGIFormerError
from agiformer.models.pretrained import resolve_checkpoint
from agiformer.precision import choose_precision
from agiformer.serialization import atomic_write_text

DATA_DIR = os.environ.get("AGIFORMER_DATA", "data")
MAX_SAMPLES = 100_000


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise AGIFormerError(f"{message} (see `{self.prog} --help`)")

    def parse_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        for arg in args:  # argparse drops a "--" value and hands the command an empty list instead
            if arg.startswith("-") and arg.endswith("=--"):
                self.error(f"argument {arg.split('=', 1)[0]}: expected a value, got '--'")
        return super().parse_args(args, namespace)


def formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def add_command(commands, name: str, *, help: str, examples: str, run=None) -> argparse.ArgumentParser:
    """A sub-command with its examples under --help; `run(args)` is what `main` calls for it."""
    parser = commands.add_parser(name, help=help, epilog=f"examples:\n{examples}", formatter_class=formatter)
    if run is not None:
        parser.set_defaults(run=run)
    return parser


def add_actions(parser: argparse.ArgumentParser, dest: str):
    """Sub-commands of a command group (`data build`, `mag train`): one of them is required."""
    actions = parser.add_subparsers(dest=dest, metavar="ACTION", parser_class=Parser)
    actions.required = True
    return actions


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=DATA_DIR, help="where corpora live (default: $AGIFORMER_DATA or ./data)")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … (default: cuda if available)")


def add_run_control(parser: argparse.ArgumentParser) -> None:
    """The options of a training command that continue, relocate or quieten a run."""
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--allow-recipe-change", action="store_true",
                        help="with --resume: go on although the recipe changed since the run started "
                             "(the changes are logged in metrics.jsonl)")
    parser.add_argument("--out", help="run directory (default: out/RECIPE_NAME)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


# ---- argument types: a bad value is refused by argparse, naming the option ------------------------

def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def probability(text: str) -> float:
    value = number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def plasticity(text: str) -> float:
    value = number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def top_p(text: str) -> float:
    value = number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1]: the smallest set of bytes whose probabilities sum to "
                                         f"at least this, got {text}")
    return value


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def seed(text: str) -> int:
    value = integer(text)
    if not 0 <= value < 2 ** 64:  # what torch.Generator.manual_seed takes
        raise argparse.ArgumentTypeError(f"must be in [0, 2^64), got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def positive_int(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {text}")
    return value


def at_most(limit: int):
    """A positive whole number up to `limit`: counts a user sizes (bytes to generate, samples to draw) are
    bounded, so a typo cannot start a run of days."""
    def parse(text: str) -> int:
        value = positive_int(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"must be at most {limit:,}, got {text}")
        return value
    return parse


def positive_int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers like 1024,2048, got {text!r}") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"must all be ≥ 1, got {text}")
    return values


def probability_list(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in [0, 1] like 0,0.5,1, got {text!r}") from None
    if not all(0 <= value <= 1 for value in values):
        raise argparse.ArgumentTypeError(f"must all be in [0, 1], got {text}")
    return values


def positive_float(text: str) -> float:
    value = number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def output_file(text: str) -> str:
    """A file to write: refused now if it names a directory, rather than after the work (`write_output` makes
    its folder)."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; name a file to write")
    return text


def write_output(path: str | Path, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def interrupted_exit_code(summary: dict) -> int:
    """A run stopped by a signal (after saving) exits as the signal would have: 130 for SIGINT, 143 for
    SIGTERM, so `train && eval` does not go on as if the run had finished; a process that stopped because
    another one was signalled (DDP) exits 130."""
    return 128 + signal.Signals[summary["stopped_by"]].value if summary["stopped_by"] else 130


# ---- checkpoints ------------------------------------------------------------------------------------

def load_model(path: str, device: str = "auto"):
    """A trained model from a run or checkpoint directory: a byte model, or an adapter on its base."""
    from agiformer.train.adapt import load_trained
    from agiformer.train.distributed import pick_device

    return load_trained(resolve_checkpoint(path), map_location=pick_device(device))


def model_precision(model, requested: str):
    """The precision to run `model` in: "auto" measures bf16 against fp32 at the model's width."""
    return choose_precision(requested, next(model.parameters()).device, width=model.config.d_model)


def training_context(checkpoint: Path, config) -> int:
    """The sequence length the model was trained with (trainer.json), else 4 attention spans."""
    trainer_file = checkpoint / "trainer.json"
    if trainer_file.is_file():
        try:
            return int(json.loads(trainer_file.read_text())["seq_len"])
        except (ValueError, KeyError, TypeError):
            pass
    span = attention_span(config)
    return 4 * span if span else 1024


def attention_span(config) -> int | None:
    """Bytes an AGIFORMER's attention window covers; None for a full-attention model."""
    return config.window * config.patch_size if hasattr(config, "window") else None
