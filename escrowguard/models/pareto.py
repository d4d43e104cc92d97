"""How concentrated holdings are: the share held by the top holders, and the curve to plot.

"Top 20% of projects hold 75% of pledged money" is ``top_share(funding, 0.2) == 0.75``.
Pure functions over plain sequences; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _holdings(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Values as a float array sorted from the largest holder down; negatives rejected."""
    held = np.asarray(values, dtype=np.float64).ravel()
    if held.size and (np.isnan(held).any() or (held < 0).any()):
        raise ValueError("holdings must be non-negative numbers")
    return np.sort(held)[::-1]


def top_share(values: Sequence[float] | np.ndarray, fraction: float = 0.2) -> float:
    """Share of the total held by the top ``fraction`` of holders (0.0 if nothing is held).

    The top group is ``ceil(fraction * n)`` holders, so it is never empty.

    >>> top_share([80, 5, 5, 5, 5])
    0.8
    >>> top_share([1, 1, 1, 1], fraction=0.5)
    0.5
    >>> top_share([])
    0.0
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be within (0, 1], got {fraction}")
    held = _holdings(values)
    total = float(held.sum())
    if held.size == 0 or total == 0.0:
        return 0.0
    k = max(1, math.ceil(fraction * held.size - 1e-9))
    return float(held[:k].sum()) / total


def pareto_curve(values: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the concentration curve: the top ``x`` share of holders hold ``y`` of the
    total. Starts at (0, 0), ends at (1, 1); concave; the diagonal means perfect equality.

    >>> x, y = pareto_curve([60, 20, 10, 10])
    >>> x.tolist(), y.tolist()
    ([0.0, 0.25, 0.5, 0.75, 1.0], [0.0, 0.6, 0.8, 0.9, 1.0])
    """
    held = _holdings(values)
    x = np.arange(held.size + 1, dtype=np.float64) / max(held.size, 1)
    total = float(held.sum())
    cumulative = np.concatenate([[0.0], np.cumsum(held)])
    y = cumulative / total if total > 0 else np.zeros_like(cumulative)
    return x, y
