"""Tests of holderpo.losses against independent float64 definitions written as plain loops."""

from __future__ import annotations

import math

import pytest
import torch

from holderpo.kl import kl_penalty, masked_mean
from holderpo.losses import (
    AGGREGATIONS,
    PRESETS,
    aggregate,
    exponent_diagnostics,
    get_preset,
    holder_policy_loss,
    holder_weights,
    log_holder_mean,
    policy_measure,
    ppo_token_loss,
    total_loss,
)

P_GRID = [-8.0, -2.0, -1.0, -0.5, -1e-4, 0.0, 1e-7, 1e-4, 0.5, 1.0, 2.0, 3.0, 8.0]
NEAR_ZERO_P = [-1e-4, -1e-7, 1e-7, 1e-4]
LOG_1E8 = math.log(1e8)


# ----------------------------------------------------------------------------- batches


def make_batch(seed: int, lengths=(1, 2, 7, 64, 300, 0), extreme: bool = True, dtype=torch.float32):
    """A batch with one row per length (0 = fully masked), holes anywhere in the mask.

    Log ratios are uniform in [log 1e-8, log 1e8] when `extreme`, else N(0, 0.3^2); advantages
    take both signs and exact zeros.
    """
    g = torch.Generator().manual_seed(seed)
    batch, width = len(lengths), max(lengths) + 3
    old_logp = -5.0 * torch.rand(batch, width, generator=g, dtype=torch.float64)
    if extreme:
        log_ratio = (2 * torch.rand(batch, width, generator=g, dtype=torch.float64) - 1) * LOG_1E8
    else:
        log_ratio = 0.3 * torch.randn(batch, width, generator=g, dtype=torch.float64)
    mask = torch.zeros(batch, width, dtype=torch.bool)
    for i, length in enumerate(lengths):
        mask[i, torch.randperm(width, generator=g)[:length]] = True
    advantages = torch.randn(batch, generator=g, dtype=torch.float64)
    advantages[::3] = 0.0
    advantages[1] = -abs(advantages[1])
    return (old_logp + log_ratio).to(dtype), old_logp.to(dtype), advantages.to(dtype), mask


def masked_values(row: torch.Tensor, mask_row: torch.Tensor) -> list[float]:
    """The masked-in entries of one row as Python floats (float64)."""
    return [float(v) for v, m in zip(row.tolist(), mask_row.tolist()) if m]


# ------------------------------------------------------------- float64 reference loops

# Unless a test says otherwise, each check evaluates the float32 function once (no optimizer step)
# against these loops in float64 on the same float32 inputs, or against itself on other batches:
# only the function's own rounding counts, a few float32 ulps (eps 1.2e-7) per operation, summed
# pairwise over at most 500 tokens. rtol 1e-5 on values and 1e-4 on gradients hold that with room:
# the worst measured error uses a fifth of its tolerance (near-zero p with ratios 1e-8..1e8).


def ref_log_holder_mean(xs: list[float], p: float) -> float:
    """(1/p) log((1/T) sum_t exp(p x_t)), or mean(x) at p = 0, with Python floats."""
    if p == 0:
        return math.fsum(xs) / len(xs)
    shift = max(p * x for x in xs)  # only to keep exp finite in float64
    return (shift + math.log(math.fsum(math.exp(p * x - shift) for x in xs) / len(xs))) / p


def ref_weights(xs: list[float], p: float) -> list[float]:
    """W_t = r_t^p / sum_k r_k^p."""
    shift = max(p * x for x in xs)
    terms = [math.exp(p * x - shift) for x in xs]
    total = math.fsum(terms)
    return [t / total for t in terms]


def ref_torch_log_holder_mean(xs: torch.Tensor, p: float) -> torch.Tensor:
    """The same definition with float64 torch scalars (token by token), for reference gradients."""
    if p == 0:
        return sum(xs[t] for t in range(len(xs))) / len(xs)
    shift = max(p * float(x.detach()) for x in xs)
    total = sum(torch.exp(p * xs[t] - shift) for t in range(len(xs)))
    return (shift + torch.log(total / len(xs))) / p


def ref_holder_loss(logp, old_logp, advantages, mask, p, clip_low, clip_high, clip, weights=None, log_space=False):
    """-sum_i w_i J_i / sum_i w_i, J_i from the HölderPO definitions, as a float64 torch graph."""
    logp = logp.double()
    numerator, denominator = 0.0, 0.0
    for i in range(len(logp)):
        index = [t for t in range(logp.shape[1]) if mask[i, t]]
        if not index:
            continue
        a = float(advantages[i])
        w = 1.0 if weights is None else float(weights[i])
        xs = [logp[i, t] - float(old_logp[i, t]) for t in index]
        if clip == "token":
            clipped = []
            for x in xs:
                if log_space:  # GMPO: log r clipped to [-clip_low, clip_high], pessimistically
                    clipped.append(torch.clamp(x, max=clip_high) if a >= 0 else torch.clamp(x, min=-clip_low))
                else:  # PPO per token: min(r, 1 + e) for A >= 0, max(r, 1 - e) for A < 0
                    r = torch.exp(x)
                    r = torch.clamp(r, max=1 + clip_high) if a >= 0 else torch.clamp(r, min=1 - clip_low)
                    clipped.append(torch.log(r))
            objective = a * torch.exp(ref_torch_log_holder_mean(torch.stack(clipped), p))
        else:
            rho = torch.exp(ref_torch_log_holder_mean(torch.stack(xs), p))
            if log_space:
                clipped_rho = torch.exp(torch.clamp(torch.log(rho), -clip_low, clip_high))
            else:
                clipped_rho = torch.clamp(rho, 1 - clip_low, 1 + clip_high)
            objective = torch.minimum(rho * a, clipped_rho * a)
        numerator = numerator + w * objective
        denominator += w
    return -numerator / denominator


