"""The byte model's commands: train a recipe, adapt a trained model to other text (adapt), score a
checkpoint (eval), stream text (generate), needle recall (recall) and a look inside (inspect)."""

from __future__ import annotations

import codecs
import json
import math
import sys
from pathlib import Path

from agiformer.cli.common import (
    MAX_SAMPLES, add_command, add_data_dir, add_device, add_run_control, at_most, attention_span,
    interrupted_exit_code, load_model, model_precision, non_negative_float, output_file, plasticity,
    positive_float, positive_int, probability, resolve_checkpoint, seed, top_p, training_context, write_output,
)
from agiformer.cli.data import baseline_line
from agiformer.errors import AGIFormerError
from agiformer.precision import PRECISIONS, autocast

MAX_GENERATED_BYTES = 1_000_000  # about half an hour of streaming on a laptop CPU
MAX_PROMPT_BYTES = MAX_GENERATED_BYTES
AUTO_PRECISION = "auto (default): bf16 where this machine runs it faster than fp32, measured"
# starting learning rates of `agiformer adapt`: SVF's z-vectors take the paper's 2e-3; LoRA and full fine-tuning
# move weights the base already trained, more gently
ADAPT_LR = {"svf": 2e-3, "lora": 1e-3, "full": 3e-4}


def register(commands) -> None:
    train = add_command(commands, "train", help="train a recipe", run=run_train, examples="""\
  agiformer train runs/demo-en.toml
  agiformer train runs/demo-en.toml --resume    # continue exactly where it stopped
  agiformer train runs/demo-en.toml --steps 20 --out /tmp/smoke
  torchrun --nproc_per_node 2 -m agiformer train runs/en-1h.toml""")
    train.add_argument("recipe", help="a recipe TOML file, e.g. runs/demo-en.toml")
    train.add_argument("--steps", type=positive_int,
                       help="override the recipe's step count (with a time budget: the most it may take)")
    train.add_argument("--minutes", type=positive_float,
                       help="train for this wall-clock budget: the steps that fit are fixed after timing the first "
                            "ones and re-timed at a quarter, a half and three quarters of them")
    add_run_control(train)

    adapt = add_command(commands, "adapt", help="train an adapter of a trained model on a corpus (SVF, LoRA or full)",
                        run=run_adapt, examples="""\
  agiformer adapt out/en-wiki-baseline --corpus tr-speech --method svf --minutes 10
  agiformer adapt out/en-wiki-baseline --corpus code-py --method lora --steps 300 --out out/code-lora
  agiformer eval out/code-lora --corpus code-py     # an adapter loads onto its base, which must be unchanged""")
    adapt.add_argument("checkpoint", help="the trained model: a run directory (its best checkpoint) or a checkpoint")
    adapt.add_argument("--corpus", required=True, help="the text to adapt to (its train split; scored on its val split)")
    adapt.add_argument("--method", default="svf", choices=list(ADAPT_LR),
                       help="svf: one scale per singular value of every linear layer (default); lora: rank-R factors "
                            "per linear layer; full: every weight")
    adapt.add_argument("--rank", type=positive_int, default=1, help="LoRA rank (default: 1)")
    length = adapt.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=positive_int, help="optimizer steps")
    length.add_argument("--minutes", type=positive_float, help="wall-clock budget; the steps that fit are fixed as in train")
    adapt.add_argument("--lr", type=positive_float,
                       help="learning rate (default: " + ", ".join(f"{lr:g} for {m}" for m, lr in ADAPT_LR.items()) + ")")
    adapt.add_argument("--batch-size", type=positive_int, default=4)
    adapt.add_argument("--seq-len", type=positive_int, help="bytes per training window (default: the base's training context)")
    add_run_control(adapt)

    ev = add_command(commands, "eval", help="bits per byte of a checkpoint over a whole split", run=run_eval,
                     examples="""\
  agiformer eval out/demo-en --corpus en-wiki                # the best checkpoint, test split
  agiformer eval out/demo-en/last --corpus en-wiki --split val --effort 0.25 --baselines
  agiformer eval out/demo-en --corpus tr-speech --adapt svf     # also adapting while it reads""")
    ev.add_argument("checkpoint")
    ev.add_argument("--corpus", required=True)
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--seq-len", type=positive_int, help="window length (default: the training context)")
    ev.add_argument("--batch-size", type=positive_int, default=8)
    ev.add_argument("--max-bytes", type=positive_int, help="score only the first N bytes of the split")
    ev.add_argument("--precision", default="auto", choices=PRECISIONS, help=AUTO_PRECISION)
    ev.add_argument("--baselines", action="store_true", help="also print compressor figures of the same split")
    ev.add_argument("--adapt", choices=["svf"], help="also score it adapting while it reads (dynamic evaluation): "
                    "after each window is scored, its bytes train the model's SVF z-vectors")
    ev.add_argument("--adapt-steps", type=positive_int, default=1, help="with --adapt: optimizer steps per window")
    ev.add_argument("--adapt-lr", type=positive_float, default=1e-3, help="with --adapt: Adam learning rate")
    ev.add_argument("--json", type=output_file, help="also write the result to this JSON file")

    gen = add_command(commands, "generate", help="stream text from a checkpoint", run=run_generate, examples="""\
  agiformer generate out/demo-en --prompt "The history of " --max-bytes 300
  agiformer generate out/demo-en --prompt-file prompt.bin --temperature 0 --effort 0.5""")
    gen.add_argument("checkpoint")
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="prompt text (UTF-8)")
    source.add_argument("--prompt-file", help="prompt bytes from a file (any bytes)")
    gen.add_argument("--max-bytes", type=at_most(MAX_GENERATED_BYTES), default=256)
    gen.add_argument("--temperature", type=non_negative_float, default=0.8, help="0 = greedy")
    gen.add_argument("--top-k", type=positive_int)
    gen.add_argument("--top-p", type=top_p)
    gen.add_argument("--seed", type=seed)
    gen.add_argument("--no-echo", action="store_true", help="do not print the prompt first")
    gen.add_argument("--precision", default="auto", choices=PRECISIONS, help=AUTO_PRECISION)

    recall = add_command(commands, "recall", help="needle-in-a-haystack recall vs needle distance", run=run_recall,
                         examples="""\
  agiformer recall out/demo-en --corpus en-wiki
  agiformer recall out/demo-en out/demo-en-attention-only --samples 50 --out docs/results/recall""")
    recall.add_argument("checkpoints", nargs="+", metavar="checkpoint", help="one or more checkpoints, compared")
    recall.add_argument("--corpus", default="en-wiki", help="held-out filler text (default: en-wiki)")
    recall.add_argument("--split", default="test", choices=["train", "val", "test"])
    recall.add_argument("--samples", type=at_most(MAX_SAMPLES), default=20, help="samples per distance")
    recall.add_argument("--distances", type=positive_int, nargs="+", help="needle distances in bytes "
                        "(default: ½, 1, 2, 4 and 8 attention spans)")
    recall.add_argument("--seed", type=seed, default=0)
    recall.add_argument("--out", default="recall", help="output prefix for .json and .png (default: ./recall)")

    insp = add_command(commands, "inspect", help="attention vs memory, decay, reasoning steps for a prompt",
                       run=run_inspect, examples="""\
  agiformer inspect out/demo-en --prompt "The history of artificial intelligence began in antiquity"
  agiformer inspect out/demo-en --prompt "..." --effort 0.25 --out inspect-low-effort""")
    insp.add_argument("checkpoint")
    insp.add_argument("--prompt", required=True)
    insp.add_argument("--out", default="inspect", help="output prefix for .png and .json (default: ./inspect)")

    for command in (train, adapt, ev, recall):
        add_data_dir(command)
    for command in (train, adapt, ev, gen, recall, insp):
        add_device(command)
    for command in (ev, gen, recall, insp):  # unset: the checkpoint's own (its config records both)
        command.add_argument("--effort", type=probability, help="reasoning effort in [0, 1] (default: the checkpoint's)")
        command.add_argument("--plasticity", type=plasticity, help="memory plasticity α (default: the trained one)")


