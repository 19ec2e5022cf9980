"""Tests of holderpo.kl: the three KL estimators and the masked mean."""

from __future__ import annotations

import math

import pytest
import torch

from holderpo.kl import K3_CLAMP, KL_ESTIMATORS, kl_penalty, masked_mean


def loop_estimate(logp: float, ref_logp: float, estimator: str) -> float:
    log_ratio = logp - ref_logp  # log pi_theta / pi_ref
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    # k3 = pi_ref/pi_theta - 1 - log(pi_ref/pi_theta), clamped like verl's low_var_kl
    return min(max(math.exp(-log_ratio) - 1 + log_ratio, -K3_CLAMP), K3_CLAMP)


def make_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logp = -3 * torch.rand(4, 9, generator=g)
    ref_logp = logp + torch.randn(4, 9, generator=g) * torch.tensor([1e-4, 0.1, 1.0, 4.0])[:, None]
    mask = torch.rand(4, 9, generator=g) < 0.7
    mask[0, 0] = True
    return logp, ref_logp, mask


@pytest.mark.parametrize("estimator", sorted(KL_ESTIMATORS))
def test_estimators_match_float64_loop(estimator):
    logp, ref_logp, mask = make_inputs()
    got = kl_penalty(logp, ref_logp, mask, estimator)
    assert got.dtype == torch.float32 and got.shape == logp.shape
    name = "k3" if estimator == "low_var_kl" else estimator
    for (i, t), m in zip(torch.cartesian_prod(torch.arange(4), torch.arange(9)).tolist(), mask.flatten().tolist()):
        want = loop_estimate(float(logp[i, t]), float(ref_logp[i, t]), name) if m else 0.0
        # float32 rounds delta, expm1(delta) and the result, each to within an ulp (2^-23 relative);
        # 2^-22 of each bounds the error on any CPU, propagation included (an expm1 off by a whole ulp
        # would use 0.63 of it; measured 0.14). k3 ~ delta^2 / 2 ~ 1e-9 in the first row: the
        # bound is 1-9% of k3 there, and exp(d) - d - 1 would cancel to 12-78 times the bound.
        delta = float(ref_logp[i, t]) - float(logp[i, t])
        bound = 2**-22 * (abs(delta) + abs(math.expm1(delta)) + abs(want))
        assert abs(float(got[i, t]) - want) <= bound, (estimator, i, t)


def test_k3_is_non_negative_and_clamped():
    # delta = ref_logp - logp: 0, 15 (exp(15) - 16 clamped), -20 (19 clamped), -5 (unclamped)
    logp = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    ref_logp = torch.tensor([[0.0, 15.0, -20.0, -5.0]])
    got = kl_penalty(logp, ref_logp, torch.ones_like(logp, dtype=torch.bool), "k3")
    assert got.tolist()[0][:3] == [0.0, K3_CLAMP, K3_CLAMP]
    assert float(got[0, 3]) == pytest.approx(math.exp(-5) + 5 - 1)
    logp, ref_logp, mask = make_inputs(1)
    assert torch.all(kl_penalty(logp, ref_logp, mask, "k3") >= 0)


@pytest.mark.parametrize("estimator", sorted(KL_ESTIMATORS))
def test_masked_out_garbage_changes_nothing_gradients_included(estimator):
    logp, ref_logp, mask = make_inputs(2)
    noisy_ref = torch.where(mask, ref_logp, math.nan)
    noisy_logp = torch.where(mask, logp, math.inf)
    results = []
    for lp, ref in ((logp, ref_logp), (noisy_logp, noisy_ref)):
        lp = lp.clone().requires_grad_(True)
        masked_mean(kl_penalty(lp, ref, mask, estimator), mask).backward()
        results.append((kl_penalty(lp.detach(), ref, mask, estimator), lp.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert torch.all(results[1][1][~mask] == 0) and results[1][1][mask].abs().sum() > 0


def test_low_precision_inputs_are_upcast():
    logp, ref_logp, mask = make_inputs(3)
    got = kl_penalty(logp.bfloat16(), ref_logp.bfloat16(), mask, "k2")
    want = kl_penalty(logp.bfloat16().float(), ref_logp.bfloat16().float(), mask, "k2")
    assert got.dtype == torch.float32 and torch.equal(got, want)


def test_masked_mean_matches_loop():
    values = torch.tensor([[1.0, 2.0, math.nan], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[True, True, False], [False, False, True], [False, False, False]])
    assert masked_mean(values, mask) == pytest.approx((1 + 2 + 6) / 3)
    assert torch.equal(masked_mean(values, mask, dim=-1), torch.tensor([1.5, 6.0, 0.0]))
    assert masked_mean(values, torch.zeros_like(mask)) == 0
    with pytest.raises(ValueError, match=r"expected mask of the values' shape \(3, 3\), got \(3,\)"):
        masked_mean(values, mask[0])


def test_validation_errors():
    logp, ref_logp, mask = make_inputs()
    with pytest.raises(ValueError, match=r"expected a KL estimator in \['k1', 'k2', 'k3', 'low_var_kl'\], got 'k4'"):
        kl_penalty(logp, ref_logp, mask, "k4")
    with pytest.raises(ValueError, match="expected logp, ref_logp and mask of one"):
        kl_penalty(logp, ref_logp[:, :-1], mask)
