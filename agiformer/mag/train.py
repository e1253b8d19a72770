"""Training the MAG parameters of a frozen base on a long-context curriculum, in stages.

Step s trains on samples s·B … s·B + B − 1 of `generate_sample(task, i, seed=data.seed, ...)`,
generated on the fly (sample i has context_tokens[i % n] tokens and a needle depth drawn from i), so
the data needs no state. The sequence is prompt + answer; the loss is the cross-entropy of the answer
tokens only, in fp32, and, with `[data] recalls = R` (hash-hop), of the R recall answers that open
the query too: R + 1 lookups beyond the window per sequence for ~R·20 more tokens. With `[data]
answer_end = true` (the default) each answer's target also holds what follows it in the format (the
newline that ends its line): without it, a model that recalled a hash right went on writing hash
characters after it, and exact match refused every one. The stage of step
s (`recipe.stage_at(s)`) says which MAG parameters train:
the others get requires_grad=False for that step and so no gradient, and AdamW leaves a parameter
without a gradient untouched (no moment update, no weight decay). Since the stage, the learning rate
and the samples are functions of the step, and the weights, AdamW's moments and the RNG are in the
checkpoint, a resumed run repeats the uninterrupted one bit for bit, across stage boundaries too.

Validation: the answer loss (teacher-forced) and the exact-match rate of greedy decoding with the
cache, window W and the memory on, over `val_samples` samples of their own seed. `best/` keeps the
highest exact match, and among equals the lowest validation answer loss (continuous, where exact
match on a few dozen samples ties for long stretches, at 0 % early on); both are in metrics.jsonl.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from agiformer.errors import AGIFormerError
from agiformer.mag.base import TextCodec, autocast_dtype, load_base
from agiformer.mag.config import MAGConfig
from agiformer.mag.data import answer_targets, encode_sample, generate_sample, generate_samples
from agiformer.mag.eval import recalls
from agiformer.mag.model import MAGModel, check_trained_on
from agiformer.mag.recipe import STAGES, MAGRecipe
from agiformer.train.distributed import Distributed
from agiformer.train.loop import TrainingLoop
from agiformer.train.optim import optimizer_for, scheduled_lr


def answer_loss(model: MAGModel, tokens: list[int], spans: list[tuple[int, int]]) -> tuple[torch.Tensor, int, int]:
    """Mean cross-entropy (nats, fp32) of the tokens in `spans` ([start, end) into `tokens`, each
    predicted from the tokens before it, teacher-forced), how many of them are the argmax, and how
    many there are. The input is tokens[:-1]; only positions from the first target on go through
    the head."""
    ids = torch.tensor([tokens[:-1]], device=model.base.device)
    first = min(start for start, _ in spans)
    logits, _ = model(ids, logits_to_keep=len(tokens) - first)
    rows = torch.cat([torch.arange(start, end, device=ids.device) for start, end in spans]) - first
    logits = logits[0, rows].float()
    target = torch.tensor(tokens, device=logits.device)[rows + first]
    return F.cross_entropy(logits, target), int((logits.argmax(-1) == target).sum()), len(rows)


def stage_parameters(model: MAGModel, stage: str) -> dict[str, torch.nn.Parameter]:
    """The MAG parameters that train in `stage`, by name ("<layer>.<module>.<name>")."""
    prefixes = STAGES[stage]
    return {name: p for name, p in model.mag.named_parameters()
            if name.split(".", 1)[1].startswith(prefixes)}


class MAGTrainer(TrainingLoop):
    best_metric = "val_rank"

    def rank(self, val: dict) -> list[float]:
        """best/: the highest exact match, then the lowest answer loss. By loss alone, a run that learned
        to end its answers (exact match 0 → 56 %) kept the checkpoint from before, 0.002 nats lower."""
        return [1 - val["val_exact_match"], val["val_answer_loss"]]

    def __init__(self, recipe: MAGRecipe, *, out_dir: str | Path | None = None, device: str = "auto",
                 resume: bool = False, allow_recipe_change: bool = False, progress: bool = True):
        self.recipe = recipe
        self.dist = Distributed.setup(device)
        if self.dist.world_size > 1:
            raise AGIFormerError("mag train runs in one process: launch it without torchrun")
        self.device = self.dist.device
        self.out_dir = Path(out_dir or Path("out") / recipe.name)
        self.progress = progress
        base, tokenizer = load_base(recipe.base)
        self.codec = TextCodec(tokenizer, name=Path(recipe.base).name)
        torch.manual_seed(recipe.seed)
        self.model = MAGModel(base.to(self.device), recipe.mag_config(base))
        self.config = self.model.config
        if not self.config.layers:
            raise AGIFormerError(f"recipe '{recipe.name}': [mag] layers is empty; there is nothing to train")
        data = recipe.data
        # made before the run directory, so a context too short for the window fails first
        self.val_samples = generate_samples(data.task, data.val_samples, seed=data.val_seed,
                                            context_tokens=data.context_tokens, window=self.config.window,
                                            tokenizer=self.codec, hops=data.hops)
        self.optimizer = optimizer_for(self.model.mag, recipe, lr_scales={
            "memory.lr_proj.weight": recipe.write_gate_lr_scale, "memory.lr_proj.bias": recipe.write_gate_lr_scale})
        self.generators = {}  # samples are functions of their index; nothing else is drawn at random
        self.state = {"step": 0, "tokens_seen": 0, "train_s": 0.0, "best_val_rank": None,
                      "elapsed_s": 0.0}
        self.saved_module = self.model.mag  # the base is never stored: its identity is in the config
        self.open_run(resume=resume, recipe=recipe.to_dict(), allow_recipe_change=allow_recipe_change)
        self.precision = self.run_precision(recipe.base_dtype, width=self.config.base_hidden_size)
        self.model.base_dtype = autocast_dtype(self.precision.precision)

    # ---- one optimisation step ----------------------------------------------------------------------

    def train_sample(self, index: int) -> dict:
        data = self.recipe.data
        return generate_sample(data.task, index, seed=data.seed, window=self.config.window, tokenizer=self.codec,
                               context_tokens=data.context_tokens[index % len(data.context_tokens)], hops=data.hops,
                               recalls=data.recalls)

    def set_stage(self, stage: str) -> list[torch.nn.Parameter]:
        """requires_grad on the stage's parameters only; returns them."""
        trained = stage_parameters(self.model, stage)
        for name, p in self.model.mag.named_parameters():
            p.requires_grad_(name in trained)
        return list(trained.values())

    def train_step(self, step: int) -> dict:
        recipe = self.recipe
        stage = recipe.stages[recipe.stage_at(step)]
        trained = self.set_stage(stage.name)
        lr = recipe.lr_at(step)
        scheduled_lr(self.optimizer, lr)
        self.model.train()
        batch = [answer_targets(self.train_sample(step * recipe.batch_size + i), self.codec, end=recipe.data.answer_end)
                 for i in range(recipe.batch_size)]
        answer_tokens = sum(end - start for _, spans in batch for start, end in spans)
        loss_sum, correct = 0.0, 0
        for tokens, spans in batch:
            loss, right, count = answer_loss(self.model, tokens, spans)
            # the mean over the batch's answer tokens, one sequence at a time (their lengths differ)
            (loss * (count / answer_tokens)).backward()
            loss_sum += loss.item() * count
            correct += right
        grad_norm = torch.nn.utils.clip_grad_norm_(trained, recipe.grad_clip).item()
        train_loss = loss_sum / answer_tokens
        self.check_finite(step, train_answer_loss=train_loss, grad_norm=grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"kind": "train", "step": step + 1, "stage": stage.name, "lr": lr, "train_answer_loss": train_loss,
                "train_answer_bits": train_loss / math.log(2), "train_answer_accuracy": correct / answer_tokens,
                "answer_tokens": answer_tokens,
                "grad_norm": grad_norm, "tokens": sum(len(tokens) - 1 for tokens, _ in batch)}

    def count_step(self, row: dict, seconds: float) -> None:
        self.state["tokens_seen"] += row["tokens"]
        self.state["train_s"] += seconds
        row.update(tokens_seen=self.state["tokens_seen"], tokens_per_s=row["tokens"] / seconds)

    # ---- validation and checkpoints -----------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict:
        self.model.eval()
        loss_sum, correct, answer_tokens, exact = 0.0, 0, 0, 0
        for sample in self.val_samples:
            loss, right, count = answer_loss(self.model, *answer_targets(sample, self.codec))
            loss_sum += loss.item() * count
            correct += right
            answer_tokens += count
            exact += recalls(self.model, self.codec, sample, window=self.config.window, use_memory=True)
        self.model.train()
        loss = loss_sum / answer_tokens
        return {"kind": "val", "step": self.state["step"], "tokens_seen": self.state["tokens_seen"],
                "samples": len(self.val_samples), "val_exact_match": exact / len(self.val_samples),
                "val_answer_loss": loss, "val_answer_bits": loss / math.log(2),
                "val_answer_accuracy": correct / answer_tokens}

    def checkpoint_config(self) -> MAGConfig:
        return self.config

    def check_config(self, path: Path) -> None:
        saved = MAGConfig.load(path)
        check_trained_on(saved, self.config.base_identity(), where=path.parent)
        if saved != self.config:
            raise AGIFormerError(f"{path.parent}: the checkpoint's MAG config differs from the recipe's; "
                                 "resume with the recipe that started the run")

    # ---- what the shared loop reports ---------------------------------------------------------------

    def progress_text(self, row: dict, last_val: dict | None) -> str:
        return (f"{row['stage']} loss={row['train_answer_loss']:.3f} acc={row['train_answer_accuracy']:.2f} "
                f"{row['tokens_per_s']:.0f} tok/s"
                + (f" val exact={100 * last_val['val_exact_match']:.0f}% loss={last_val['val_answer_loss']:.3f}"
                   if last_val else ""))

    def summary_fields(self) -> dict:
        return {"tokens_seen": self.state["tokens_seen"],
                "trainable_parameters": sum(p.numel() for p in self.model.trainable_parameters()),
                "train_tokens_per_s": round(self.state["tokens_seen"] / max(self.state["train_s"], 1e-9), 1),
                "base_forward_tokens_per_s": round(self.base_forward_speed(), 1), "precision": self.state["precision"]}

    @torch.no_grad()
    def base_forward_speed(self) -> float:
        """Tokens/s of the base's own forward (its full attention, no autocast) over a validation prompt:
        the reference the training speed is read against."""
        prompt, _ = encode_sample(self.val_samples[0], self.codec)
        ids = torch.tensor([prompt], device=self.device)
        tick = time.perf_counter()
        self.model.base(ids)
        return len(prompt) / (time.perf_counter() - tick)

    def curve_options(self) -> dict:
        return {"x": "tokens_seen", "x_label": "tokens seen (thousands)", "x_scale": 1e-3, "train": "train_answer_loss",
                "val": "val_answer_loss", "val_label": f"validation ({len(self.val_samples)} samples)",
                "y_label": "answer loss (nats/token)", "y_max": None}