def ref_ppo_token_losses(logp, old_logp, advantages, mask, clip_low=0.2, clip_high=0.2):
    """Per-row lists of l_t = -min(r_t A, clip(r_t, 1 - lo, 1 + hi) A) (float64 graph)."""
    logp = logp.double()
    rows = []
    for i in range(len(logp)):
        a = float(advantages[i])
        row = []
        for t in range(logp.shape[1]):
            if mask[i, t]:
                r = torch.exp(logp[i, t] - float(old_logp[i, t]))
                row.append(-torch.minimum(r * a, torch.clamp(r, 1 - clip_low, 1 + clip_high) * a))
        rows.append(row)
    return rows


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


# ------------------------------------------------------------------- log_holder_mean


@pytest.mark.parametrize("p", P_GRID)
@pytest.mark.parametrize("extreme", [True, False], ids=["ratios-1e-8..1e8", "ratios-near-1"])
def test_log_holder_mean_matches_float64_loop(p, extreme):
    logp, old_logp, _, mask = make_batch(seed=1, extreme=extreme)
    log_ratio = logp - old_logp  # float32
    got = log_holder_mean(log_ratio, mask, p)
    assert got.dtype == torch.float32 and got.shape == (len(mask),)
    for i in range(len(mask)):
        xs = masked_values(log_ratio[i], mask[i])
        want = ref_log_holder_mean(xs, p) if xs else 0.0
        # Absolute error on log rho = relative error on rho; |log r| <= 18.4 bounds the float32
        # rounding of the inputs themselves to ~1e-6.
        tolerance = 1e-5 if extreme else 1e-6
        assert abs(float(got[i]) - want) <= tolerance, (i, float(got[i]), want)


@pytest.mark.parametrize("p", P_GRID)
def test_log_holder_mean_float64_input_is_float64_accurate(p):
    logp, old_logp, _, mask = make_batch(seed=2, dtype=torch.float64)
    log_ratio = logp - old_logp
    got = log_holder_mean(log_ratio, mask, p)
    assert got.dtype == torch.float64
    for i in range(len(mask)):
        xs = masked_values(log_ratio[i], mask[i])
        if xs:
            # the reference's own cancellation at p = 1e-7 is ~1e-16 * log T / p ~ 1e-8
            assert abs(float(got[i]) - ref_log_holder_mean(xs, p)) <= 5e-8


@pytest.mark.parametrize("p", NEAR_ZERO_P)
@pytest.mark.parametrize("extreme", [True, False], ids=["ratios-1e-8..1e8", "ratios-near-1"])
def test_near_zero_p_float32_matches_float64(p, extreme):
    logp, old_logp, _, mask = make_batch(seed=3, lengths=(1, 5, 64, 500), extreme=extreme)
    log_ratio = logp - old_logp
    rho32 = torch.exp(log_holder_mean(log_ratio, mask, p).double())
    rho64 = torch.exp(log_holder_mean(log_ratio.double(), mask, p))
    # The naive (logsumexp(p x) - log T) / p would be off by ~1e-3 relative at |p| = 1e-4.
    assert torch.allclose(rho32, rho64, rtol=1e-5 if extreme else 1e-6, atol=0)


def test_p_zero_is_the_exact_geometric_mean():
    logp, old_logp, _, mask = make_batch(seed=4)
    log_ratio = logp - old_logp
    got = log_holder_mean(log_ratio, mask, 0.0)
    want = torch.where(mask, log_ratio, 0).sum(-1) / mask.sum(-1).clamp_min(1)
    assert torch.equal(got, want)
    # and p -> 0 from either side approaches it continuously. In float64, as the mathematics alone
    # decides it: M_p - M_0 ~ p Var(log r) / 2 is up to 5.5e-6 here, and float32 rounding (1.1e-6 at
    # |log r| <= 18.4) would leave a 2-fold margin; float32 near p = 0 is checked against float64 above.
    log_ratio = log_ratio.double()
    for p in (-1e-7, 1e-7):
        assert torch.allclose(
            log_holder_mean(log_ratio, mask, p), log_holder_mean(log_ratio, mask, 0.0), atol=1e-5, rtol=0
        )


def test_p_one_is_the_arithmetic_mean():
    logp, old_logp, _, mask = make_batch(seed=5, extreme=False)
    log_ratio = logp - old_logp
    got = torch.exp(log_holder_mean(log_ratio, mask, 1.0))
    for i in range(len(mask)):
        rs = [math.exp(x) for x in masked_values(log_ratio[i], mask[i])]
        if rs:
            assert math.isclose(float(got[i]), math.fsum(rs) / len(rs), rel_tol=1e-6)


