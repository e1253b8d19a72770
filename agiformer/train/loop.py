"""The loop every trainer shares: progress bar, per-step timing, metrics.jsonl, validation every
`eval_interval()` steps with a `best` checkpoint, `last` every `checkpoint_interval()` steps (both atomic),
a time budget that fixes the step count after timing the first steps and re-fixes it as the run goes,
SIGINT/SIGTERM → save and stop, --resume, summary.json.

A subclass sets, before calling `open_run`: `recipe` (a `Schedule`: name, steps, minutes, warmup_steps,
eval_interval(), checkpoint_interval()),
`dist`, `out_dir`, `progress`, `state` (a JSON dict with at least "step", "elapsed_s" and
"best_" + best_metric), `optimizer`, `generators` (every random stream it draws from, checkpointed)
and `saved_module` (whose state_dict a checkpoint holds); and implements `train_step`, `count_step`,
`validate`, `checkpoint_config`, `check_config`, `progress_text` and `summary_fields`.

Exact resume holds when everything a step does is a function of the step index and of checkpointed
state (weights, optimizer, generators, `state`): the resumed run then repeats the uninterrupted
run's losses bit for bit on the same machine.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

from agiformer.errors import AGIFormerError
from agiformer.precision import PrecisionChoice, choose_precision
from agiformer.serialization import atomic_write_text
from agiformer.train.checkpoint import find_checkpoint, load_checkpoint, lock_run_directory, save_checkpoint
from agiformer.train.plots import plot_curves, read_metrics
from agiformer.train.recipe import MIN_CALIBRATION_STEPS


CALIBRATION_STEPS = 16        # steps timed before a budgeted run fixes its step count (at most warmup_steps) ...
CALIBRATION_SHARE = 0.1       # ... or fewer, once they have taken this share of the budget
UNPLANNED_STEPS = 10 ** 9    # recipe.steps while the count is being measured
# shares of the fixed count at which a budgeted run re-times its steps since the last count and fixes the count
# again: the first steps of a process run 10-20 % slower than the rest (AMD EPYC Zen 4), and a neighbour's load
# changes, so a count fixed once ended 15 % short of its budget or 20 % past it
REPLAN_AT = (0.25, 0.5, 0.75)


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

    def open_run(self, *, resume: bool, recipe: dict, allow_recipe_change: bool = False) -> None:
        """Continue the run in out_dir, or start one there (refusing to overwrite another). A resumed run
        whose recipe differs from the one it started with is refused unless `allow_recipe_change`; then
        the changes go into metrics.jsonl and recipe.json becomes the new recipe."""
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.stop_requested, self.stop_signal = False, None
        if resume and not self.out_dir.is_dir():
            raise AGIFormerError(f"nothing to resume: {self.out_dir} does not exist")
        # held until train() ends, so a second process cannot touch this directory's files meanwhile
        self.lock = lock_run_directory(self.out_dir) if self.dist.is_main else None
        try:
            self.open_run_files(resume=resume, recipe=recipe, allow_recipe_change=allow_recipe_change)
        except BaseException:
            self.release_lock()
            raise

    def run_precision(self, requested: str, *, width: int) -> PrecisionChoice:
        """The precision this run computes in: measured (or forced) once when it starts, logged, and kept
        in the trainer state, so that a resumed run repeats its losses exactly. Call after `open_run`."""
        if "precision" not in self.state:
            choice = choose_precision(requested, self.device, width=width)
            if self.dist.sum([float(choice.precision == "bf16")])[0] not in (0, self.dist.world_size):
                choice = dataclasses.replace(choice, precision="fp32")  # the processes measured differently
            self.state["precision"] = choice.to_dict()
            self.log({"kind": "precision", "step": self.state["step"], **self.state["precision"]})
        return PrecisionChoice(**self.state["precision"])

    def release_lock(self) -> None:
        if self.lock is not None:
            self.lock.close()
            self.lock = None

    def open_run_files(self, *, resume: bool, recipe: dict, allow_recipe_change: bool) -> None:
        recipe = json.loads(json.dumps(recipe))  # as recipe.json holds it (tuples become lists)
        found = find_checkpoint(self.out_dir / "last")
        if resume and found is None and (self.out_dir / "recipe.json").is_file():
            if self.dist.is_main:
                print(f"{self.out_dir} has no checkpoint yet (its run stopped before the first save): starting it "
                      "from the first step", file=sys.stderr)
            resume = False
        if resume:
            if found is None:
                raise AGIFormerError(f"nothing to resume: no checkpoint in {self.out_dir / 'last'}")
            # the checkpoint first: a model that cannot load it gets the specific reason
            self.state = load_checkpoint(found, module=self.saved_module, check_config=self.check_config,
                                         optimizer=self.optimizer, generators=self.generators)
            changes = recipe_changes(self.out_dir / "recipe.json", recipe)
            if changes and not allow_recipe_change:
                raise AGIFormerError(f"the recipe changed since {self.out_dir} started ({describe_changes(changes)}); "
                                     f"resume with the run's own recipe{length_hint(changes)}, or pass "
                                     "--allow-recipe-change to go on with the new values")
            if self.dist.is_main:  # drop metrics logged after the checkpoint: they will be produced again
                kept = [r for r in read_metrics(self.metrics_path) if r.get("step", 0) <= self.state["step"]]
                if changes:
                    kept.append({"kind": "recipe_change", "step": self.state["step"], "changes": changes})
                    atomic_write_text(self.out_dir / "recipe.json", json.dumps(recipe, indent=1))
                atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
        elif self.dist.is_main:
            if found is not None:
                raise AGIFormerError(f"{self.out_dir} already holds a run: pass --resume to continue it, "
                                     "or choose another --out directory")
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.metrics_path, "")
            atomic_write_text(self.out_dir / "recipe.json", json.dumps(recipe, indent=1))

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
        self.stop_requested, self.stop_signal = True, signal.Signals(signum)

    def train(self, *, max_steps: int | None = None) -> dict:
        """Run to the recipe's last step (or stop after `max_steps` more, for tests); returns a summary.

        A recipe with a time budget (`minutes`) first trains its calibration steps (part of the warmup,
        whose learning rate does not depend on the step count), then times a validation and a save,
        and fixes the number of steps that fits the budget (see `plan_steps`); the count is kept in
        `state`, so a resumed run follows the same schedule."""
        recipe, budget_s = self.recipe, 60 * self.recipe.minutes
        planning = bool(budget_s) and "planned_steps" not in self.state
        if budget_s and not planning:
            recipe.steps = self.state["planned_steps"]
        step_cap = recipe.steps
        calibration_end = min(recipe.warmup_steps, CALIBRATION_STEPS, step_cap or UNPLANNED_STEPS)
        if planning:
            recipe.steps = UNPLANNED_STEPS  # stage 0, no validation or save until the count is fixed
        target = None if max_steps is None else self.state["step"] + max_steps
        end = recipe.steps if target is None else min(recipe.steps, target)
        previous_handlers = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)} \
            if threading.current_thread() is threading.main_thread() else {}
        bar = _progress_bar(self.progress, total=None if planning else recipe.steps, initial=self.state["step"],
                            name=recipe.name)
        self.run_started = time.perf_counter()
        self.elapsed_before = self.state["elapsed_s"]
        # until this process times its own, a resumed run's re-plan uses the figures its count was fixed with
        timed = self.state.get("budget", {})
        self.validation_s, self.save_s = timed.get("validation_s", 0.0), timed.get("save_s", 0.0)
        last_val, step_times = None, []
        try:
            while self.state["step"] < end:
                tick = time.perf_counter()
                row = self.train_step(self.state["step"])
                self.state["step"] += 1
                step_times.append(time.perf_counter() - tick)
                self.count_step(row, step_times[-1])
                self.log(row)
                step = self.state["step"]
                # every process plans at the same step (their clocks differ): any one's "enough" counts
                planned_now = planning and (step >= calibration_end or self.dist.sum([float(
                    step >= MIN_CALIBRATION_STEPS and self.elapsed() >= CALIBRATION_SHARE * budget_s)])[0] > 0)
                if planned_now:
                    # the first steps of a process are slow (8-10 s against 5-6 s later on an AVX2
                    # EPYC): time the second half only
                    last_val = self.validation_event()
                    self.save_last()
                    step_times = step_times[len(step_times) // 2:]
                if planned_now or self.replan_due(budget_s, len(step_times)):
                    self.plan_steps(budget_s, step_cap, step_times)
                    planning, step_times = False, []
                    end = recipe.steps if target is None else min(recipe.steps, target)
                    bar.total = recipe.steps
                    bar.refresh()
                last = step == recipe.steps
                if not planned_now and (step % recipe.eval_interval() == 0 or last):
                    last_val = self.validation_event()
                # every process reports the stop, the ones without a signal too; a signal during the last
                # step stops nothing: the run is complete
                stop = self.dist.sum([float(self.stop_requested)])[0] > 0 and not last
                self.stop_requested = stop
                self.stop_signal = self.stop_signal if stop else None
                if not planned_now and (step % recipe.checkpoint_interval() == 0 or last or stop or step == end):
                    self.save_last()
                bar.update(1)
                bar.set_postfix_str(self.progress_text(row, last_val))
                if stop:
                    bar.close()
                    of = "while timing the budget's first steps" if recipe.steps == UNPLANNED_STEPS else f"of {recipe.steps}"
                    print(f"stopped by {self.stop_signal.name if self.stop_signal else 'a signal'} at step {step} {of}; "
                          f"checkpoint saved in {self.out_dir / 'last'} (continue with --resume)",
                          file=sys.stderr)
                    break
        finally:
            bar.close()
            for s, handler in previous_handlers.items():
                signal.signal(s, handler)
            self.release_lock()
        best_key = "best_" + self.best_metric
        summary = {"recipe": recipe.name, "steps": self.state["step"], **self.summary_fields(),
                   "elapsed_s": round(self.state["elapsed_s"], 1), best_key: self.state.get(best_key),
                   "last_val": last_val, "checkpoint": str(self.out_dir / "last"), "stopped_early": self.stop_requested,
                   "stopped_by": self.stop_signal.name if self.stop_signal else None}
        if "budget" in self.state:
            summary["budget"] = self.state["budget"]
        if self.dist.is_main:
            atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=1))
        return summary

    def elapsed(self) -> float:
        """Seconds this run has trained, over every process that resumed it."""
        return self.elapsed_before + time.perf_counter() - self.run_started

    def validation_event(self) -> dict:
        """Validate, log, keep `best/` and redraw the curves."""
        best_key = "best_" + self.best_metric
        tick = time.perf_counter()
        val = self.validate()
        self.validation_s = time.perf_counter() - tick
        self.log(val)
        rank, best = self.rank(val), self.state.get(best_key)
        if best is None or rank < best:  # None: a run resumed from before this rank was kept
            self.state[best_key] = rank
            self.save("best")
        if self.dist.is_main:
            plot_curves(self.metrics_path, self.out_dir / "curves.png", title=self.recipe.name,
                        **self.curve_options())
        return val

    def save_last(self) -> None:
        tick = time.perf_counter()
        self.state["elapsed_s"] = self.elapsed()
        self.save("last")
        self.save_s = time.perf_counter() - tick

    def replan_due(self, budget_s: float, timed_steps: int) -> bool:
        """Whether a budgeted run re-fixes its count now: at the next share of REPLAN_AT of the fixed count,
        once it has timed enough steps since the last count (a resumed run times its own)."""
        done = self.state.get("replans", 0)
        return (bool(budget_s) and "planned_steps" in self.state and done < len(REPLAN_AT)
                and timed_steps >= MIN_CALIBRATION_STEPS
                and self.state["step"] >= round(REPLAN_AT[done] * self.recipe.steps))

    def plan_steps(self, budget_s: float, step_cap: int, step_times: list[float]) -> None:
        """Fix recipe.steps to what fits `budget_s`: the steps done, then the mean of `step_times` per
        step (not the median: step times vary with the effort drawn, and the budget is their sum),
        plus the validations and saves of `last` the schedule will make, each as long as the last one.
        `step_cap` > 0 bounds the count. A count fixed again (see REPLAN_AT) never moves a stage boundary
        the run has passed back ahead of it."""
        recipe, done, first = self.recipe, self.state["step"], "planned_steps" not in self.state
        # every process plans from the same (averaged) figures, so all fix the same count
        step_s, val_s, save_s, spent = [value / self.dist.world_size for value in self.dist.sum(
            [sum(step_times) / len(step_times), self.validation_s, self.save_s, self.elapsed()])]
        total = recipe.steps_within(budget_s - spent, done=done, step_s=step_s, validation_s=val_s, save_s=save_s)
        total = min(total, step_cap) if step_cap else total
        if not first:
            stage, before = recipe.stage_at(done - 1), recipe.steps  # the stage of the last step run
            while total > before and recipe.stage_at(done, steps=total) < stage:
                total -= 1
            self.state["replans"] = self.state.get("replans", 0) + 1
        recipe.steps = self.state["planned_steps"] = total
        self.state["budget"] = {"minutes": recipe.minutes, "timed_steps": len(step_times), "step_s": round(step_s, 4),
                                "validation_s": round(val_s, 2), "save_s": round(save_s, 3), "steps": total}
        self.log({"kind": "budget", "step": done, **self.state["budget"]})
        if first:
            self.save_last()  # the fixed count goes into the checkpoint: a resume follows the same schedule
        if self.dist.is_main:
            what = f"budget {recipe.minutes:g} min" if first else f"budget re-timed at step {done:,}"
            print(f"\n{what}: {step_s:.2f} s per step (mean of {len(step_times)}), "
                  f"validation {val_s:.1f} s, save {save_s:.2f} s → {total:,} steps"
                  + (f" (capped by steps = {step_cap:,})" if step_cap and total == step_cap else ""), file=sys.stderr)


def _progress_bar(enabled: bool, *, total: int, initial: int, name: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=name, unit="step", disable=not enabled, dynamic_ncols=True,
                file=sys.stderr)


def flatten(values, prefix: str = "") -> dict:
    """{"model.d_model": 256, "stages[0].plasticity": 0.1, …} of a recipe's nested tables and lists."""
    if isinstance(values, dict):
        return {k: v for key, item in values.items() for k, v in flatten(item, f"{prefix}.{key}" if prefix else key).items()}
    if isinstance(values, list) and any(isinstance(item, (dict, list)) for item in values):
        return {k: v for i, item in enumerate(values) for k, v in flatten(item, f"{prefix}[{i}]").items()}
    return {prefix: values}


def length_hint(changes: dict) -> str:
    """' (pass --steps 20 again)' when the change is a length the run was started with from the command line."""
    given = [f"--{key} {old:g}" for key, (old, _) in changes.items() if key in ("steps", "minutes") and old]
    return f" (pass {' '.join(given)} again)" if given else ""


def recipe_changes(saved_path: Path, recipe: dict) -> dict:
    """{key: [value the run started with, value now]} for every key that differs from the saved recipe.json."""
    if not saved_path.is_file():
        return {}
    try:
        before, now = flatten(json.loads(saved_path.read_text(encoding="utf-8"))), flatten(recipe)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AGIFormerError(f"{saved_path}: damaged (not JSON); cannot tell whether the recipe changed") from None
    return {key: [before.get(key), now.get(key)] for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)}


def describe_changes(changes: dict) -> str:
    return ", ".join(f"{key} {old!r} → {new!r}" for key, (old, new) in changes.items())
