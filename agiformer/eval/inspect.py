"""What a trained model does with a prompt, layer by layer: where its patches end (and the entropy or
boundary probability that put them there), how much each position takes from attention vs memory,
how fast each memory head forgets, how many reasoning steps each position takes and how far
reasoning moves it. Read through forward hooks, so the model code is the one
that runs.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch


@torch.no_grad()
def byte_surprise(model, prompt: bytes, *, plasticity: float | None = None, effort: float | None = None) -> list[float]:
    """Bits each byte of `prompt` cost the model given the bytes before it: −log₂ p(byte)."""
    was_training = model.training
    model.eval()
    x = torch.tensor([list(prompt)], device=next(model.parameters()).device)
    logits = model(x, plasticity=plasticity, effort=effort)[0].double()
    model.train(was_training)
    return (-torch.log_softmax(logits, -1).gather(-1, x[0, :, None])[:, 0] / math.log(2)).tolist()


@torch.no_grad()
def inspect_model(model, prompt: bytes, *, plasticity: float | None = None, effort: float | None = None) -> dict:
    plasticity, effort = model.resolve(plasticity, effort)
    model.eval()
    captured: dict[str, dict[int, torch.Tensor]] = {"gate": {}, "attention": {}, "memory": {}, "memory_in": {}}
    handles = []

    def keep(kind, index, take):
        def hook(module, args, output):
            captured[kind][index] = take(args, output)
        return hook

    for i, block in enumerate(model.blocks):
        if block.gate is not None:
            handles.append(block.gate.register_forward_hook(keep("gate", i, lambda a, o: torch.sigmoid(o)[0, :, 0])))
        if block.attention is not None:
            handles.append(block.attention.register_forward_hook(keep("attention", i, lambda a, o: o[0][0])))
        if block.memory is not None:
            handles.append(block.memory.register_forward_hook(keep("memory", i, lambda a, o: o[0][0])))
            handles.append(block.memory.register_forward_hook(keep("memory_in", i, lambda a, o: a[0])))
    reasoning_in = {}
    if model.reasoning is not None:
        handles.append(model.reasoning.register_forward_hook(
            lambda m, a, o: reasoning_in.update(z_in=a[0][0], z_out=o.z[0])))
    try:
        x = torch.tensor([list(prompt)], device=next(model.parameters()).device)
        out = model.run(x, plasticity=plasticity, effort=effort)
    finally:
        for handle in handles:
            handle.remove()

    layers = []
    for i, block in enumerate(model.blocks):
        row = {"layer": i}
        if i in captured["gate"]:
            row["attention_share"] = captured["gate"][i].tolist()
        elif i in captured["attention"] and i in captured["memory"]:  # summed fusion: share of the output norm
            a, m = captured["attention"][i].norm(dim=-1), captured["memory"][i].norm(dim=-1)
            row["attention_share"] = (a / (a + m + 1e-9)).tolist()
        if i in captured["memory_in"] and hasattr(block.memory, "log_decay"):  # a neural memory forgets by a gate
            log_decay = block.memory.log_decay(captured["memory_in"][i], plasticity=plasticity, effort=effort)[0]
            decay = log_decay.exp().mean(-1)  # per head, averaged over positions
            row["memory_decay"] = decay.tolist()
            row["memory_half_life_patches"] = [math.log(0.5) / math.log(d) if d < 1 else math.inf for d in decay.tolist()]
        layers.append(row)
    ends = out.patching.layout.ends[0] if out.patching is not None else model.patch_ends(x)[0]
    result = {"prompt_bytes": len(prompt), "patching": model.config.patching, "patch_size": model.config.patch_size,
              "patch_ends": ends.nonzero().flatten().tolist(), "patches": out.reasoning.steps.shape[1],
              "plasticity": plasticity, "effort": effort, "mixer": model.config.mixer, "layers": layers,
              "reasoning_steps": out.reasoning.steps[0].tolist()}
    scores = model.boundary_scores(x)
    if scores is not None:
        result["boundary_score"] = {**scores, "values": scores["values"][0].tolist()}
    if reasoning_in:
        result["reasoning_update_norm"] = (reasoning_in["z_out"] - reasoning_in["z_in"]).norm(dim=-1).tolist()
    return result


def plot_inspection(result: dict, prompt: bytes, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    share_rows = [r["attention_share"] for r in result["layers"] if "attention_share" in r]
    steps = result["reasoning_steps"]
    n = len(steps)
    fig, axes = plt.subplots(4, 1, figsize=(max(8, n * 0.25, len(prompt) * 0.11), 9.5), dpi=110,
                             gridspec_kw={"height_ratios": [1.3, max(1, len(share_rows)), 1, 1.4]})
    plot_patches(axes[0], result, prompt)
    axes = axes[1:]
    ax = axes[0]
    if share_rows:
        image = ax.imshow(np.array(share_rows), aspect="auto", cmap="coolwarm", vmin=0, vmax=1, interpolation="nearest")
        fig.colorbar(image, ax=ax, label="attention share (1 = attention, 0 = memory)")
        ax.set_yticks(range(len(share_rows)))
        ax.set_ylabel("layer")
    else:  # one mixer only ("attention" or "memory": a hybrid block always has shares): there is nothing to weigh
        ax.text(0.5, 0.5, f"blocks with {result['mixer']} only (mixer = {result['mixer']})", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_yticks([])
    ax.set_title(f"per patch: attention vs memory (α={result['plasticity']}, effort={result['effort']})")
    starts = [0] + [end + 1 for end in result["patch_ends"]]
    labels = ["<start>"] + [prompt[starts[i]:starts[i + 1]].decode("utf-8", errors="replace") for i in range(n - 1)]
    ax.set_xticks(range(n))
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    axes[1].bar(range(n), steps, color="tab:green")
    axes[1].set_ylabel("reasoning steps")
    axes[1].set_xlim(-0.5, n - 0.5)
    axes[1].set_xticks([])
    decays = [r["memory_decay"] for r in result["layers"] if "memory_decay" in r]
    if decays:
        image = axes[2].imshow(np.array(decays), aspect="auto", cmap="viridis", interpolation="nearest")
        fig.colorbar(image, ax=axes[2], label="mean decay λ")
        axes[2].set_xticks(range(len(decays[0])))
        axes[2].set_yticks(range(len(decays)))
        axes[2].set_xlabel("memory head")
        axes[2].set_ylabel("layer")
        axes[2].set_title("memory decay spectrum")
    else:
        axes[2].axis("off")
        axes[2].text(0.5, 0.5, "no Hebbian memory: no decay spectrum", ha="center", va="center", transform=axes[2].transAxes)
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path)
    plt.close(fig)


def plot_patches(ax, result: dict, prompt: bytes) -> None:
    """The prompt's bytes along x, each patch shaded in turn, and the score that placed the boundaries."""
    ax.set_xlim(-0.5, len(prompt) - 0.5)
    start = 0
    for k, end in enumerate(result["patch_ends"] + [len(prompt) - 1]):
        if k % 2 == 0:
            ax.axvspan(start - 0.5, end + 0.5, color="tab:blue", alpha=0.12, linewidth=0)
        start = end + 1
    for end in result["patch_ends"]:
        ax.axvline(end + 0.5, color="tab:blue", linewidth=0.8)
    score = result.get("boundary_score")
    if score:
        ax.plot(range(len(score["values"])), score["values"], color="black", linewidth=1, marker=".", markersize=3)
        if score["rule"] == "global":
            ax.axhline(score["threshold"], color="tab:red", linestyle="--", linewidth=0.8, label="threshold")
            ax.legend(loc="upper right", fontsize=7)
        ax.set_ylabel(score["name"].replace(" (", "\n("), fontsize=8)
    else:
        ax.set_yticks([])
    ax.set_xticks(range(len(prompt)))
    ax.set_xticklabels([chr(b) if 32 < b < 127 else ("␣" if b == 32 else "·") for b in prompt], fontsize=7,
                       family="monospace")
    mean = len(prompt) / max(1, len(result["patch_ends"]))
    ax.set_title(f"patches ({result['patching']}, at most {result['patch_size']} bytes): {len(result['patch_ends'])} "
                 f"ended in {len(prompt)} bytes, {mean:.2f} bytes each; a line after the byte that ends one")