@pytest.mark.parametrize("sign", [1, -1], ids=["p-to-+inf-max", "p-to--inf-min"])
def test_large_p_tends_to_the_extreme_ratio_and_weights_concentrate(sign):
    logp, old_logp, _, mask = make_batch(seed=6, lengths=(3, 40, 300), extreme=False)
    log_ratio = logp - old_logp
    p = sign * 2000.0
    extreme = torch.where(mask, sign * log_ratio, -math.inf).amax(-1) * sign
    got = log_holder_mean(log_ratio, mask, p)
    # log M_p lies within log(T) / |p| of the extreme log ratio (+ 1e-6: 16 float32 ulps of |log r| < 1)
    assert torch.all((got - extreme).abs() <= math.log(300) / abs(p) + 1e-6)
    weights = holder_weights(log_ratio, mask, p)
    extreme_index = torch.where(mask, sign * log_ratio, -math.inf).argmax(-1)
    assert torch.all(weights.gather(1, extreme_index[:, None]) > 0.99)
    # while at p = 0 the weights are uniform
    uniform = holder_weights(log_ratio, mask, 0.0)
    assert torch.allclose(uniform, mask / mask.sum(-1, keepdim=True))


def test_tensor_p_and_float_mask_match_float_p_and_bool_mask():
    logp, old_logp, advantages, mask = make_batch(seed=7)
    log_ratio = logp - old_logp
    for p in (-0.5, 1e-4, 2.0):
        want = log_holder_mean(log_ratio, mask, p)
        assert torch.equal(log_holder_mean(log_ratio, mask, torch.tensor(p)), want)
        assert torch.equal(log_holder_mean(log_ratio, mask.float(), p), want)
        loss, _ = holder_policy_loss(logp, old_logp, advantages, mask, p)
        assert torch.equal(holder_policy_loss(logp, old_logp, advantages, mask.float(), torch.tensor(p))[0], loss)


@pytest.mark.parametrize("p", P_GRID)
def test_holder_weights_match_float64_loop(p):
    logp, old_logp, _, mask = make_batch(seed=8)
    log_ratio = logp - old_logp
    got = holder_weights(log_ratio, mask, p)
    for i in range(len(mask)):
        xs = masked_values(log_ratio[i], mask[i])
        want = ref_weights(xs, p) if xs else []
        assert torch.allclose(got[i][mask[i]].double(), torch.tensor(want, dtype=torch.float64), atol=1e-6, rtol=1e-5)
        assert torch.all(got[i][~mask[i]] == 0)


@pytest.mark.parametrize("p", P_GRID)
def test_gradient_identity_grad_rho_equals_rho_times_weights(p):
    # grad rho_p = rho_p * sum_t W_t grad log pi_t: d rho_i / d logp_it = rho_i W_it.
    logp, old_logp, _, mask = make_batch(seed=9, extreme=False)
    logp = leaf(logp)
    rho = torch.exp(log_holder_mean(logp - old_logp, mask, p))
    rho.sum().backward()
    for i in range(len(mask)):
        xs = masked_values((logp - old_logp)[i].detach(), mask[i])
        if not xs:
            assert torch.all(logp.grad[i] == 0)
            continue
        rho_i = math.exp(ref_log_holder_mean(xs, p))
        want = torch.tensor([rho_i * w for w in ref_weights(xs, p)], dtype=torch.float64)
        assert torch.allclose(logp.grad[i][mask[i]].double(), want, rtol=1e-5, atol=1e-7), i
        assert torch.all(logp.grad[i][~mask[i]] == 0)


@pytest.mark.parametrize("p", NEAR_ZERO_P + [0.0])
def test_gradients_near_zero_p_float32_match_float64(p):
    logp, old_logp, _, mask = make_batch(seed=10, extreme=False)
    grads = []
    for dtype in (torch.float32, torch.float64):
        lp = leaf(logp.to(dtype))
        torch.exp(log_holder_mean(lp - old_logp.to(dtype), mask, p)).sum().backward()
        grads.append(lp.grad.double())
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("p", [-2.0, 1e-4, 0.0, 0.5, 3.0])
def test_low_precision_inputs_give_float32_accurate_results(dtype, p):
    logp, old_logp, advantages, mask = make_batch(seed=11, extreme=False)
    logp_low, old_low = logp.to(dtype), old_logp.to(dtype)
    log_ratio_low = (logp - old_logp).to(dtype)
    got = log_holder_mean(log_ratio_low, mask, p)
    assert got.dtype == torch.float32
    for i in range(len(mask)):
        xs = masked_values(log_ratio_low[i].double(), mask[i])  # the same rounded inputs
        if xs:
            assert abs(float(got[i]) - ref_log_holder_mean(xs, p)) <= 1e-6
    # the loss subtracts log-probs in float32, not in the low precision
    loss, _ = holder_policy_loss(logp_low, old_low, advantages.to(dtype), mask, p)
    adv_low = advantages.to(dtype)
    want = ref_holder_loss(logp_low.double(), old_low.double(), adv_low.double(), mask, p, 0.2, 0.2, "sequence")
    assert loss.dtype == torch.float32
    assert math.isclose(loss.item(), float(want.detach()), rel_tol=1e-5, abs_tol=1e-6)


@pytest.mark.parametrize("p", P_GRID)
@pytest.mark.parametrize("clip", ["sequence", "token"])
def test_no_nan_or_inf_for_finite_extreme_inputs(p, clip):
    logp, old_logp, advantages, mask = make_batch(seed=12)
    logp = leaf(logp)
    loss, metrics = holder_policy_loss(logp, old_logp, advantages, mask, p, clip=clip)
    loss.backward()
    assert torch.isfinite(loss) and torch.all(torch.isfinite(logp.grad))
    assert all(torch.isfinite(value) for value in metrics.values()), metrics


