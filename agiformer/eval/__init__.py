"""Evaluation: bits per byte over whole splits, recall, inspection."""

from agiformer.eval.bpb import evaluate_bpb

__all__ = ["evaluate_bpb"]
