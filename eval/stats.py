"""Small, pure statistics for evaluation: Wilson intervals, pass@k, paired differences.

Success rates on ALFWorld come from a few dozen to a few hundred episodes, so a bare percentage
hides how uncertain it is. The Wilson score interval stays inside [0, 1] and behaves at 0% and
100%, where the textbook normal interval collapses to a single point.
"""

from __future__ import annotations

import math
import statistics
from typing import Mapping, NamedTuple, Sequence

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
            raise ValueError(f"expected k <= n and 0 <= c <= n for every game, got n={n}, c={c}, "
                             f"k={k}: play each game at least k times (--samples k)")
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
        raise ValueError(f"expected shared keys, got none: a has {len(a)}, b has {len(b)}, and no "
                         "key is in both (were both evaluated on the same games and seed?)")
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