@pytest.mark.parametrize("p", [-2.0, 0.0, 1e-4, 1.0])
@pytest.mark.parametrize("clip", ["sequence", "token"])
def test_masked_out_values_change_nothing_gradients_included(p, clip):
    logp, old_logp, advantages, mask = make_batch(seed=13, extreme=False)
    garbage = torch.tensor([math.nan, math.inf, -math.inf, 1e30])
    noisy_logp, noisy_old = logp.clone(), old_logp.clone()
    holes = (~mask).nonzero()
    noisy_logp[holes[:, 0], holes[:, 1]] = garbage[torch.arange(len(holes)) % 4]
    noisy_old[holes[:, 0], holes[:, 1]] = garbage[(torch.arange(len(holes)) + 1) % 4]
    results = []
    for lp, old in ((logp, old_logp), (noisy_logp, noisy_old)):
        lp = leaf(lp)
        loss, metrics = holder_policy_loss(lp, old, advantages, mask, p, clip=clip)
        loss.backward()
        results.append((loss, metrics, lp.grad, log_holder_mean(lp.detach() - old, mask, p)))
    (loss_a, metrics_a, grad_a, log_a), (loss_b, metrics_b, grad_b, log_b) = results
    assert torch.equal(loss_a, loss_b) and torch.equal(grad_a, grad_b) and torch.equal(log_a, log_b)
    assert all(torch.equal(metrics_a[k], metrics_b[k]) for k in metrics_a)
    assert torch.all(grad_b[~mask] == 0)
    # and the PPO loss too
    ppo = [ppo_token_loss(lp, old, advantages, mask) for lp, old in ((logp, old_logp), (noisy_logp, noisy_old))]
    assert torch.equal(ppo[0][0], ppo[1][0])


def test_fully_masked_row_is_finite_and_contributes_nothing():
    logp, old_logp, advantages, mask = make_batch(seed=14, lengths=(4, 0, 9))
    assert torch.isfinite(log_holder_mean(logp - old_logp, mask, 0.5)).all()
    assert log_holder_mean(logp - old_logp, mask, 0.5)[1] == 0
    keep = torch.tensor([0, 2])
    for p in (-1.0, 1e-4, 0.0, 2.0):
        lp = leaf(logp)
        loss, _ = holder_policy_loss(lp, old_logp, advantages, mask, p)
        loss.backward()
        without, _ = holder_policy_loss(logp[keep], old_logp[keep], advantages[keep], mask[keep], p)
        assert torch.allclose(loss, without, rtol=1e-6)
        assert torch.all(lp.grad[1] == 0)
    all_empty = torch.zeros_like(mask)
    loss, metrics = holder_policy_loss(leaf(logp), old_logp, advantages, all_empty, 0.5)
    assert loss == 0 and all(torch.isfinite(v) for v in metrics.values())


# ---------------------------------------------------------------- holder_policy_loss


