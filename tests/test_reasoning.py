"""ACT halting and the effort knob actually change the computation."""

import pytest
import torch

from agiformer import AGIFormer, AGIFormerConfig
from agiformer.nn import AdaptiveReasoning
from agiformer.nn.reasoning import step_cap

D = 16


def reasoning_with_halt_bias(bias: float, max_steps: int = 6) -> AdaptiveReasoning:
    module = AdaptiveReasoning(dim=D, max_steps=max_steps)
    torch.nn.init.zeros_(module.halt.weight)
    torch.nn.init.constant_(module.halt.bias, bias)
    return module


def test_forced_early_halting_removes_mlp_evaluations():
    x = torch.randn(3, 20, D)
    early = reasoning_with_halt_bias(10.0)(x, effort=1.0)    # h ≈ 1: every position halts at step 1
    late = reasoning_with_halt_bias(-10.0)(x, effort=1.0)    # h ≈ 0: every position runs to the cap
    assert early.mlp_evals == 60 and (early.steps == 1).all()
    assert late.mlp_evals == 60 * 6 and (late.steps == 6).all()


def test_halting_mixes_states_with_weights_summing_to_one():
    module = reasoning_with_halt_bias(-0.5)
    torch.nn.init.zeros_(module.mlp.w_out.weight)  # updates vanish, every refined state equals the input
    x = torch.randn(2, 7, D)
    out = module(x, effort=1.0)
    assert torch.allclose(out.z, x, atol=1e-6)
    assert ((out.steps >= 1) & (out.steps <= 6)).all()


def test_mixed_halting_counts_match_steps():
    module = AdaptiveReasoning(dim=D, max_steps=5)
    module.halt.weight.data.normal_(std=3.0)
    out = module(torch.randn(4, 25, D), effort=1.0)
    assert out.mlp_evals == int(out.steps.sum())
    assert 1 < out.steps.float().mean() < 5


@pytest.mark.parametrize("max_steps", [1, 3, 4, 12])
def test_step_cap_is_monotone_and_at_least_one(max_steps):
    caps = [step_cap(e / 20, max_steps) for e in range(21)]
    assert caps[0] == 1 and caps[-1] == max_steps
    assert all(a <= b for a, b in zip(caps, caps[1:]))


def test_lower_effort_never_takes_more_steps():
    module = AdaptiveReasoning(dim=D, max_steps=8, halt_bias_init=-2.0)
    module.halt.weight.data.normal_(std=0.5)
    x = torch.randn(2, 30, D)
    per_effort = [module(x, effort=e / 10) for e in range(11)]
    for lower, higher in zip(per_effort, per_effort[1:]):
        assert (lower.steps <= higher.steps).all()
        assert lower.mlp_evals <= higher.mlp_evals
    assert per_effort[0].mlp_evals < per_effort[-1].mlp_evals


def test_model_mean_steps_non_decreasing_in_effort():
    model = AGIFormer(AGIFormerConfig.preset("tiny", reasoning_steps=6, halt_bias_init=-2.0)).eval()
    x = torch.randint(0, 256, (2, 64))
    with torch.no_grad():
        means = [model.run(x, effort=e / 4).reasoning.steps.float().mean().item() for e in range(5)]
    assert all(a <= b for a, b in zip(means, means[1:])), means
    assert means[0] == 1.0 and means[-1] > means[0]


def test_gradients_reach_the_halting_unit():
    model = AGIFormer(AGIFormerConfig.preset("tiny"))
    model.loss(torch.randint(0, 256, (2, 40))).loss.backward()
    halt = model.reasoning.halt
    assert halt.weight.grad.abs().sum() > 0 and halt.bias.grad.abs().sum() > 0


def test_dropping_halted_rows_changes_each_position_by_rounding_only():
    """The loop computes only the still-active rows, so a matmul's row count depends on which other
    positions halted; on some CPUs that changes the rounding. Each position run alone (batch of one
    row, the plain reference) must give the same z, steps and ponder cost to float64 rounding."""
    module = AdaptiveReasoning(dim=D, max_steps=5).double()
    module.halt.weight.data.normal_(std=2.0)  # positions halt after different numbers of steps
    x = torch.randn(3, 17, D, dtype=torch.float64)
    batched = module(x, effort=1.0)
    assert len(set(batched.steps.flatten().tolist())) > 2
    alone = [module(x[b, n].view(1, 1, D), effort=1.0) for b in range(3) for n in range(17)]
    z_alone = torch.cat([out.z for out in alone]).view_as(x)
    scale = x.abs().max()
    assert (batched.z - z_alone).abs().max() <= 1e-12 * scale
    assert torch.equal(batched.steps.flatten(), torch.cat([out.steps.flatten() for out in alone]))
    assert torch.allclose(batched.ponder.flatten(), torch.cat([out.ponder.flatten() for out in alone]),
                          rtol=1e-12, atol=0)
    # negative control: a position given its neighbour's input differs far above rounding
    assert (z_alone[0, 0] - z_alone[0, 1]).abs().max() > 1e-3 * scale
