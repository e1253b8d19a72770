"""`agiformer patch`: how a patching cuts a corpus, and the entropy threshold for a target mean patch length."""

from __future__ import annotations

from agiformer.cli.common import add_actions, add_command, add_data_dir, positive_float, positive_int
from agiformer.errors import AGIFormerError

EXAMPLES = """\
  agiformer patch calibrate --corpus en-wiki --entropy-model out/entropy-en-wiki --mean-bytes 4
  agiformer patch calibrate --corpus code-py --entropy-model out/entropy-en-wiki --mean-bytes 6 --max-bytes 12 --rule monotonic"""


def register(commands) -> None:
    patch = add_command(commands, "patch", help="patch boundaries: calibrate an entropy threshold", examples=EXAMPLES)
    actions = add_actions(patch, "patch_command")
    calibrate = add_command(actions, "calibrate", help="the entropy threshold giving a target mean patch length",
                            examples=EXAMPLES, run=run_calibrate)
    calibrate.add_argument("--corpus", required=True, help="a built corpus (agiformer data list)")
    calibrate.add_argument("--entropy-model", required=True, help="a trained byte-ngram model (runs/entropy-en-wiki.toml)")
    calibrate.add_argument("--mean-bytes", type=positive_float, default=4.0, help="target mean patch length (default: 4)")
    calibrate.add_argument("--max-bytes", type=positive_int, default=8,
                           help="the most bytes a patch may hold: the model's patch_size (default: 8)")
    calibrate.add_argument("--rule", choices=["global", "monotonic"], default="global",
                           help="global: entropy above the threshold; monotonic: its rise above it (default: global)")
    calibrate.add_argument("--split", choices=["train", "val", "test"], default="train")
    calibrate.add_argument("--sample-bytes", type=positive_int, default=1 << 20,
                           help="bytes of the split to calibrate on, from its start (default: 1 MiB)")
    add_data_dir(calibrate)


def run_calibrate(args) -> None:
    from agiformer.cli.common import load_model
    from agiformer.data import load_split
    from agiformer.eval.patching import (
        calibrate_threshold, entropies, entropy_ends, length_histogram, mean_patch_bytes, sample_rows, space_ends,
    )

    model = load_model(args.entropy_model, "cpu")
    if model.config.model_type != "byte-ngram":
        raise AGIFormerError(f"{args.entropy_model} holds a {model.config.model_type} model; --entropy-model needs a "
                             "byte-ngram one (agiformer train runs/entropy-en-wiki.toml)")
    rows = sample_rows(load_split(args.data_dir, args.corpus, args.split), args.sample_bytes)
    entropy = entropies(model, rows)
    threshold, mean = calibrate_threshold(entropy, mean_bytes=args.mean_bytes, rule=args.rule, max_bytes=args.max_bytes)
    histogram = length_histogram(entropy_ends(entropy, threshold, args.rule, args.max_bytes), args.max_bytes)
    total = sum(histogram)
    print(f"{args.corpus} {args.split}, {rows.numel():,} bytes: {args.rule} threshold {threshold:.4f} bits gives "
          f"{mean:.3f} bytes per patch (at most {args.max_bytes})")
    print("patch lengths: " + "  ".join(f"{n}: {100 * c / total:.1f}%" for n, c in enumerate(histogram, 1)))
    spaces = space_ends(rows, args.max_bytes)
    print(f"(patching = \"space\" with the same cap: {mean_patch_bytes(spaces):.3f} bytes per patch)")
    print(f"for the recipe's [model]: patching = \"entropy\", patch_size = {args.max_bytes}, "
          f"entropy_model = \"{args.entropy_model}\", entropy_rule = \"{args.rule}\", entropy_threshold = {threshold:.4f}")