@pytest.mark.parametrize("p", P_GRID)
@pytest.mark.parametrize("clip", ["sequence", "token"])
@pytest.mark.parametrize("log_space", [False, True], ids=["ratio-clip", "log-clip"])
def test_holder_policy_loss_matches_float64_definition(p, clip, log_space):
    logp, old_logp, advantages, mask = make_batch(seed=15, lengths=(1, 3, 12, 40, 0, 25), extreme=False)
    weights = torch.tensor([0.5, 2.0, 1.0, 0.0, 3.0, 1.5])
    lp = leaf(logp)
    loss, _ = holder_policy_loss(
        lp, old_logp, advantages, mask, p, 0.1, 0.3, clip, weights=weights, log_space_clip=log_space
    )
    loss.backward()
    ref_lp = leaf(logp.double())
    want = ref_holder_loss(ref_lp, old_logp.double(), advantages, mask, p, 0.1, 0.3, clip, weights, log_space)
    want.backward()
    assert math.isclose(loss.item(), float(want.detach()), rel_tol=1e-5, abs_tol=1e-7)
    assert torch.allclose(lp.grad.double(), ref_lp.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("p", [-8.0, 1e-4, 0.0, 1.0, 8.0])
@pytest.mark.parametrize("clip", ["sequence", "token"])
def test_holder_policy_loss_with_extreme_ratios_matches_definition(p, clip):
    logp, old_logp, advantages, mask = make_batch(seed=16)
    loss, _ = holder_policy_loss(logp, old_logp, advantages, mask, p, clip=clip)
    want = ref_holder_loss(logp.double(), old_logp.double(), advantages, mask, p, 0.2, 0.2, clip)
    assert math.isclose(loss.item(), float(want.detach()), rel_tol=1e-5, abs_tol=1e-6)


def test_zero_advantages_give_zero_loss_and_gradient():
    logp, old_logp, advantages, mask = make_batch(seed=17)
    for clip in ("sequence", "token"):
        lp = leaf(logp)
        loss, _ = holder_policy_loss(lp, old_logp, torch.zeros_like(advantages), mask, 0.5, clip=clip)
        loss.backward()
        assert loss == 0 and torch.all(lp.grad == 0)


def test_weights_are_a_weighted_mean_over_samples():
    logp, old_logp, advantages, mask = make_batch(seed=18, lengths=(3, 5, 8), extreme=False)
    rows = [slice(i, i + 1) for i in range(3)]
    per_sample = torch.stack([holder_policy_loss(logp[r], old_logp[r], advantages[r], mask[r], 0.5)[0] for r in rows])
    weights = torch.tensor([1.0, 3.0, 0.0])
    loss, _ = holder_policy_loss(logp, old_logp, advantages, mask, 0.5, weights=weights)
    assert torch.allclose(loss, (weights * per_sample).sum() / weights.sum())
    unweighted, _ = holder_policy_loss(logp, old_logp, advantages, mask, 0.5)
    assert torch.allclose(unweighted, per_sample.mean())


@pytest.mark.parametrize("p", [-1.0, 1e-4, 0.0, 0.05, 2.0])
@pytest.mark.parametrize("clip", ["sequence", "token"])
def test_metrics_match_their_definitions(p, clip):
    logp, old_logp, advantages, mask = make_batch(seed=19, lengths=(1, 4, 30, 0, 17), extreme=False)
    # per-row offsets spread the sequence ratios across the clip range, so that both clips act
    offsets = torch.tensor([0.0, 0.5, -0.5, 0.0, 0.02])[:, None]
    logp = old_logp + 2 * (logp - old_logp) + offsets
    _, metrics = holder_policy_loss(logp, old_logp, advantages, mask, p, clip=clip)
    assert all(v.dim() == 0 and not v.requires_grad for v in metrics.values())
    clipped, clippable, rhos, kls, entropies, maxima = 0, 0, [], [], [], []
    lo, hi = 0.8, 1.2
    for i in range(len(mask)):
        xs = masked_values((logp - old_logp)[i], mask[i])
        if not xs:
            continue
        a = float(advantages[i])
        kls += [math.exp(x) - 1 - x for x in xs]
        if clip == "token":
            rs = [min(math.exp(x), hi) if a >= 0 else max(math.exp(x), lo) for x in xs]
            clipped += sum(r != math.exp(x) and abs(r - math.exp(x)) > 1e-12 for r, x in zip(rs, xs))
            clippable += len(xs)
            xs = [math.log(r) for r in rs]
            rho = math.exp(ref_log_holder_mean(xs, p))
        else:
            rho = math.exp(ref_log_holder_mean(xs, p))
            clipped += (a >= 0 and rho > hi) or (a < 0 and rho < lo)
            clippable += 1
        rhos.append(rho)
        w = ref_weights(xs, p)
        entropies.append(-sum(v * math.log(v) for v in w if v > 0))
        maxima.append(max(w))
    want = {
        "clip_frac": clipped / clippable,
        "ratio_mean": sum(rhos) / len(rhos),
        "ratio_min": min(rhos),
        "ratio_max": max(rhos),
        "approx_kl": sum(kls) / len(kls),
        "weight_entropy": sum(entropies) / len(entropies),
        "weight_max": sum(maxima) / len(maxima),
    }
    assert set(metrics) == set(want)
    assert 0 < want["clip_frac"] < 1  # the check below can tell clipped from unclipped
    for name, value in want.items():
        got = float(metrics[name])
        assert math.isclose(got, value, rel_tol=1e-5, abs_tol=1e-6), (name, got, value)


# --------------------------------------------------------------------------- presets


def test_preset_registry_and_errors():
    assert set(PRESETS) == {"grpo", "grpo_verl", "drgrpo", "gspo", "gmpo", "holderpo", "holderpo_token", "ppo"}
    assert get_preset("gspo") is PRESETS["gspo"]
    valid = r"\['drgrpo', 'gmpo', 'grpo', 'grpo_verl', 'gspo', 'holderpo', 'holderpo_token', 'ppo'\]"
    with pytest.raises(ValueError, match=rf"expected a loss preset in {valid}, got 'dapo'"):
        get_preset("dapo")


def preset_grpo_definition(logp, old_logp, advantages, mask):
    """GRPO: per-sequence mean over tokens of the PPO clipped objective (clip 0.2), then mean over sequences."""
    rows = [row for row in ref_ppo_token_losses(logp, old_logp, advantages, mask, 0.2, 0.2) if row]
    return sum(sum(row) / len(row) for row in rows) / len(rows)


def preset_gspo_definition(logp, old_logp, advantages, mask):
    """GSPO: s_i = exp(mean_t log r_t); J_i = min(s_i A, clip(s_i, 1 - 3e-4, 1 + 4e-4) A)."""
    logp = logp.double()
    total, n = 0.0, 0
    for i in range(len(logp)):
        xs = [logp[i, t] - float(old_logp[i, t]) for t in range(logp.shape[1]) if mask[i, t]]
        if xs:
            s = torch.exp(sum(xs) / len(xs))
            a = float(advantages[i])
            total = total - torch.minimum(s * a, torch.clamp(s, 1 - 3e-4, 1 + 4e-4) * a)
            n += 1
    return total / n


def preset_gmpo_definition(logp, old_logp, advantages, mask):
    """GMPO: sgn(A) min(sgn(A) log r_t, sgn(A) clip(log r_t, -0.4, 0.4)) per token, then exp(mean) * A."""
    logp = logp.double()
    total, n = 0.0, 0
    for i in range(len(logp)):
        a = float(advantages[i])
        sign = 1.0 if a >= 0 else -1.0
        xs = [logp[i, t] - float(old_logp[i, t]) for t in range(logp.shape[1]) if mask[i, t]]
        if xs:
            clipped = [sign * torch.minimum(sign * x, sign * torch.clamp(x, -0.4, 0.4)) for x in xs]
            total = total - a * torch.exp(sum(clipped) / len(clipped))
            n += 1
    return total / n


def preset_holderpo_definition(logp, old_logp, advantages, mask, iteration, total_iterations):
    """HölderPO: p linear from 1 to -1 over the run, sequence clip 0.2 of the Hölder mean."""
    p = 1.0 - 2.0 * iteration / (total_iterations - 1)
    return ref_holder_loss(logp, old_logp, advantages, mask, p, 0.2, 0.2, "sequence")


def preset_ppo_definition(logp, old_logp, advantages, mask):
    """PPO: mean over all masked tokens of the clipped objective (clip 0.2)."""
    tokens = [loss for row in ref_ppo_token_losses(logp, old_logp, advantages, mask, 0.2, 0.2) for loss in row]
    return sum(tokens) / len(tokens)


def preset_grpo_verl_definition(logp, old_logp, advantages, mask):
    """verl's GRPO: token-mean of the clipped objective, the loss of A < 0 tokens also capped at -3 A."""
    rows = ref_ppo_token_losses(logp, old_logp, advantages, mask, 0.2, 0.2)
    tokens = [
        torch.minimum(loss, torch.tensor(-3.0 * float(advantages[i]))) if advantages[i] < 0 else loss
        for i, row in enumerate(rows)
        for loss in row
    ]
    return sum(tokens) / len(tokens)


def preset_drgrpo_definition(logp, old_logp, advantages, mask):
    """Dr.GRPO: mean over sequences of the token sum of the clipped objective over a constant (here T)."""
    rows = [row for row in ref_ppo_token_losses(logp, old_logp, advantages, mask, 0.2, 0.2) if row]
    return sum(sum(row) / logp.shape[1] for row in rows) / len(rows)


def preset_holderpo_token_definition(logp, old_logp, advantages, mask, iteration, total_iterations):
    """HölderPO, Eq. 11: p linear from 1 to -1, each token ratio clipped at 0.2, then the Hölder mean."""
    p = 1.0 - 2.0 * iteration / (total_iterations - 1)
    return ref_holder_loss(logp, old_logp, advantages, mask, p, 0.2, 0.2, "token")


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("spread", [0.3, 3e-4], ids=["ratios-spread", "ratios-within-gspo-clip"])
def test_each_preset_matches_its_own_definition(name, spread):
    logp, old_logp, advantages, mask = make_batch(seed=20, lengths=(1, 6, 20, 0, 33), extreme=False)
    logp = old_logp + spread / 0.3 * (logp - old_logp)
    iteration, total = 40, 150
    preset = get_preset(name)
    p = preset.schedule(iteration, total)
    lp = leaf(logp)
    loss, _ = preset.loss(lp, old_logp, advantages, mask, p)
    loss.backward()
    ref_lp = leaf(logp.double())
    definitions = {
        "grpo": lambda: preset_grpo_definition(ref_lp, old_logp, advantages, mask),
        "gspo": lambda: preset_gspo_definition(ref_lp, old_logp, advantages, mask),
        "gmpo": lambda: preset_gmpo_definition(ref_lp, old_logp, advantages, mask),
        "holderpo": lambda: preset_holderpo_definition(ref_lp, old_logp, advantages, mask, iteration, total),
        "ppo": lambda: preset_ppo_definition(ref_lp, old_logp, advantages, mask),
        "grpo_verl": lambda: preset_grpo_verl_definition(ref_lp, old_logp, advantages, mask),
        "drgrpo": lambda: preset_drgrpo_definition(ref_lp, old_logp, advantages, mask),
        "holderpo_token": lambda: preset_holderpo_token_definition(
            ref_lp, old_logp, advantages, mask, iteration, total
        ),
    }
    want = definitions[name]()
    want.backward()
    assert math.isclose(loss.item(), float(want.detach()), rel_tol=1e-5, abs_tol=1e-7)
    assert torch.allclose(lp.grad.double(), ref_lp.grad, rtol=1e-4, atol=1e-7)


def test_presets_differ_from_each_other():
    # guards the definition test against presets that all collapse to one objective
    logp, old_logp, advantages, mask = make_batch(seed=21, lengths=(5, 9, 14), extreme=False)
    losses = {
        name: float(preset.loss(logp, old_logp, advantages, mask, preset.schedule(100, 150))[0])
        for name, preset in PRESETS.items()
    }
    # grpo_verl is ppo plus the dual clip, which binds only on ratios above 3 (none here);
    # test_recipe_presets.py::test_grpo_verl_is_token_mean_with_dual_clip_3 tells them apart
    assert losses.pop("grpo_verl") == losses["ppo"]
    assert len({round(v, 6) for v in losses.values()}) == len(losses), losses


def test_grpo_preset_equals_seq_mean_token_mean_ppo():
    # float64: the two paths sum in different orders (in float32 3e-7 apart, a third of rtol)
    logp, old_logp, advantages, mask = make_batch(seed=22, extreme=False, dtype=torch.float64)
    grpo, _ = get_preset("grpo").loss(logp, old_logp, advantages, mask, 1.0)
    ppo, _ = ppo_token_loss(logp, old_logp, advantages, mask, aggregation="seq-mean-token-mean")
    assert torch.allclose(grpo, ppo, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_one_optimizer_step_changes_every_parameter(name):
    torch.manual_seed(0)
    vocab, hidden, batch, length = 11, 8, 6, 9
    model = torch.nn.Linear(hidden, vocab)
    features = torch.randn(batch, length, hidden)
    tokens = torch.randint(vocab, (batch, length))
    mask = torch.rand(batch, length) < 0.8
    mask[:, 0] = True
    advantages = torch.tensor([1.0, -0.5, 2.0, -1.5, 0.7, -0.2])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    logp = torch.log_softmax(model(features), -1).gather(-1, tokens[..., None]).squeeze(-1)
    preset = get_preset(name)
    loss, _ = preset.loss(logp, logp.detach(), advantages, mask, preset.schedule(0, 10))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    for n, p in model.named_parameters():
        assert not torch.equal(p, before[n]), f"Parameter {n} has not changed"


# --------------------------------------------------------- PPO loss and aggregation


def ref_aggregate(rows: list[list], mode: str, constant: float):
    rows = [row for row in rows if row]
    if mode == "token-mean":
        tokens = [v for row in rows for v in row]
        return sum(tokens) / len(tokens)
    per_row = {
        "seq-mean-token-mean": lambda row: sum(row) / len(row),
        "seq-mean-token-sum": lambda row: sum(row),
        "seq-mean-token-sum-norm": lambda row: sum(row) / constant,
    }[mode]
    return sum(per_row(row) for row in rows) / len(rows)


@pytest.mark.parametrize("mode", sorted(AGGREGATIONS))
def test_ppo_token_loss_matches_loop_for_each_aggregation(mode):
    logp, old_logp, advantages, mask = make_batch(seed=23, lengths=(1, 4, 0, 30, 12), extreme=False)
    lp = leaf(logp)
    loss, metrics = ppo_token_loss(lp, old_logp, advantages, mask, 0.1, 0.25, aggregation=mode)
    loss.backward()
    ref_lp = leaf(logp.double())
    want = ref_aggregate(ref_ppo_token_losses(ref_lp, old_logp, advantages, mask, 0.1, 0.25), mode, logp.shape[1])
    want.backward()
    assert math.isclose(loss.item(), float(want.detach()), rel_tol=1e-5)
    assert torch.allclose(lp.grad.double(), ref_lp.grad, rtol=1e-4, atol=1e-7)
    rs = [math.exp(x) for i in range(len(mask)) for x in masked_values((logp - old_logp)[i], mask[i])]
    assert math.isclose(float(metrics["ratio_mean"]), sum(rs) / len(rs), rel_tol=1e-5)
    assert math.isclose(float(metrics["ratio_max"]), max(rs), rel_tol=1e-5)
    assert math.isclose(float(metrics["ratio_min"]), min(rs), rel_tol=1e-5)


def test_aggregate_constant_and_errors():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    expected = {
        "token-mean": 10 / 4,
        "seq-mean-token-mean": (2 + 4) / 2,
        "seq-mean-token-sum": (6 + 4) / 2,
        "seq-mean-token-sum-norm": (6 / 3 + 4 / 3) / 2,  # constant defaults to T = 3
    }
    for mode, value in expected.items():
        assert float(aggregate(per_token, mask, mode)) == pytest.approx(value, rel=1e-6), mode
    assert float(aggregate(per_token, mask, "seq-mean-token-sum-norm", constant=10)) == pytest.approx(0.5)
    assert aggregate(per_token, torch.zeros_like(mask), "seq-mean-token-mean") == 0
    with pytest.raises(ValueError, match=r"expected an aggregation in \[.*'token-mean'\], got 'sum'"):
        aggregate(per_token, mask, "sum")
    with pytest.raises(ValueError, match="expected constant > 0"):
        aggregate(per_token, mask, "seq-mean-token-sum-norm", constant=0)


def test_input_validation_messages():
    logp, old_logp, advantages, mask = make_batch(seed=24, lengths=(3, 4))
    with pytest.raises(ValueError, match=r"expected \(B, T\) tensors of one shape"):
        holder_policy_loss(logp, old_logp[:, :-1], advantages, mask, 1.0)
    with pytest.raises(ValueError, match=r"expected advantages of shape \(2,\)"):
        holder_policy_loss(logp, old_logp, advantages[:, None].expand(2, 3), mask, 1.0)
    with pytest.raises(ValueError, match=r"expected weights of shape \(2,\)"):
        holder_policy_loss(logp, old_logp, advantages, mask, 1.0, weights=torch.ones(3))
    with pytest.raises(ValueError, match=r"expected clip in \('sequence', 'token'\), got 'tokens'"):
        holder_policy_loss(logp, old_logp, advantages, mask, 1.0, clip="tokens")
    with pytest.raises(ValueError, match="expected clip_low >= 0"):
        holder_policy_loss(logp, old_logp, advantages, mask, 1.0, clip_low=-0.1)
    with pytest.raises(ValueError, match="expected clip_low <= 1"):
        holder_policy_loss(logp, old_logp, advantages, mask, 1.0, clip_low=1.5)
    holder_policy_loss(logp, old_logp, advantages, mask, 1.0, clip_low=1.5, log_space_clip=True)  # fine in log space
    with pytest.raises(ValueError, match="expected a finite exponent p, got nan"):
        log_holder_mean(logp - old_logp, mask, math.nan)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_total_loss_is_the_presets_loss_plus_kl_minus_entropy(name):
    """The one function an update calls: the preset's loss with the config's clip ranges, the KL
    penalty and the entropy bonus, each a masked token mean, and metrics under "loss/"."""
    gen = torch.Generator().manual_seed(3)
    logp = -torch.rand(3, 5, generator=gen, dtype=torch.float64)
    old_logp = logp + 0.1 * torch.randn(3, 5, generator=gen, dtype=torch.float64)
    ref_logp = logp + 0.2 * torch.randn(3, 5, generator=gen, dtype=torch.float64)
    entropy = torch.rand(3, 5, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 1, 0]], dtype=torch.bool)
    advantages, weights = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64), torch.tensor([1.0, 2.0, 0.5])
    preset = get_preset(name)
    policy, _ = preset.loss(logp, old_logp, advantages, mask, 0.5, weights=weights, clip_low=0.1, clip_high=0.3)
    kl = masked_mean(kl_penalty(logp, ref_logp, mask, "k3"), mask)
    want = policy + 0.05 * kl - 0.01 * masked_mean(entropy, mask)
    got, metrics = total_loss(
        preset,
        logp,
        old_logp,
        advantages,
        mask,
        0.5,
        weights=weights,
        clip_low=0.1,
        clip_high=0.3,
        ref_logp=ref_logp,
        kl_coef=0.05,
        kl_estimator="k3",
        entropy=entropy,
        entropy_coef=0.01,
    )
    assert torch.equal(got, want)  # the same operations in the same order
    assert torch.equal(metrics["loss/policy"], policy) and torch.equal(metrics["loss/kl"], kl)
    alone, alone_metrics = total_loss(
        preset, logp, old_logp, advantages, mask, 0.5, weights=weights, clip_low=0.1, clip_high=0.3
    )
    assert torch.equal(alone, policy) and "loss/kl" not in alone_metrics and "loss/entropy" not in alone_metrics
    if preset.aggregation is None:  # the config's clip ranges reach the loss
        tight, _ = preset.loss(logp, old_logp, advantages, mask, 0.5, weights=weights, clip_low=1e-4, clip_high=1e-4)
        assert not torch.equal(tight, policy)