def run_train(args) -> int | None:
    from agiformer.train import load_recipe

    return train_recipe(load_recipe(args.recipe, steps=args.steps, minutes=args.minutes), args)


def run_adapt(args) -> int | None:
    from agiformer.models.pretrained import saved_config
    from agiformer.train import Recipe

    checkpoint = resolve_checkpoint(args.checkpoint)
    config = saved_config(checkpoint)
    length = {"steps": args.steps} if args.steps else {"minutes": args.minutes}
    recipe = Recipe.from_dict({
        "name": f"adapt-{args.method}-{args.corpus}", **length, "batch_size": args.batch_size,
        "seq_len": args.seq_len or training_context(checkpoint, config), "lr": args.lr or ADAPT_LR[args.method],
        "warmup_steps": min(30, args.steps or 30), "eval_corpus": args.corpus,
        "adapt": {"base": str(checkpoint), "method": args.method, "lora_rank": args.rank},
        "stages": [{"name": args.corpus, "corpora": {args.corpus: 1.0}, "plasticity": getattr(config, "plasticity", 0.99)}]},
        source="agiformer adapt")
    return train_recipe(recipe, args)


def train_recipe(recipe, args) -> int | None:
    """Train a recipe as `agiformer train` and `agiformer adapt` do: report what runs, then the result."""
    from agiformer.train import Trainer

    trainer = Trainer(recipe, data_dir=args.data_dir, out_dir=args.out, device=args.device, resume=args.resume,
                      allow_recipe_change=args.allow_recipe_change, progress=not args.quiet)
    if trainer.dist.is_main:
        planned = trainer.state.get("planned_steps")
        length = (f"{recipe.steps:,} steps" if not recipe.minutes else f"{planned:,} steps (fixed so far for a "
                  f"budget of {recipe.minutes:g} minutes)" if planned else f"a budget of {recipe.minutes:g} minutes (steps "
                  f"fixed after timing the first ones, re-timed as it goes)")
        trained = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        what = (f"{recipe.adapt.method} adapter of {recipe.adapt.base}: {trained:,} trained parameters, "
                if recipe.adapt is not None else f"{trainer.model.num_parameters():,} parameters, ")
        print(f"{recipe.name}: {what}{length} of "
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


def run_eval(args) -> None:
    from agiformer.data import corpus_compression_baselines, load_split
    from agiformer.eval import evaluate_bpb

    checkpoint = resolve_checkpoint(args.checkpoint)
    model = load_model(args.checkpoint, args.device)
    data = load_split(args.data_dir, args.corpus, args.split)
    if args.max_bytes:
        data = data[: args.max_bytes]
    seq_len = args.seq_len or training_context(checkpoint, model.config)
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
    if args.adapt:
        from agiformer.eval.dynamic import dynamic_bpb

        adapted = dynamic_bpb(model, data, seq_len=seq_len, steps=args.adapt_steps, lr=args.adapt_lr,
                              plasticity=plasticity, effort=effort, precision=precision.precision)
        result["adapted"] = {k: v for k, v in adapted.items() if k != "window_bits"}
        print(f"{args.corpus} {args.split}, adapting its SVF z-vectors to each window after scoring it "
              f"({args.adapt_steps} step(s) at lr {args.adapt_lr:g}): {adapted['bpb']:.4f} bits/byte "
              f"({adapted['bpb'] - result['bpb']:+.4f} against static) in {adapted['seconds']:.0f} s")
    if args.baselines:
        rows = corpus_compression_baselines(args.data_dir, args.corpus, split=args.split)
        result["baselines"] = rows
        print(f"{'compressor':22s} {'bpb alone':>10s} {'bpb | train':>12s}")
        for row in rows:
            print(baseline_line(row))
    if args.json:
        write_output(args.json, json.dumps(result, indent=1))


def run_generate(args) -> None:
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


def run_recall(args) -> None:
    from agiformer.data import load_split
    from agiformer.eval.recall import default_distances, recall_accuracy, write_report

    filler = load_split(args.data_dir, args.corpus, args.split)
    reports, span = {}, None
    for path in args.checkpoints:
        model = load_model(path, args.device)
        model_span = attention_span(model.config)
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


def run_inspect(args) -> None:
    from agiformer.eval.inspect import inspect_model, plot_inspection

    if not args.prompt:
        raise AGIFormerError("--prompt is empty: inspect needs at least one byte of text")
    model = load_model(args.checkpoint, args.device)
    if model.config.model_type != "agiformer":
        raise AGIFormerError(f"inspect reads AGIFORMER internals; {args.checkpoint} holds a {model.config.model_type} model")
    prompt = args.prompt.encode("utf-8")
    result = inspect_model(model, prompt, plasticity=args.plasticity, effort=args.effort)
    print(f"{len(prompt)} bytes → {result['patches']} patches; α={result['plasticity']}, effort={result['effort']}; "
          f"mixer {result['mixer']}")
    for layer in result["layers"]:
        parts = [f"layer {layer['layer']}:"]
        if "attention_share" in layer:
            share = layer["attention_share"]
            parts.append(f"attention share {sum(share) / len(share):.2f} (memory {1 - sum(share) / len(share):.2f})")
        if "memory_half_life_patches" in layer:
            lives = ", ".join(f"{h:.1f}" if math.isfinite(h) else "∞" for h in layer["memory_half_life_patches"])
            parts.append(f"memory half-life per head (patches): {lives}")
        if len(parts) > 1:  # attention alone has no share to weigh and no decay to show
            print("  " + "  ".join(parts))
    steps = result["reasoning_steps"]
    print(f"  reasoning steps per patch: mean {sum(steps) / len(steps):.2f}, min {min(steps)}, max {max(steps)}")
    if "reasoning_update_norm" in result:
        norms = result["reasoning_update_norm"]
        print(f"  reasoning update norm ‖z_out − z_in‖: mean {sum(norms) / len(norms):.3f}")
    write_output(Path(args.out).with_suffix(".json"), json.dumps(result, indent=1))
    plot_inspection(result, prompt, Path(args.out).with_suffix(".png"))
    print(f"wrote {Path(args.out).with_suffix('.png')} and {Path(args.out).with_suffix('.json')}")
