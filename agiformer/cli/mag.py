"""`agiformer mag`: long-context curricula (data), training a memory beside a frozen base (train) and
the recall grid against the base with full and windowed attention (eval)."""

from __future__ import annotations

import sys
from pathlib import Path

from agiformer.cli.common import (
    MAX_SAMPLES, add_actions, add_command, add_device, add_run_control, at_most, interrupted_exit_code,
    non_negative_int, output_file, positive_int, positive_int_list, probability_list, seed,
)
from agiformer.mag.config import DEFAULT_WINDOW
from agiformer.precision import PRECISIONS, PrecisionChoice

EXAMPLES = f"""\
  agiformer mag data hash-hop --samples 1000 --context-tokens 1024,2048 --out data/mag/hash-hop.jsonl
  agiformer mag data hash-hop --hops 3 --samples 200 --seed 1 --out data/mag/hash-hop-3.jsonl
  agiformer mag data dependency --hops 2 --tokenizer smollm2-135m --context-tokens 4096 --out dep.jsonl
  agiformer mag data code --samples 100 --context-tokens 2048 --depth 0,0.25,0.5,0.75,1 --out code-eval.jsonl
  agiformer mag train runs/mag/hashhop.toml                  # SmolLM2-135M + MAG, checkpoints in out/mag-hashhop
  agiformer mag train runs/mag/hashhop.toml --resume         # continue exactly where it stopped
  agiformer mag eval out/mag-hashhop --context-tokens 1024,2048 --depths 0,0.5,1 --samples 20 --out out/mag-hashhop/eval
  agiformer mag eval smollm2-135m --window {DEFAULT_WINDOW} --samples 10  # the base alone: full attention vs window"""