@pytest.mark.parametrize("name", ["holderpo", "holderpo_token", "grpo_verl", "drgrpo", "ppo"])
def test_micro_batch_parts_add_up_to_the_batch_loss(name):
    """Cut a batch into micro-batches of unequal sizes, weights and token counts: with their
    shares of the batch's `policy_measure` and loss tokens, their losses sum to the batch's
    (policy loss, KL and entropy terms alike), so an update does not depend on how it is cut."""
    gen = torch.Generator().manual_seed(3)
    logp = -torch.rand(5, 6, generator=gen, dtype=torch.float64) * 3
    old_logp = logp + 0.2 * torch.randn(5, 6, generator=gen, dtype=torch.float64)
    ref_logp = logp + 0.3 * torch.randn(5, 6, generator=gen, dtype=torch.float64)
    entropy = torch.rand(5, 6, generator=gen, dtype=torch.float64)
    mask = torch.rand(5, 6, generator=gen) > 0.3
    advantages = torch.tensor([1.0, -0.5, 2.0, 0.3, -1.2], dtype=torch.float64)
    weights = torch.tensor([1.0, 2.0, 0.5, 1.0, 1.5], dtype=torch.float64)
    preset = get_preset(name)
    options = {"ref_logp": ref_logp, "kl_coef": 0.05, "entropy": entropy, "entropy_coef": 0.01}

    def loss(rows, **shares):
        take = {key: value[rows] if isinstance(value, torch.Tensor) else value for key, value in options.items()}
        return total_loss(
            preset,
            logp[rows],
            old_logp[rows],
            advantages[rows],
            mask[rows],
            0.5,
            weights=weights[rows],
            **take,
            **shares,
        )[0]

    measures = [policy_measure(preset, float(w), int(m.sum())) for w, m in zip(weights, mask)]
    whole = loss([0, 1, 2, 3, 4])
    parts = [[0, 3], [1], [2, 4]]
    total_tokens = int(mask.sum())
    summed = sum(
        loss(
            rows,
            policy_share=sum(measures[i] for i in rows) / sum(measures),
            token_share=int(mask[rows].sum()) / total_tokens,
        )
        for rows in parts
    )
    assert float(summed) == pytest.approx(float(whole), rel=1e-12)
    by_samples = sum(loss(rows) * len(rows) / 5 for rows in parts)  # a plain average of the parts
    assert float(by_samples) != pytest.approx(float(whole), rel=1e-6)


