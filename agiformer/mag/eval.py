"""Recall of a MAG model on a grid of context lengths × needle depths, for three systems side by side
on the same samples:

    full    the base with full attention (use_memory=False, window=None): what the base can do when
            it sees everything, the upper bound
    window  the base with window-W attention (use_memory=False): the needles lie beyond W, so this is
            the lower bound, near chance
    mag     base + MAG with window-W attention: what the memory brings back

Exact match by greedy decoding with the cache (`MAGModel.greedy_generate`) after the shared prompt
(`agiformer.mag.data.format_prompt`). Results: JSON and a heatmap PNG, one panel per system.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from agiformer.errors import AGIFormerError
from agiformer.mag.base import TextCodec, autocast_dtype, load_base
from agiformer.mag.config import DEFAULT_WINDOW, MAGConfig
from agiformer.mag.data import encode_sample, exact_match, generate_samples
from agiformer.mag.model import MAGModel, load_mag
from agiformer.models.config import read_config_values
from agiformer.precision import PRECISIONS, choose_precision
from agiformer.serialization import atomic_write_text, read_json

DEFAULT_SEED = 2  # training samples use seed 0 and validation seed 1 by default: the grid is a third draw



# how much further a grid reads each continuation for the answer said in prose: the frozen base's prose answers
# to dependency tracing ("The last service of the chain is port 61599.") name it by token 14, and reading 40
# on made that grid 2.4x slower (one cached step per token: 0.11 s each on 2 threads of an AMD EPYC Zen 4)
MENTION_TOKENS = 16


def continuation(model: MAGModel, codec: TextCodec, sample: dict, *, window: int | None, use_memory: bool,
                 read_on: int = 0) -> tuple[str, str]:
    """The text greedy decoding gives after the sample's prompt, twice: the first len(answer) + 2
    tokens, what exact match judges (room for another split of the same text, and for exact_match to
    see that the answer does not run on), and those with `read_on` more tokens, one decoding."""
    prompt, answer = encode_sample(sample, codec)
    ids = torch.tensor([prompt], device=model.base.device)
    judged = len(answer) + 2
    out = model.greedy_generate(ids, judged + read_on, window=window, use_memory=use_memory,
                                eos_token_id=codec.eos_token_id)[0, len(prompt):].tolist()
    return codec.decode(out[:judged]), codec.decode(out)


def recalls(model: MAGModel, codec: TextCodec, sample: dict, *, window: int | None, use_memory: bool) -> bool:
    """Whether greedy decoding after the sample's prompt gives its answer."""
    return exact_match(sample["answer"], continuation(model, codec, sample, window=window, use_memory=use_memory)[0])


def systems(model: MAGModel, window: int) -> dict[str, dict]:
    """The systems compared: "mag" only when the model has MAG layers."""
    found = {"full": {"label": "base, full attention", "window": None, "use_memory": False},
             "window": {"label": f"base, window {window}", "window": window, "use_memory": False}}
    if len(model.mag):
        found["mag"] = {"label": f"base + MAG, window {window}", "window": window, "use_memory": True}
    return found


def evaluate_recall(model: MAGModel, tokenizer, *, task: str = "hash-hop", context_tokens: Sequence[int] = (1024, 2048),
                    depths: Sequence[float] = (0.0, 0.5, 1.0), samples_per_cell: int = 10, window: int = DEFAULT_WINDOW,
                    seed: int = DEFAULT_SEED, hops: int | None = None, progress: bool = False) -> dict:
    """Exact-match rate per (context length, depth) cell for each system, every system on the same
    samples, and beside it two diagnostics, not scores: the rate of continuations that start with the
    answer, whether or not they stop there (`starts_with_answer`; exact match needs both), and of
    those that name it anywhere in MENTION_TOKENS more tokens (`names_answer`: a base that answers in
    prose, "The last service of the chain listens on port 61599.", names it; a short answer may also
    occur by chance).
    `tokenizer`: a TextCodec or a Hugging Face tokenizer."""
    codec = tokenizer if isinstance(tokenizer, TextCodec) else TextCodec(tokenizer)
    lengths, depth_list = list(context_tokens), list(depths)
    cells = len(lengths) * len(depth_list)
    # generate_samples cycles sample i over the grid lengths × depths: cell i % cells
    samples = generate_samples(task, samples_per_cell * cells, seed=seed, context_tokens=lengths, window=window,
                               tokenizer=codec, hops=hops, depths=depth_list)
    compared = systems(model, window)

    def tally() -> dict[str, list[list[int]]]:
        return {name: [[0] * len(depth_list) for _ in lengths] for name in compared}

    def rates(counts: list[list[int]]) -> list[list[float]]:
        return [[n / samples_per_cell for n in row] for row in counts]

    def overall(counts: list[list[int]]) -> float:
        return sum(map(sum, counts)) / (samples_per_cell * cells)

    correct, started, named = tally(), tally(), tally()
    examples = {name: [] for name in compared}
    was_training = model.training
    model.eval()
    from tqdm import tqdm

    for index, sample in enumerate(tqdm(samples, desc="recall", unit="sample", disable=not progress)):
        row, column = divmod(index % cells, len(depth_list))
        for name, system in compared.items():
            said, longer = continuation(model, codec, sample, window=system["window"], use_memory=system["use_memory"],
                                        read_on=MENTION_TOKENS)
            correct[name][row][column] += exact_match(sample["answer"], said)
            started[name][row][column] += said.startswith(sample["answer"])
            named[name][row][column] += sample["answer"].strip() in longer
            # every output, not only whether it was right: what a wrong answer was (a multi-hop chain's
            # earlier link, another needle's value) is what tells a failure's cause
            examples[name].append({"answer": sample["answer"], "output": said, "longer_output": longer,
                                   "context_tokens": sample["prompt_tokens"],
                                   "depth": sample["metadata"]["depth"],
                                   **({"chain": sample["metadata"]["chain"]} if "chain" in sample["metadata"] else {})})
    model.train(was_training)
    return {
        "task": task, "hops": samples[0]["metadata"]["hops"], "window": window, "context_tokens": lengths,
        "depths": depth_list, "samples_per_cell": samples_per_cell, "seed": seed, "tokenizer": codec.__name__,
        "base_identity": list(model.config.base_identity()), "mag_layers": model.config.layers,
        "systems": {name: {**system, "exact_match": rates(correct[name]), "overall": overall(correct[name]),
                           "starts_with_answer": rates(started[name]),
                           "starts_with_answer_overall": overall(started[name]),
                           "names_answer": rates(named[name]), "names_answer_overall": overall(named[name]),
                           "examples": examples[name]}
                    for name, system in compared.items()},
    }


