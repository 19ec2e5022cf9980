"""Small, pure statistics for evaluation: Wilson intervals, pass@k, paired differences.

Success rates on ALFWorld come from a few dozen to a few hundred episodes, so a bare percentage
hides how uncertain it is. The Wilson score interval stays inside [0, 1] and behaves at 0% and
100%, where the textbook normal interval collapses to a single point.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import NamedTuple

Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (successes out of n).

        centre = (s + z²/2) / (n + z²),  half = z / (n + z²) * sqrt(s (n - s) / n + z²/4)

    With n = 0 there is no evidence at all, so the interval is the whole range (0, 1).
    """
    if not 0 <= successes <= n:
        raise ValueError(f"expected 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    z2 = z * z
    centre = (successes + z2 / 2) / (n + z2)
    half = z / (n + z2) * math.sqrt(successes * (n - successes) / n + z2 / 4)
    # Rounding can push the bounds a hair past [0, 1] at 0% and 100%.
    return max(0.0, centre - half), min(1.0, centre + half)


def pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """Unbiased pass@k over games, each given as (n samples played, c samples won).

    Per game 1 - C(n - c, k) / C(n, k): the chance that k samples drawn without replacement
    from the n played hold at least one win (Chen et al. 2021). With n = k this is "any win".
    Averaged over games; 0.0 for no games.
    """
    if k < 1:
        raise ValueError(f"expected k >= 1, got {k}")
    for n, c in counts:
        if n < k or not 0 <= c <= n:
            raise ValueError(
                f"expected k <= n and 0 <= c <= n for every game, got n={n}, c={c}, "
                f"k={k}: play each game at least k times (--samples k)"
            )
    if not counts:
        return 0.0
    return sum(1.0 - math.comb(n - c, k) / math.comb(n, k) for n, c in counts) / len(counts)


class PairedDifference(NamedTuple):
    """Mean of b - a over the keys both share, with a normal-approximation 95% interval.

    `low`/`high` are None when the interval is undefined (fewer than 2 shared keys); `note`
    says why, or warns when every difference is equal (zero variance: a zero-width interval
    that understates the uncertainty).
    """

    mean: float
    low: float | None
    high: float | None
    n: int
    note: str | None = None


def paired_difference(a: Mapping[str, float], b: Mapping[str, float], z: float = Z_95) -> PairedDifference:
    """Paired difference b - a over the keys (episodes) present in both mappings.

    Pairing removes the variation between games (some are hard for every policy), so it is far
    tighter than comparing two independent success rates. Interval: mean ± z * sd / sqrt(n),
    sd the sample standard deviation of the per-key differences.
    """
    shared = sorted(set(a) & set(b))
    if not shared:
        raise ValueError(
            f"expected shared keys, got none: a has {len(a)}, b has {len(b)}, and no "
            "key is in both (were both evaluated on the same games and seed?)"
        )
    differences = [b[key] - a[key] for key in shared]
    mean = statistics.fmean(differences)
    n = len(differences)
    if n < 2:
        return PairedDifference(mean, None, None, n, "only 1 shared episode: no interval")
    sd = statistics.stdev(differences)
    half = z * sd / math.sqrt(n)
    note = None
    if sd == 0:
        note = f"all {n} paired differences are equal: the interval has zero width"
    return PairedDifference(mean, mean - half, mean + half, n, note)


def student_t_quantile(confidence: float, df: int) -> float:
    """Two-sided quantile of Student's t with integer `df`: P(|T| <= q) = confidence.

    A handful of training seeds is too few for the normal quantile (with 3 seeds the 95% factor is
    4.30, not 1.96). Uses the closed form of P(|T| <= t) for integer degrees of freedom
    (Abramowitz and Stegun 26.7.3-4) and bisection.
    """
    if df < 1 or not 0 < confidence < 1:
        raise ValueError(f"expected df >= 1 and 0 < confidence < 1, got df={df}, confidence={confidence}")

    def inside(t: float) -> float:  # P(|T| <= t)
        theta = math.atan(t / math.sqrt(df))
        cos2 = math.cos(theta) ** 2
        term, total = 1.0, 1.0
        if df % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
            for k in range(1, (df - 1) // 2):
                term *= 2 * k / (2 * k + 1) * cos2
                total += term
            return 2 / math.pi * (theta + (math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0))
        for k in range(1, df // 2):  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
            term *= (2 * k - 1) / (2 * k) * cos2
            total += term
        return math.sin(theta) * total

    low, high = 0.0, 1.0
    while inside(high) < confidence:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if inside(middle) < confidence else (low, middle)
    return (low + high) / 2


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None, float | None]:
    """Mean of independent replicates (for example one result per training seed) with its
    t interval; no interval (None, None) for a single value."""
    if not values:
        raise ValueError("expected at least one value, got none")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None, None
    half = student_t_quantile(confidence, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half