def test_exponent_diagnostics_measure_what_p_can_change():
    # row 0: two tokens with log-ratios +-0.5, where rho_2 and rho_-2 are exp(+-log(cosh 1) / 2);
    # row 1: one token, where every p gives the same rho; row 2: no token, left out of the means
    log_ratio = torch.tensor([[0.5, -0.5], [0.0, 0.3], [0.7, 0.7]], dtype=torch.float64)
    mask = torch.tensor([[True, True], [False, True], [False, False]])
    got = exponent_diagnostics(log_ratio, mask)
    half_log_cosh = math.log(math.cosh(1.0)) / 2
    assert float(got["spread"]) == pytest.approx((2 * half_log_cosh + 0.0) / 2, rel=1e-12)
    assert float(got["rho_p=2"]) == pytest.approx((math.exp(half_log_cosh) + math.exp(0.3)) / 2, rel=1e-12)
    assert float(got["rho_p=-2"]) == pytest.approx((math.exp(-half_log_cosh) + math.exp(0.3)) / 2, rel=1e-12)
    assert float(got["rho_p=0"]) == pytest.approx((1.0 + math.exp(0.3)) / 2, rel=1e-12)
    assert float(got["tokens"]) == 1.5 and float(got["log_tokens"]) == pytest.approx(math.log(2) / 2)
    assert set(got) == {"rho_p=-2", "rho_p=-1", "rho_p=0", "rho_p=1", "rho_p=2", "spread", "tokens", "log_tokens"}


def test_the_exponent_cannot_matter_on_one_token_or_equal_ratios():
    equal = torch.full((2, 5), 0.2)
    single = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.9]])
    everywhere = torch.ones(2, 5, dtype=torch.bool)
    assert float(exponent_diagnostics(equal, everywhere)["spread"]) == pytest.approx(0, abs=1e-6)
    assert float(exponent_diagnostics(single, single != 0)["spread"]) == 0.0