def register(commands) -> None:
    mag = add_command(commands, "mag", help="memory-as-a-gate adapters: long-context curricula, training, recall",
                      examples=EXAMPLES)
    actions = add_actions(mag, "mag_command")
    data = add_command(actions, "data", run=run_data, examples=EXAMPLES,
                       help="write a deterministic long-context curriculum (JSONL) whose needles lie beyond the window")
    data.add_argument("task", choices=["hash-hop", "dependency", "code"],
                      help="hash-hop (hash chains), dependency (service chains) or code (stdlib signatures)")
    data.add_argument("--samples", type=at_most(MAX_SAMPLES), default=100, help="how many samples (default: 100)")
    data.add_argument("--seed", type=seed, default=0, help="same seed and arguments → identical file (default: 0)")
    data.add_argument("--context-tokens", type=positive_int_list, default=[2048], metavar="N[,N...]",
                      help="prompt length(s) in tokens, cycled over the samples (default: 2048)")
    data.add_argument("--window", type=positive_int, default=DEFAULT_WINDOW,
                      help=f"attention window in tokens: every needle lies beyond it (default: {DEFAULT_WINDOW})")
    data.add_argument("--hops", type=positive_int, help="chain length (default: 1 for hash-hop, 2 for dependency)")
    data.add_argument("--recalls", type=non_negative_int, default=0, metavar="R",
                      help="hash-hop: R answered queries about other chains beyond the window open the query, "
                           "extra training targets (default: 0, the evaluation format)")
    data.add_argument("--depth", type=probability_list, metavar="D[,D...]",
                      help="needle depth(s) in [0, 1], cycled with the lengths as a grid (default: drawn per sample)")
    data.add_argument("--tokenizer", choices=["bytes", "smollm2-135m"], default="bytes",
                      help="what a token is: one UTF-8 byte, or SmolLM2-135M's BPE (default: bytes)")
    data.add_argument("--out", type=output_file, required=True, help="the JSONL file to write")

    train = add_command(actions, "train", help="train the MAG parameters of a frozen base, in stages",
                        run=run_train, examples=EXAMPLES)
    train.add_argument("recipe", help="a MAG recipe TOML file, e.g. runs/mag/hashhop.toml")
    train.add_argument("--steps", type=positive_int, help="override the recipe's step count")
    add_run_control(train)

    ev = add_command(actions, "eval", run=run_eval, examples=EXAMPLES,
                     help="exact-match recall grid (context length × needle depth): base full attention, base "
                          "window-W, base + MAG window-W → JSON + PNG")
    ev.add_argument("checkpoint", metavar="CHECKPOINT_OR_BASE",
                    help="a MAG run (out/NAME: its best, else last) or checkpoint directory; or a base "
                    "(smollm2-135m, or a Hugging Face model directory) to evaluate without memory")
    ev.add_argument("--base", help="the base a checkpoint was trained on (default: from the run's recipe.json)")
    ev.add_argument("--task", choices=["hash-hop", "dependency", "code"], default="hash-hop")
    ev.add_argument("--context-tokens", type=positive_int_list, default=[1024, 2048], metavar="N[,N...]",
                    help="prompt lengths in tokens, the grid's rows (default: 1024,2048)")
    ev.add_argument("--depths", type=probability_list, default=[0.0, 0.5, 1.0], metavar="D[,D...]",
                    help="needle depths in [0, 1], the grid's columns (default: 0,0.5,1)")
    ev.add_argument("--samples", type=at_most(MAX_SAMPLES), default=10, help="samples per cell (default: 10)")
    ev.add_argument("--window", type=positive_int,
                    help="attention window in tokens for the window-W systems; every needle lies beyond it "
                    f"(default: the checkpoint's, else {DEFAULT_WINDOW})")
    ev.add_argument("--hops", type=positive_int, help="chain length (default: the task's)")
    ev.add_argument("--seed", type=seed, default=2, help="sample seed (default: 2; training uses 0, validation 1)")
    ev.add_argument("--base-dtype", choices=PRECISIONS,
                    help="run the frozen base under bf16 autocast or in fp32; auto: whichever this machine runs "
                    "faster (default: the run's, else auto)")
    ev.add_argument("--out", default="mag-eval", help="directory for recall.json and recall.png (default: ./mag-eval)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    for command in (train, ev):
        add_device(command)


def run_data(args) -> None:
    from agiformer.mag.data import format_summary, generate_samples, summary, write_jsonl

    samples = generate_samples(args.task, args.samples, seed=args.seed, context_tokens=args.context_tokens,
                               window=args.window, tokenizer=args.tokenizer, hops=args.hops, depths=args.depth,
                               recalls=args.recalls, progress=args.samples >= 100)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(samples, args.out)
    print(f"wrote {args.out}: " + format_summary(summary(samples)))


def run_train(args) -> int | None:
    from agiformer.mag.recipe import load_mag_recipe
    from agiformer.mag.train import MAGTrainer, stage_parameters

    recipe = load_mag_recipe(args.recipe, steps=args.steps)
    trainer = MAGTrainer(recipe, out_dir=args.out, device=args.device, resume=args.resume,
                         allow_recipe_change=args.allow_recipe_change, progress=not args.quiet)
    config = trainer.config
    stages = " → ".join(f"{s.name} ({sum(p.numel() for p in stage_parameters(trainer.model, s.name).values()):,})"
                        for s in recipe.stages)
    print(f"{recipe.name}: MAG layers {config.layers} of {config.base_architecture} ({recipe.base}), "
          f"{trainer.precision.describe()}, window {config.window}, {recipe.steps} steps of {recipe.batch_size} {recipe.data.task} samples of "
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


def run_eval(args) -> None:
    from agiformer.mag.eval import MENTION_TOKENS, evaluate_recall, open_for_eval, write_report
    from agiformer.train.distributed import pick_device

    model, codec, opened = open_for_eval(args.checkpoint, base=args.base, base_dtype=args.base_dtype,
                                         device=pick_device(args.device))
    window = args.window or model.config.window or DEFAULT_WINDOW
    result = evaluate_recall(model, codec, task=args.task, context_tokens=args.context_tokens, depths=args.depths,
                             samples_per_cell=args.samples, window=window, seed=args.seed, hops=args.hops,
                             progress=not args.quiet)
    result.update(opened)
    print(f"{opened['checkpoint'] or 'base only'} on {opened['base']} ({PrecisionChoice(**opened['precision']).describe()}), MAG layers "
          f"{model.config.layers or 'none'}: {args.task}, {args.samples} samples per cell, window {window}")
    for system in result["systems"].values():
        print(f"{system['label']:28s} {100 * system['overall']:5.1f} % exact  " + "  ".join(
            f"{n:,}: " + " ".join(f"{100 * v:3.0f}" for v in row)
            for n, row in zip(result["context_tokens"], system["exact_match"])) + "  (% by depth); "
            f"{100 * system['starts_with_answer_overall']:.1f} % start with the answer, "
            f"{100 * system['names_answer_overall']:.1f} % name it within {MENTION_TOKENS} more tokens")
    written = write_report(result, args.out)
    print("wrote " + " and ".join(map(str, written)))
