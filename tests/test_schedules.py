"""Learning-rate schedules: their documented formulas, checked at chosen steps, and their arguments."""

import math

import numpy as np
import pytest

from bp_gpu import optim
from bp_gpu.optim import hyper as H


def test_constant_is_the_same_at_every_step():
    s = optim.constant(0.25)
    assert [s(t) for t in (1, 2, 1000, 10**9)] == [0.25] * 4


@pytest.mark.parametrize("make", [optim.warmup_cosine, optim.warmup_linear])
def test_warmup_ramps_linearly_to_the_peak(make):
    s = make(2e-3, warmup_steps=500, total_steps=20_000)
    assert s(1) == pytest.approx(2e-3 / 500, rel=1e-15)
    assert s(250) == pytest.approx(1e-3, rel=1e-15)
    assert s(500) == 2e-3


def test_warmup_cosine_formula():
    s = optim.warmup_cosine(1.0, warmup_steps=10, total_steps=110, final=0.1)
    for t, p in [(11, 0.01), (35, 0.25), (60, 0.5), (85, 0.75), (110, 1.0)]:
        assert s(t) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * p)) / 2, rel=1e-14)
    assert s(60) == pytest.approx(0.55, rel=1e-14)
    assert s(110) == pytest.approx(0.1, rel=1e-14)
    assert s(10**6) == pytest.approx(0.1, rel=1e-14)  # after total_steps: final


def test_warmup_linear_formula():
    s = optim.warmup_linear(2.0, warmup_steps=0, total_steps=100)
    assert s(1) == pytest.approx(2.0 * 0.99, rel=1e-14)
    assert s(50) == pytest.approx(1.0, rel=1e-14)
    assert s(100) == 0.0 and s(101) == 0.0


def test_warmup_equal_to_total_holds_final_after_the_ramp():
    s = optim.warmup_cosine(1.0, warmup_steps=5, total_steps=5, final=0.2)
    assert s(5) == 1.0 and s(6) == pytest.approx(0.2)


def test_one_formula_for_host_and_compiled_code():
    # The CPU optimizer compiles the very function schedules call on the host.
    from bp_gpu.cpu_optimizer import _scheduled_rate

    for kind in (H.CONSTANT, H.WARMUP_COSINE, H.WARMUP_LINEAR):
        for t in (1.0, 3.0, 7.0, 8.0, 50.0, 1e6):
            want = H.scheduled_rate(kind, 0.3, 7.0, 40.0, 0.01, t)
            assert _scheduled_rate(kind, 0.3, 7.0, 40.0, 0.01, t) == pytest.approx(want, rel=1e-15)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: optim.constant(0), "lr must be > 0"),
        (lambda: optim.constant(float("nan")), "lr must be a finite number"),
        (lambda: optim.warmup_cosine(1e-3, warmup_steps=10, total_steps=5), r"warmup_steps \(10\) must be <="),
        (lambda: optim.warmup_cosine(1e-3, warmup_steps=-1, total_steps=5), "warmup_steps must be an int >= 0"),
        (lambda: optim.warmup_linear(1e-3, warmup_steps=0, total_steps=0), "total_steps must be an int >= 1"),
        (lambda: optim.warmup_linear(1e-3, 0, 10, final=-1.0), "final must be >= 0"),
        (lambda: optim.warmup_linear(1e-3, 2.5, 10), "warmup_steps must be an int"),
    ],
)
def test_bad_arguments_are_rejected(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_repr_names_the_schedule():
    assert repr(optim.constant(0.5)) == "constant(0.5)"
    assert repr(optim.warmup_linear(1.0, 2, 3)) == "warmup_linear(1.0, warmup_steps=2, total_steps=3, final=0.0)"
    assert np.isclose(optim.warmup_linear(1.0, 2, 3)(1), 0.5)