def write_report(result: dict, out_dir: str | Path) -> list[Path]:
    """recall.json and, when matplotlib is installed, recall.png (else a note in the JSON); the paths written."""
    out_dir = Path(out_dir)
    written = [out_dir / "recall.json"]
    try:
        plot_recall(result, out_dir / "recall.png")
        written.append(out_dir / "recall.png")
    except ImportError:
        result = {**result, "note": "matplotlib is not installed: recall.png was not drawn"}
    atomic_write_text(written[0], json.dumps(result, indent=1))
    return written


def plot_recall(result: dict, png_path: Path) -> None:
    """One heatmap per system: context length (rows) × needle depth (columns), cells annotated in %."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(result["systems"].values())
    lengths, depths = result["context_tokens"], result["depths"]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.2 + 0.9 * len(depths) * len(panels) + 1.5 * len(panels),
                                                       1.2 + 0.6 * len(lengths)), dpi=110, squeeze=False)
    for ax, panel in zip(axes[0], panels):
        grid = [[100 * value for value in row] for row in panel["exact_match"]]
        started = [[100 * value for value in row] for row in panel["starts_with_answer"]]
        image = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        for r, row in enumerate(grid):
            for c, value in enumerate(row):
                ax.text(c, r, f"{value:.0f}%\n({started[r][c]:.0f}%)", ha="center", va="center", fontsize=8,
                        color="black" if value > 60 else "white")
        ax.set_xticks(range(len(depths)), [f"{d:g}" for d in depths])
        ax.set_yticks(range(len(lengths)), [f"{n:,}" for n in lengths])
        ax.set_xlabel("needle depth")
        ax.set_title(f"{panel['label']}\n{100 * panel['overall']:.0f}% overall; names the answer within "
                     f"{MENTION_TOKENS} more tokens: {100 * panel['names_answer_overall']:.0f}%", fontsize=9)
    axes[0][0].set_ylabel("context tokens")
    fig.colorbar(image, ax=axes[0].tolist(), label="exact match (%)", shrink=0.9)
    fig.suptitle(f"{result['task']} ({result['hops']} hop), {result['samples_per_cell']} samples per cell: exact match "
                 "(in brackets: the output starts with the answer, stopping there or not)", fontsize=10,
                 y=1.0 + 0.25 / (1.2 + 0.6 * len(lengths)))  # above the panel titles (the figure is cut to fit)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(png_path.name + ".tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(png_path)


# ---- what to evaluate ------------------------------------------------------------------------------------

def find_mag_checkpoint(path: Path) -> Path | None:
    """A MAG checkpoint directory at `path`, or in a run directory (its best, else last); None if neither."""
    for candidate in (path, path / "best", path / "last"):
        config = candidate / "config.json"
        if config.is_file() and read_config_values(config).get("model_type") == MAGConfig.model_type:
            return candidate
    return None


def open_for_eval(checkpoint_or_base: str, *, base: str | None = None, base_dtype: str | None = None,
                  device: torch.device | str = "cpu") -> tuple[MAGModel, TextCodec, dict]:
    """A trained MAG model on its base, or a plain base (no MAG layers: only the two base systems).
    A run's base and base_dtype come from its recipe.json unless given; "auto" (a bare base's default)
    measures which precision this machine runs faster. Returns (model, codec, what)."""
    path = Path(checkpoint_or_base)
    checkpoint = find_mag_checkpoint(path) if path.is_dir() else None
    recipe = {}
    if checkpoint is not None:
        for run in (checkpoint, checkpoint.parent):
            if (run / "recipe.json").is_file():
                recipe = read_json(run / "recipe.json")
                break
        base = base or recipe.get("base")
        if not base:
            raise AGIFormerError(f"{checkpoint} has no recipe.json naming its base: pass --base (smollm2-135m or "
                                 "the model directory it was trained on)")
    else:
        base = checkpoint_or_base
    requested = base_dtype or recipe.get("base_dtype", "auto")
    if requested not in PRECISIONS:
        raise AGIFormerError(f"base dtype must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    model, tokenizer = load_base(base)
    model = model.to(device)
    choice = choose_precision(requested, device, width=model.config.hidden_size)
    dtype = autocast_dtype(choice.precision)
    if checkpoint is not None:
        mag = load_mag(checkpoint, model, base_dtype=dtype)
    else:
        mag = MAGModel(model, MAGConfig.for_base(model, layers=[]), base_dtype=dtype).eval()
    name = Path(base).name if Path(base).is_dir() else str(base)
    return mag, TextCodec(tokenizer, name=name), {"checkpoint": None if checkpoint is None else str(checkpoint),
                                                   "base": str(base), "base_dtype": choice.precision,
                                                   "precision": choice.to_dict()}
