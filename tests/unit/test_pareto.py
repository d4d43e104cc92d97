"""Concentration of holdings: top_share and the Pareto curve."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from escrowguard.models.pareto import pareto_curve, top_share

holdings = st.lists(
    st.floats(min_value=0, max_value=1e9, allow_nan=False), min_size=1, max_size=200
)


def test_top_share_of_a_classic_80_20_split() -> None:
    assert top_share([80, 5, 5, 5, 5]) == pytest.approx(0.8)
    assert top_share([5, 5, 80, 5, 5]) == pytest.approx(0.8)  # order does not matter


def test_equal_holders_hold_their_headcount_share() -> None:
    assert top_share([3.0] * 10, 0.2) == pytest.approx(0.2)
    assert top_share([3.0] * 10, 0.5) == pytest.approx(0.5)
    assert top_share([3.0] * 10, 1.0) == pytest.approx(1.0)


def test_the_top_group_rounds_up_and_is_never_empty() -> None:
    assert top_share([10, 1, 1], 0.2) == pytest.approx(10 / 12)  # ceil(0.6) = 1 holder
    assert top_share([10, 5, 1, 1, 1, 1], 0.2) == pytest.approx(15 / 19)  # ceil(1.2) = 2
    assert top_share([7, 3], 0.01) == pytest.approx(0.7)


def test_nothing_held_is_a_zero_share() -> None:
    assert top_share([]) == 0.0
    assert top_share([0, 0, 0]) == 0.0


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, math.nan])
def test_fraction_must_be_within_0_and_1(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        top_share([1, 2, 3], fraction)


@pytest.mark.parametrize("bad", [[1.0, -1.0], [math.nan, 1.0]])
def test_negative_or_nan_holdings_are_rejected(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        top_share(bad)
    with pytest.raises(ValueError, match="non-negative"):
        pareto_curve(bad)


def test_curve_of_a_known_distribution() -> None:
    x, y = pareto_curve(np.array([10, 60, 10, 20]))
    assert x.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert y.tolist() == pytest.approx([0.0, 0.6, 0.8, 0.9, 1.0])


def test_curve_of_nothing_held_stays_flat() -> None:
    x, y = pareto_curve([0, 0])
    assert x.tolist() == [0.0, 0.5, 1.0] and y.tolist() == [0.0, 0.0, 0.0]
    x, y = pareto_curve([])
    assert x.tolist() == [0.0] and y.tolist() == [0.0]


@given(holdings)
def test_curve_runs_from_origin_to_one_and_is_concave(values: list[float]) -> None:
    x, y = pareto_curve(values)
    assert x[0] == 0.0 and x[-1] == 1.0 and y[0] == 0.0
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) >= -1e-12)
    if sum(values) > 0:
        assert y[-1] == pytest.approx(1.0)
        slopes = np.diff(y) / np.diff(x)
        assert np.all(np.diff(slopes) <= 1e-9 * max(1.0, slopes.max()))
        assert np.all(y >= x - 1e-9)  # never below the line of equality


@given(holdings, st.sampled_from([0.1, 0.2, 0.5]))
def test_top_share_is_a_point_on_the_curve(values: list[float], fraction: float) -> None:
    _, y = pareto_curve(values)
    k = max(1, math.ceil(fraction * len(values) - 1e-9))
    assert top_share(values, fraction) == pytest.approx(y[k] if sum(values) else 0.0)
    assert top_share(values, fraction) >= min(fraction, 1.0) - 1e-9 or sum(values) == 0


def test_a_pareto_80_20_sample_lands_near_80_percent() -> None:
    rng = np.random.Generator(np.random.PCG64(0))
    alpha = math.log(5) / math.log(4)  # the 80/20 tail index, ~1.16
    sample = rng.pareto(alpha, 200_000) + 1.0
    assert 0.6 < top_share(sample) < 0.95
