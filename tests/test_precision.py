"""Precision by measurement: "auto" times bf16 against fp32 on this machine and takes the faster."""

import pytest
import torch

from agiformer.precision import (
    BF16_MARGIN, PrecisionChoice, autocast, choose_precision, faster_precision, matmul_gflops,
)


def test_auto_measures_both_and_follows_the_rule():
    choice = choose_precision("auto", "cpu", width=64)
    assert choice.reason == "measured" and choice.requested == "auto" and choice.width == 64
    assert choice.bf16_gflops > 0 and choice.fp32_gflops > 0
    assert choice.precision == faster_precision(choice.bf16_gflops, choice.fp32_gflops)
    assert choose_precision("auto", "cpu", width=64) is choice  # measured once per process
    assert "measured at width 64" in choice.describe() and "GFLOP/s" in choice.describe()
    assert PrecisionChoice(**choice.to_dict()) == choice  # what a run stores, it reads back


@pytest.mark.parametrize("bf16, fp32, expected", [
    (2700.0, 450.0, "bf16"),    # Xeon with AMX
    (420.0, 170.0, "bf16"),     # Zen 4 with AVX-512 BF16
    (1.3, 61.0, "fp32"),        # Zen 3, AVX2 only
    (1.1 * 50.0, 50.0, "fp32"),  # faster matmul, but not by enough to pay for autocast's casts
    (BF16_MARGIN * 50.0, 50.0, "bf16"),
])
def test_bf16_is_taken_only_where_it_is_clearly_faster(bf16, fp32, expected):
    assert faster_precision(bf16, fp32) == expected


def test_forced_precisions_skip_the_measurement_and_bad_names_are_refused():
    assert choose_precision("fp32", "cpu", width=64) == PrecisionChoice("fp32", "fp32", "forced", "cpu")
    assert choose_precision("bf16", "cpu", width=64).precision == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        choose_precision("fp16", "cpu", width=64)
    with pytest.raises(ValueError, match="chosen precision"):
        autocast(torch.device("cpu"), "auto")


def test_matmul_gflops_counts_the_work_done():
    # fp32 on any CPU: well above a scalar loop (0.1 GFLOP/s) and below 100 TFLOP/s
    assert 0.1 < matmul_gflops(torch.float32, 64, 64, 256, device=torch.device("cpu"), seconds=0.02) < 1e5


def test_autocast_bf16_runs_matmuls_in_bf16():
    a = torch.randn(4, 4)
    with autocast(torch.device("cpu"), "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert (a @ a).dtype == torch.float32
