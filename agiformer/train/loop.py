"""The loop every trainer shares: progress bar, per-step timing, metrics.jsonl, validation every
`eval_every` steps with a `best` checkpoint, `last` every `checkpoint_every` steps (both atomic),
SIGINT/SIGTERM → save and stop, --resume, summary.json.

A subclass sets, before calling `open_run`: `recipe` (with name, steps, eval_every, checkpoint_every),
`dist`, `out_dir`, `progress`, `state` (a JSON dict with at least "step", "elapsed_s" and
"best_" + best_metric), `optimizer`, `generators` (every random stream it draws from, checkpointed)
and `saved_module` (whose state_dict a checkpoint holds); and implements `train_step`, `count_step`,
`validate`, `checkpoint_config`, `check_config`, `progress_text` and `summary_fields`.

Exact resume holds when everything a step does is a function of the step index and of checkpointed
state (weights, optimizer, generators, `state`): the resumed run then repeats the uninterrupted
run's losses bit for bit on the same machine.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

from agiformer.errors import AGIFormerError
from agiformer.train.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from agiformer.train.plots import plot_curves, read_metrics


class TrainingLoop:
    best_metric = "val_bpb"  # `best/` holds the lowest rank(validation row) so far, kept in state["best_" + it]

    def rank(self, val: dict):
        """What `best/` minimises over validation rows (anything comparable with <): `best_metric`'s value."""
        return val[self.best_metric]

    # ---- what a trainer supplies ---------------------------------------------------------------------

    def train_step(self, step: int) -> dict:
        """One optimisation step (step counts from 0); returns its metrics row."""
        raise NotImplementedError

    def count_step(self, row: dict, seconds: float) -> None:
        """Advance the counters in `state` (bytes or tokens seen) and add them and the speed to `row`."""
        raise NotImplementedError

    def validate(self) -> dict:
        """The validation row; it holds `best_metric`."""
        raise NotImplementedError

    def checkpoint_config(self):
        """The config saved beside the weights (anything with .save(path))."""
        raise NotImplementedError

    def check_config(self, path: Path) -> None:
        """Raise AGIFormerError unless the config.json at `path` is this run's (see load_checkpoint)."""
        raise NotImplementedError

    def progress_text(self, row: dict, last_val: dict | None) -> str:
        raise NotImplementedError

    def summary_fields(self) -> dict:
        """What summary.json says beyond the loop's own fields."""
        return {}

    def curve_options(self) -> dict:
        """Keyword arguments of plot_curves (which metrics against what)."""
        return {}

    # ---- run directory, checkpoints, metrics -----------------------------------------------------------

    def open_run(self, *, resume: bool, recipe: dict) -> None:
        """Continue the run in out_dir, or start one there (refusing to overwrite another)."""
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.stop_requested = False
        if resume:
            found = find_checkpoint(self.out_dir / "last")
            if found is None:
                raise AGIFormerError(f"nothing to resume: no checkpoint in {self.out_dir / 'last'}")
            self.state = load_checkpoint(found, module=self.saved_module, check_config=self.check_config,
                                         optimizer=self.optimizer, generators=self.generators)
            if self.dist.is_main:  # drop metrics logged after the checkpoint: they will be produced again
                kept = [r for r in read_metrics(self.metrics_path) if r["step"] <= self.state["step"]]
                self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        elif self.dist.is_main:
            if find_checkpoint(self.out_dir / "last") is not None:
                raise AGIFormerError(f"{self.out_dir} already holds a run: pass --resume to continue it, "
                                     "or choose another --out directory")
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.metrics_path.write_text("")
            (self.out_dir / "recipe.json").write_text(json.dumps(recipe, indent=1))

    def save(self, name: str = "last") -> None:
        if self.dist.is_main:
            save_checkpoint(self.out_dir / name, module=self.saved_module, config=self.checkpoint_config(),
                            optimizer=self.optimizer, generators=self.generators, trainer_state=self.state)
        self.dist.barrier()

    def log(self, row: dict) -> None:
        if self.dist.is_main:
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(row) + "\n")

    def check_finite(self, step: int, **values: float) -> None:
        """Stop before a non-finite step reaches the weights; the last good checkpoint stays."""
        if all(math.isfinite(v) for v in values.values()):
            return
        self.optimizer.zero_grad(set_to_none=True)
        detail = ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in values.items())
        raise AGIFormerError(f"non-finite loss at step {step + 1} ({detail}); stopped without saving: the last "
                             f"good checkpoint in {self.out_dir / 'last'} is kept; resume with a lower lr")

    # ---- the loop ---------------------------------------------------------------------------------------

    def _request_stop(self, signum, frame) -> None:
        if self.stop_requested:  # a second signal: stop at once
            raise KeyboardInterrupt
        self.stop_requested = True

    def train(self, *, max_steps: int | None = None) -> dict:
        """Run to the recipe's last step (or stop after `max_steps` more, for tests); returns a summary."""
        recipe, best_key = self.recipe, "best_" + self.best_metric
        end = recipe.steps if max_steps is None else min(recipe.steps, self.state["step"] + max_steps)
        previous_handlers = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)} \
            if threading.current_thread() is threading.main_thread() else {}
        bar = _progress_bar(self.progress, total=recipe.steps, initial=self.state["step"], name=recipe.name)
        started, last_val = time.perf_counter(), None
        try:
            while self.state["step"] < end:
                tick = time.perf_counter()
                row = self.train_step(self.state["step"])
                self.state["step"] += 1
                self.count_step(row, time.perf_counter() - tick)
                self.log(row)
                step, last = self.state["step"], self.state["step"] == recipe.steps
                if step % recipe.eval_every == 0 or last:
                    last_val = self.validate()
                    self.log(last_val)
                    rank, best = self.rank(last_val), self.state.get(best_key)
                    if best is None or rank < best:  # None: a run resumed from before this rank was kept
                        self.state[best_key] = rank
                        self.save("best")
                    if self.dist.is_main:
                        plot_curves(self.metrics_path, self.out_dir / "curves.png", title=recipe.name,
                                    **self.curve_options())
                stop = self.dist.sum([float(self.stop_requested)])[0] > 0
                if step % recipe.checkpoint_every == 0 or last or stop or step == end:
                    self.state["elapsed_s"] += time.perf_counter() - started
                    started = time.perf_counter()
                    self.save("last")
                bar.update(1)
                bar.set_postfix_str(self.progress_text(row, last_val))
                if stop:
                    bar.close()
                    print(f"stopped by signal at step {step}; checkpoint saved in {self.out_dir / 'last'} "
                          f"(continue with --resume)", file=sys.stderr)
                    break
        finally:
            bar.close()
            for s, handler in previous_handlers.items():
                signal.signal(s, handler)
        summary = {"recipe": recipe.name, "steps": self.state["step"], **self.summary_fields(),
                   "elapsed_s": round(self.state["elapsed_s"], 1), best_key: self.state.get(best_key),
                   "last_val": last_val, "checkpoint": str(self.out_dir / "last"), "stopped_early": self.stop_requested}
        if self.dist.is_main:
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary


def _progress_bar(enabled: bool, *, total: int, initial: int, name: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=name, unit="step", disable=not enabled, dynamic_ncols=True,
                file=sys.stderr)
