"""Training: recipes, the loop, checkpoints, one process or many."""

from agiformer.train.loop import TrainingLoop
from agiformer.train.recipe import Recipe, Stage, load_recipe
from agiformer.train.trainer import Trainer

__all__ = ["Recipe", "Stage", "load_recipe", "Trainer", "TrainingLoop"]
