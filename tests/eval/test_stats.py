"""Evaluation statistics: Wilson intervals, pass@k and paired differences, against known values."""

import math

import pytest

from eval.stats import mean_interval, paired_difference, pass_at_k, student_t_quantile, wilson_interval


@pytest.mark.parametrize(
    "successes, n, expected",
    [
        (0, 10, (0.0, 0.2775)),  # no success still leaves up to ~28% plausible
        (5, 10, (0.2366, 0.7634)),
        (10, 10, (0.7225, 1.0)),
        (93, 100, (0.8625, 0.9657)),
    ],
)
def test_wilson_interval_matches_published_values(successes, n, expected):
    low, high = wilson_interval(successes, n)
    assert (low, high) == pytest.approx(expected, abs=1e-4)


def test_wilson_interval_contains_the_rate_and_narrows_with_n():
    for n in (1, 7, 50, 1000):
        for successes in (0, n // 3, n):
            low, high = wilson_interval(successes, n)
            assert 0.0 <= low <= successes / n <= high <= 1.0
    assert (
        wilson_interval(50, 100)[1] - wilson_interval(50, 100)[0]
        > wilson_interval(500, 1000)[1] - wilson_interval(500, 1000)[0]
    )
    wide = wilson_interval(5, 10, z=2.576)
    assert wide[0] < wilson_interval(5, 10)[0]


def test_wilson_interval_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes <= n"):
        wilson_interval(3, 2)
    with pytest.raises(ValueError, match="successes <= n"):
        wilson_interval(-1, 2)


def test_pass_at_k_is_unbiased_per_game_then_averaged():
    assert pass_at_k([(5, 2)], 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))  # 0.7
    assert pass_at_k([(5, 1)], 1) == pytest.approx(0.2)  # pass@1 is the success rate
    assert pass_at_k([(3, 1), (3, 0)], 3) == pytest.approx(0.5)  # n = k: "any win", averaged
    assert pass_at_k([(4, 4)], 2) == 1.0
    assert pass_at_k([], 1) == 0.0


def test_pass_at_k_refuses_fewer_samples_than_k():
    with pytest.raises(ValueError, match="--samples"):
        pass_at_k([(2, 1)], 3)
    with pytest.raises(ValueError, match="k >= 1"):
        pass_at_k([(2, 1)], 0)


def test_paired_difference_on_shared_keys():
    a = {"g1": 0.0, "g2": 1.0, "g3": 0.0, "g4": 1.0, "only_a": 1.0}
    b = {"g1": 1.0, "g2": 1.0, "g3": 1.0, "g4": 0.0, "only_b": 0.0}
    diff = paired_difference(a, b)
    # differences b - a: 1, 0, 1, -1 -> mean 0.25, sd sqrt(0.9167)
    assert diff.n == 4 and diff.mean == pytest.approx(0.25)
    half = 1.959964 * math.sqrt(((0.75**2) * 2 + 0.25**2 + 1.25**2) / 3) / 2
    assert (diff.low, diff.high) == pytest.approx((0.25 - half, 0.25 + half), abs=1e-6)
    assert diff.note is None
    assert paired_difference(b, a).mean == pytest.approx(-0.25)


def test_paired_difference_says_when_it_has_no_interval():
    single = paired_difference({"g": 0.0}, {"g": 1.0})
    assert single.n == 1 and single.low is None and single.high is None and "no interval" in single.note
    constant = paired_difference({"g": 0.0, "h": 0.0}, {"g": 1.0, "h": 1.0})
    assert constant.low == constant.high == 1.0 and "zero width" in constant.note
    with pytest.raises(ValueError, match="no\\s+key is in both"):
        paired_difference({"g": 1.0}, {"h": 1.0})


@pytest.mark.parametrize(
    "df, expected", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (10, 2.2281), (30, 2.0423)]
)
def test_student_t_quantile_matches_tables(df, expected):
    assert student_t_quantile(0.95, df) == pytest.approx(expected, abs=1e-4)


def test_student_t_quantile_tends_to_the_normal_and_checks_input():
    assert student_t_quantile(0.95, 2000) == pytest.approx(1.95996, abs=2e-3)
    assert student_t_quantile(0.99, 5) == pytest.approx(4.0321, abs=1e-4)
    with pytest.raises(ValueError, match="df >= 1"):
        student_t_quantile(0.95, 0)


def test_mean_interval_over_seeds():
    mean, low, high = mean_interval([0.40, 0.50, 0.60])
    assert mean == pytest.approx(0.5)
    assert (low, high) == pytest.approx(
        (0.5 - 4.3027 * 0.1 / math.sqrt(3), 0.5 + 4.3027 * 0.1 / math.sqrt(3)), abs=1e-4
    )
    assert mean_interval([0.3]) == (0.3, None, None)
