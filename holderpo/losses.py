"""Policy losses built on the Hölder (power) mean of a sample's token ratios.

HölderPO (arXiv 2605.12058) aggregates the ratios r_t = pi_theta(y_t) / pi_old(y_t) of the T
masked tokens of one sample into one sequence ratio, the Hölder mean

    rho_p = ((1/T) sum_t r_t^p)^(1/p),        rho_0 = exp((1/T) sum_t log r_t),

and clips it as PPO clips a ratio. p = 1 is the arithmetic mean (GRPO), p = 0 the geometric
mean (GSPO, GMPO), p -> +inf the largest ratio and p -> -inf the smallest. Its gradient is

    grad rho_p = rho_p * sum_t W_t grad log pi_theta(y_t),     W_t = r_t^p / sum_k r_k^p,

so large p puts the update on the tokens whose ratio grew most and small or negative p spreads
it evenly and bounds its variance; HölderPO anneals p over the run (see holderpo.schedules).

Public API: `log_holder_mean`, `holder_weights`, `holder_policy_loss`, `ppo_token_loss`,
`aggregate`, and the presets `PRESETS` / `get_preset` / `configure_preset` (grpo, grpo_verl,
drgrpo, gspo, gmpo, holderpo, holderpo_token, ppo).
Losses return (loss, metrics): metrics are detached 0-dim tensors; nothing here syncs with
.item(), so the caller decides when to move numbers to the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor

from holderpo.kl import kl_penalty, masked_mean
from holderpo.schedules import PSchedule, make_schedule

__all__ = [
    "AGGREGATIONS",
    "CLIP_MODES",
    "LossPreset",
    "PRESETS",
    "aggregate",
    "configure_preset",
    "exponent_diagnostics",
    "get_preset",
    "holder_policy_loss",
    "holder_weights",
    "log_holder_mean",
    "ppo_token_loss",
]

CLIP_MODES = ("sequence", "token")
"""Where the clip acts: on the aggregated ratio rho_p, or on each token ratio before the mean."""

_SMALL_P = 0.1
# Below |p| = 0.1, log((1/T) sum exp(z)) is computed as log1p((1/T) sum expm1(z)): the plain
# form returns log T + O(p) and loses eps * log T / |p| to cancellation (1e-3 at p = 1e-4 in
# float32), while expm1 keeps each term's small deviation from 1. Above it the plain form is
# the more accurate one (expm1 rounds tokens with r_t^p << max_k r_k^p to -1). Measured in
# float32 against float64, both forms stay within ~5e-6 in log rho on ratios from 1e-8 to 1e8.


def _exponent(p: float | Tensor) -> float:
    # p is a scalar hyperparameter (no gradient flows to it): read it once as a Python float
    # so that the accurate formula can be chosen without computing both.
    value = float(p)
    if not math.isfinite(value):
        raise ValueError(f"expected a finite exponent p, got {value}; check the p schedule")
    return value


def _check_token_shapes(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != 2 or any(shape != first for shape in shapes.values()):
        raise ValueError(f"expected (B, T) tensors of one shape, got {shapes}; pad every row to one length T")


def _check_per_sample(batch: int, **tensors: Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and tuple(t.shape) != (batch,):
            raise ValueError(f"expected {name} of shape ({batch},), one value per sample, got {tuple(t.shape)}")


def _weight_logits(log_ratio: Tensor, mask: Tensor, p: float) -> Tensor:
    # (B, T) log r_t^p, -inf at masked-out tokens: W = softmax(logits) over the last dimension.
    return torch.where(mask, p * log_ratio, -math.inf)


class _HolderMean(NamedTuple):
    log_mean: Tensor  # (B,) log rho_p, differentiable
    weight_entropy: Tensor  # (B,) -sum_t W_t log W_t, no gradient
    weight_max: Tensor  # (B,) max_t W_t, no gradient


def _holder_mean(x: Tensor, mask: Tensor, count: Tensor, p: float) -> _HolderMean:
    # x: (B, T) float32 or wider with 0 at masked-out tokens; mask: (B, T) bool; count: (B,).
    # log rho_p = (1/p) log((1/T) sum_t exp(p x_t)) is evaluated shifted by s = max_t p x_t, as
    # (s + log((1/T) sum_t exp(z_t))) / p with z_t = p x_t - s <= 0, so no exp can overflow.
    denominator = count.clamp_min(1)  # a fully masked row sums to 0 and divides by 1
    if p == 0.0:
        log_count = denominator.log()  # W_t = 1/T: entropy log T, max 1/T
        return _HolderMean(x.sum(-1) / denominator, log_count, torch.exp(-log_count))
    logits = _weight_logits(x, mask, p)  # (B, T)
    # The result does not depend on the shift, so it needs no gradient; a fully masked row's
    # max is -inf, replaced by 0 so that its terms stay exp(-inf) = 0 and not NaN.
    shift = logits.detach().amax(-1)
    shift = torch.where(count > 0, shift, 0)  # (B,)
    z = logits - shift[:, None]  # (B, T), <= 0 where masked in, -inf where masked out
    if abs(p) < _SMALL_P:
        terms = torch.where(mask, torch.expm1(z), 0)  # exp(z_t) - 1
        log_mean_exp = torch.log1p(terms.sum(-1) / denominator)
        with torch.no_grad():
            exp_x_sum = (terms * x).sum(-1) + x.sum(-1)  # sum_t exp(z_t) x_t
    else:
        terms = torch.exp(z)
        # The max term is exp(0) = 1, so rows with tokens sum to >= 1; an empty row's sum of
        # 0 becomes 1 so that it gives log 1 = 0 instead of -inf.
        log_mean_exp = torch.log((terms.sum(-1) + (count == 0)) / denominator)
        with torch.no_grad():
            exp_x_sum = (terms * x).sum(-1)
    with torch.no_grad():
        # W_t = exp(z_t - log_sum): its max is exp(-log_sum) (the max z_t is 0), and
        # -sum_t W_t log W_t = log_sum + s - p sum_t W_t x_t; both reuse the terms above.
        log_sum = denominator.log() + log_mean_exp
        weight_max = torch.exp(-log_sum)
        weight_entropy = log_sum + shift - p * exp_x_sum * weight_max
    return _HolderMean((shift + log_mean_exp) / p, weight_entropy, weight_max)


def log_holder_mean(log_ratio: Tensor, mask: Tensor, p: float | Tensor) -> Tensor:
    """Per-sample log of the Hölder mean of the masked token ratios.

    log rho_p = (1/p) log((1/T) sum_t exp(p x_t)) with x_t = log r_t over the T masked tokens,
    and the mean of x_t at p = 0 (the geometric mean, exactly). It is evaluated shifted by
    s = max_t p x_t, as (s + log((1/T) sum_t exp(p x_t - s))) / p, so no exp overflows for any
    p, and with log1p/expm1 for |p| < 0.1, where the plain form would cancel catastrophically.
    Large |p| tends to log max_t r_t (p -> +inf) or log min_t r_t (p -> -inf).

    Args:
        log_ratio: (B, T) x_t = log pi_theta(y_t) - log pi_old(y_t), any float dtype.
        mask: (B, T) bool or 0/1, true for the tokens in the mean.
        p: the exponent, a float or a 0-dim tensor (read as a float; no gradient flows to it).

    Returns:
        (B,) log rho_p, float32 for float32/bf16/fp16 input (float64 for float64); the gradient
        with respect to x_t is W_t = r_t^p / sum_k r_k^p. A fully masked row gives 0 (rho = 1).
    """
    _check_token_shapes(log_ratio=log_ratio, mask=mask)
    p = _exponent(p)
    mask = mask.bool()
    x = torch.where(mask, log_ratio.to(torch.promote_types(log_ratio.dtype, torch.float32)), 0)
    return _holder_mean(x, mask, mask.sum(-1), p).log_mean


def holder_weights(log_ratio: Tensor, mask: Tensor, p: float | Tensor) -> Tensor:
    """The gradient weights of the Hölder mean, W_t = r_t^p / sum_k r_k^p (softmax of p x_t).

    Args:
        log_ratio: (B, T) x_t = log r_t, any float dtype.
        mask: (B, T) bool or 0/1.
        p: the exponent, a float or a 0-dim tensor.

    Returns:
        (B, T) weights in float32 or wider, summing to 1 over each row's masked tokens and 0
        elsewhere (a fully masked row is all 0). grad rho_p = rho_p * sum_t W_t grad x_t.
    """
    _check_token_shapes(log_ratio=log_ratio, mask=mask)
    x = log_ratio.to(torch.promote_types(log_ratio.dtype, torch.float32))
    mask = mask.bool()
    # softmax of an all -inf row is NaN; `where` turns it (and every masked-out token) into 0.
    return torch.where(mask, torch.softmax(_weight_logits(x, mask, _exponent(p)), dim=-1), 0)


PROBE_EXPONENTS = (-2.0, -1.0, 0.0, 1.0, 2.0)
"""The exponents `exponent_diagnostics` evaluates every batch at, whatever p the run uses."""


@torch.no_grad()
def exponent_diagnostics(
    log_ratio: Tensor, mask: Tensor, exponents: Sequence[float] = PROBE_EXPONENTS
) -> dict[str, Tensor]:
    """What the choice of p could change on a batch: the Hölder-mean ratio at each probe exponent.

    A sample's rho_p rises with p from its smallest token ratio to its largest, so p can only
    matter where a sample's ratios differ, which takes at least two tokens. `spread` says by how
    much: 0 when every sample has one token (or equal ratios), and the larger the more the
    exponent moves the objective. Over samples with at least one masked-in token:

        rho_p=<p>   mean rho_p, for each p in `exponents`
        spread      mean of log rho_max(p) - log rho_min(p)
        tokens      mean number of masked-in tokens T
        log_tokens  mean log T: the largest entropy the gradient weights W_t can have (uniform)

    Args:
        log_ratio: (B, T) x_t = log r_t, any float dtype.
        mask: (B, T) bool or 0/1.
        exponents: the p values to evaluate.
    """
    _check_token_shapes(log_ratio=log_ratio, mask=mask)
    mask = mask.bool()
    count = mask.sum(-1)
    valid = count > 0
    n_samples = valid.sum().clamp_min(1)
    logs = {p: log_holder_mean(log_ratio, mask, p) for p in exponents}

    def mean(values: Tensor) -> Tensor:
        return torch.where(valid, values, 0).sum() / n_samples

    low, high = logs[min(exponents)], logs[max(exponents)]
    return {
        **{f"rho_p={p:g}": mean(torch.exp(log)) for p, log in logs.items()},
        "spread": mean(high - low),
        "tokens": mean(count.to(low.dtype)),
        "log_tokens": mean(count.clamp_min(1).to(low.dtype).log()),
    }


def _clip_bounds(clip_low: float, clip_high: float, log_space: bool) -> tuple[float, float]:
    # Bounds on log r: PPO's [1 - low, 1 + high] on r, or GMPO's [-low, high] on log r itself.
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"expected clip_low >= 0 and clip_high >= 0, got {clip_low} and {clip_high}")
    if log_space:
        return -clip_low, clip_high
    if clip_low > 1:
        raise ValueError(
            f"expected clip_low <= 1 (the ratio's lower bound is 1 - clip_low > 0), got {clip_low}; "
            "use log_space_clip=True to clip log r to [-clip_low, clip_high]"
        )
    return math.log1p(-clip_low), math.log1p(clip_high)


def _pessimistic_clip(
    log_ratio: Tensor, advantages: Tensor, lower: float, upper: float, negative_cap: float = math.inf
) -> Tensor:
    # PPO's min(A r, A clip(r)) = A * r~ with r~ = min(r, e^upper) for A >= 0 and
    # max(r, e^lower) for A < 0: the clip only ever lowers the objective. On log r it is one
    # clamp pass (bounds broadcast from the advantages' shape), and A * exp(r~) stays finite
    # for A = 0 however large r is (0 * inf would be NaN). negative_cap = log c is the dual
    # clip's bound for A < 0: r~ = min(max(r, e^lower), c), so a huge ratio cannot make a
    # negative-advantage loss unbounded.
    positive = advantages >= 0
    inf = log_ratio.new_tensor(math.inf)
    upper_bound = torch.where(positive, log_ratio.new_tensor(upper), log_ratio.new_tensor(negative_cap))
    lower_bound = torch.where(positive, -inf, log_ratio.new_tensor(lower))
    return torch.clamp(log_ratio, lower_bound, upper_bound)


def _masked_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    # (B, T) log r_t in float32 or wider (a bf16 difference would lose most of its digits), 0
    # where masked out so that garbage there cannot reach any forward or backward value.
    dtype = torch.promote_types(torch.promote_types(logp.dtype, old_logp.dtype), torch.float32)
    return torch.where(mask, logp.to(dtype) - old_logp.to(dtype), 0)


def _ratio_stats(log_ratio: Tensor, ratio_minus_1: Tensor, valid: Tensor, n_valid: Tensor) -> dict[str, Tensor]:
    # Mean, min and max of exp(log_ratio) over the valid entries, where log_ratio is 0 (and
    # ratio_minus_1 = expm1(log_ratio) is 0) elsewhere; an empty batch reports 1 throughout.
    smallest = torch.where(valid, log_ratio, math.inf).amin()
    largest = torch.where(valid, log_ratio, -math.inf).amax()
    return {
        "ratio_mean": 1 + ratio_minus_1.sum() / n_valid,
        "ratio_min": torch.exp(smallest.nan_to_num(posinf=0.0)),
        "ratio_max": torch.exp(largest.nan_to_num(neginf=0.0)),
    }


def _approx_kl(log_ratio: Tensor, ratio_minus_1: Tensor, n_tokens: Tensor) -> Tensor:
    # k3 = (r - 1) - log r, the unbiased low-variance estimate of KL(pi_old || pi_theta) over
    # tokens sampled by pi_old; unclamped (unlike the penalty in holderpo.kl): a diagnostic
    # should show a blow-up. Masked-out tokens hold log r = 0 and add 0.
    return (ratio_minus_1 - log_ratio).sum() / n_tokens


def holder_policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    p: float | Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip: str = "sequence",
    *,
    weights: Tensor | None = None,
    log_space_clip: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """HölderPO's clipped objective over the Hölder mean of each sample's token ratios.

    clip="sequence" (the paper's main objective) clips the aggregated ratio:
        J_i = min(rho_i A_i, clip(rho_i, 1 - clip_low, 1 + clip_high) A_i),   rho_i = rho_p(r_i1..r_iT)
    clip="token" clips each token ratio pessimistically first, then aggregates:
        r~_t = min(r_t, 1 + clip_high) if A_i >= 0 else max(r_t, 1 - clip_low),   J_i = rho_p(r~_i1..r~_iT) A_i
    With log_space_clip=True the clip acts on log r (GMPO): log r clipped to [-clip_low, clip_high].
    loss = -sum_i w_i J_i / sum_i w_i over the samples with at least one masked-in token.

    Args:
        logp: (B, T) log pi_theta of the sampled tokens (carries the gradient), any float dtype.
        old_logp: (B, T) log pi_old of the same tokens (from rollout).
        advantages: (B,) one advantage per sample.
        mask: (B, T) bool or 0/1, true for the tokens the objective covers.
        p: the Hölder exponent (a float or 0-dim tensor), e.g. schedule(iteration, total).
        clip_low: lower clip range (ratio 1 - clip_low, or log r >= -clip_low in log space).
        clip_high: upper clip range (ratio 1 + clip_high, or log r <= clip_high in log space).
        clip: "sequence" or "token" (CLIP_MODES).
        weights: optional (B,) non-negative per-sample weights; default all 1.
        log_space_clip: clip log r to [-clip_low, clip_high] instead of r to [1 - clip_low, 1 + clip_high].

    Returns:
        loss: 0-dim float32 (float64 for float64 inputs).
        metrics: detached 0-dim tensors, over samples with tokens (tokens for the token clip):
            clip_frac       fraction of samples (sequence clip) or masked tokens (token clip) clipped
            ratio_mean, ratio_min, ratio_max   the sequence ratio rho_p entering the objective
                            (before the sequence clip; of the clipped tokens with the token clip)
            approx_kl       masked token mean of k3 = r - 1 - log r (unclamped), KL(pi_old || pi_theta)
            weight_entropy  mean entropy of W_t = r_t^p / sum_k r_k^p (log T when uniform)
            weight_max      mean of max_t W_t (1 when one token takes the whole gradient)
    """
    _check_token_shapes(logp=logp, old_logp=old_logp, mask=mask)
    _check_per_sample(logp.shape[0], advantages=advantages, weights=weights)
    if clip not in CLIP_MODES:
        raise ValueError(f"expected clip in {CLIP_MODES}, got {clip!r}")
    p = _exponent(p)
    lower, upper = _clip_bounds(clip_low, clip_high, log_space_clip)
    mask = mask.bool()
    count = mask.sum(-1)  # (B,) tokens per sample
    valid = count > 0  # (B,) samples with at least one token
    x = _masked_log_ratio(logp, old_logp, mask)  # (B, T)
    adv = advantages.to(x.dtype)  # (B,)

    n_samples = valid.sum().clamp_min(1)
    n_tokens = count.sum().clamp_min(1)

    if clip == "token":
        # Clipping leaves masked-out zeros at 0 (the bounds bracket 0), as _holder_mean needs.
        clipped = _pessimistic_clip(x, adv[:, None], lower, upper)  # (B, T)
        holder = _holder_mean(clipped, mask, count, p)
        objective_log_ratio = holder.log_mean  # (B,)
        was_clipped, n_clippable = clipped != x, n_tokens
    else:
        holder = _holder_mean(x, mask, count, p)
        objective_log_ratio = _pessimistic_clip(holder.log_mean, adv, lower, upper)  # (B,)
        was_clipped, n_clippable = objective_log_ratio != holder.log_mean, n_samples
    objective = adv * torch.exp(objective_log_ratio)  # (B,) J_i

    sample_weights = valid.to(x.dtype) if weights is None else torch.where(valid, weights.to(x.dtype), 0)
    total_weight = sample_weights.sum()
    # An all-empty (or all-zero-weight) batch gives loss 0, not 0/0.
    loss = -(sample_weights * objective).sum() / torch.where(total_weight > 0, total_weight, 1)

    with torch.no_grad():
        log_rho = holder.log_mean.detach()
        metrics = {
            "clip_frac": torch.count_nonzero(was_clipped) / n_clippable,
            **_ratio_stats(log_rho, torch.expm1(log_rho), valid, n_samples),
            "approx_kl": _approx_kl(x, torch.expm1(x), n_tokens),
            "weight_entropy": torch.where(valid, holder.weight_entropy, 0).sum() / n_samples,
            "weight_max": torch.where(valid, holder.weight_max, 0).sum() / n_samples,
        }
    return loss, metrics


def _token_mean(per_token: Tensor, mask: Tensor, constant: float | None) -> Tensor:
    return masked_mean(per_token, mask)


def _seq_mean(per_sequence: Tensor, mask: Tensor) -> Tensor:
    # Mean over the sequences with at least one token: empty rows neither add nor dilute.
    return masked_mean(per_sequence, mask.any(-1))


def _seq_mean_token_mean(per_token: Tensor, mask: Tensor, constant: float | None) -> Tensor:
    return _seq_mean(masked_mean(per_token, mask, dim=-1), mask)


def _seq_mean_token_sum(per_token: Tensor, mask: Tensor, constant: float | None) -> Tensor:
    return _seq_mean(torch.where(mask, per_token, 0).sum(-1), mask)


def _seq_mean_token_sum_norm(per_token: Tensor, mask: Tensor, constant: float | None) -> Tensor:
    # Dr.GRPO: divide each sequence's token sum by one constant (default: the padded length T)
    # instead of its own length, which would favour long wrong answers and short right ones.
    constant = mask.shape[-1] if constant is None else constant
    return _seq_mean(torch.where(mask, per_token, 0).sum(-1) / constant, mask)


AGGREGATIONS: dict[str, Callable[[Tensor, Tensor, float | None], Tensor]] = {
    "token-mean": _token_mean,
    "seq-mean-token-mean": _seq_mean_token_mean,
    "seq-mean-token-sum": _seq_mean_token_sum,
    "seq-mean-token-sum-norm": _seq_mean_token_sum_norm,
}
"""Reduction name -> function(per_token (B, T), mask (B, T), constant) -> 0-dim loss."""


def aggregate(per_token: Tensor, mask: Tensor, mode: str = "token-mean", *, constant: float | None = None) -> Tensor:
    """Reduce a (B, T) per-token loss to a scalar, like verl's agg_loss.

    Modes (AGGREGATIONS):
        token-mean               sum_{i,t} l_it / (number of masked tokens)        (PPO, DAPO)
        seq-mean-token-mean      mean_i (sum_t l_it / T_i)                         (GRPO)
        seq-mean-token-sum       mean_i sum_t l_it
        seq-mean-token-sum-norm  mean_i (sum_t l_it / constant), constant = T      (Dr.GRPO)
    Sequence means run over the rows with at least one masked-in token.

    Args:
        per_token: (B, T) per-token loss; masked-out entries may hold anything.
        mask: (B, T) bool or 0/1.
        mode: one of AGGREGATIONS.
        constant: the divisor of "seq-mean-token-sum-norm"; default the padded length T.

    Returns:
        0-dim loss; 0 when no token is masked in.
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"expected an aggregation in {sorted(AGGREGATIONS)}, got {mode!r}")
    if constant is not None and not constant > 0:
        raise ValueError(f"expected constant > 0 (e.g. the maximum response length), got {constant}")
    _check_token_shapes(per_token=per_token, mask=mask)
    return AGGREGATIONS[mode](per_token, mask.bool(), constant)


def ppo_token_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    aggregation: str = "token-mean",
    *,
    constant: float | None = None,
    dual_clip: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The token-level PPO clipped loss, optionally with verl's dual clip.

    l_it = -min(r_it A_i, clip(r_it, 1 - clip_low, 1 + clip_high) A_i), reduced by `aggregate`.
    With dual_clip = c (verl's clip_ratio_c, 3 by default there), a negative advantage's loss is
    also bounded by -c A_i, as verl's compute_policy_loss does:

        l1 = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))
        l_it = min(-A c, l1) if A < 0 else l1

    i.e. the ratio is capped at c for A < 0, where a ratio far above 1 would otherwise give an
    unbounded loss (and no gradient flows through a capped token).

    Args:
        logp: (B, T) log pi_theta of the sampled tokens (carries the gradient).
        old_logp: (B, T) log pi_old of the same tokens.
        advantages: (B,) one advantage per sample, shared by its tokens.
        mask: (B, T) bool or 0/1.
        clip_low: the ratio's lower clip range.
        clip_high: the ratio's upper clip range.
        aggregation: one of AGGREGATIONS ("token-mean", "seq-mean-token-mean", ...).
        constant: the divisor of "seq-mean-token-sum-norm" (default T).
        dual_clip: c > 1, the cap on the ratio of negative-advantage tokens; None: no dual clip.

    Returns:
        loss: 0-dim float32 (float64 for float64 inputs).
        metrics: detached 0-dim tensors over masked tokens: clip_frac (fraction of tokens whose
            clipped term is the smaller, the dual clip included), ratio_mean, ratio_min,
            ratio_max (of r_t), approx_kl.
    """
    _check_token_shapes(logp=logp, old_logp=old_logp, mask=mask)
    _check_per_sample(logp.shape[0], advantages=advantages)
    lower, upper = _clip_bounds(clip_low, clip_high, log_space=False)
    if dual_clip is not None and not dual_clip > 1:
        raise ValueError(f"expected dual_clip > 1 (verl's clip_ratio_c, e.g. 3), got {dual_clip}")
    negative_cap = math.inf if dual_clip is None else math.log(dual_clip)
    mask = mask.bool()
    x = _masked_log_ratio(logp, old_logp, mask)  # (B, T)
    adv = advantages.to(x.dtype)[:, None]  # (B, 1)
    clipped = _pessimistic_clip(x, adv, lower, upper, negative_cap)  # (B, T)
    loss = aggregate(-adv * torch.exp(clipped), mask, aggregation, constant=constant)
    with torch.no_grad():
        n_tokens = mask.sum().clamp_min(1)
        ratio_minus_1 = torch.expm1(x)  # (B, T), 0 where masked out
        metrics = {
            "clip_frac": torch.count_nonzero(clipped != x) / n_tokens,
            **_ratio_stats(x, ratio_minus_1, mask, n_tokens),
            "approx_kl": _approx_kl(x, ratio_minus_1, n_tokens),
        }
    return loss, metrics


@dataclass(frozen=True)
class LossPreset:
    """A published objective, as settings of `holder_policy_loss` (or `ppo_token_loss`).

    Attributes:
        name: the registry key.
        method: the published method it reproduces, with its reference.
        clip: "sequence" or "token".
        clip_low: lower clip range (on r, or on log r when log_space_clip).
        clip_high: upper clip range.
        schedule: p over the run; call it as schedule(iteration, total).
        log_space_clip: clip log r to [-clip_low, clip_high] (GMPO).
        aggregation: set only for the token-level PPO losses: their token reduction (no Hölder mean).
        dual_clip: verl's cap c on the ratio of negative-advantage tokens (token-level PPO losses only).
        norm_length: the constant divisor of "seq-mean-token-sum-norm" (Dr.GRPO: the generation
            budget); None: the padded length of the minibatch.
        estimator: the advantage estimator the method is defined with (None: the run's choice).
        annealed: p follows the run's schedule options (p_schedule, p_start, p_end).
    """

    name: str
    method: str
    clip: str
    clip_low: float
    clip_high: float
    schedule: PSchedule
    log_space_clip: bool = False
    aggregation: str | None = None
    dual_clip: float | None = None
    norm_length: float | None = None
    estimator: str | None = None
    annealed: bool = False

    def loss(
        self,
        logp: Tensor,
        old_logp: Tensor,
        advantages: Tensor,
        mask: Tensor,
        p: float | Tensor,
        *,
        weights: Tensor | None = None,
        clip_low: float | None = None,
        clip_high: float | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """This preset's (loss, metrics) on one minibatch; p = self.schedule(iteration, total).

        Shapes as in `holder_policy_loss`; `clip_low`/`clip_high` override the preset's ranges
        (None: the preset's). The token-level PPO presets have no Hölder mean: they ignore p and
        the sample weights (their aggregation already decides how tokens weigh).
        """
        low = self.clip_low if clip_low is None else clip_low
        high = self.clip_high if clip_high is None else clip_high
        if self.aggregation is not None:
            return ppo_token_loss(
                logp,
                old_logp,
                advantages,
                mask,
                low,
                high,
                self.aggregation,
                constant=self.norm_length,
                dual_clip=self.dual_clip,
            )
        return holder_policy_loss(
            logp,
            old_logp,
            advantages,
            mask,
            p,
            low,
            high,
            self.clip,
            weights=weights,
            log_space_clip=self.log_space_clip,
        )

    def describe(self, total: int, estimator: str) -> str:
        """One line saying what this preset optimises over a run of `total` iterations, with its
        effective clip range and its advantage (its own, else `estimator`), e.g.
        "gmpo: token clip of log r to [-0.4, +0.4], Hölder mean, p = 0, advantage: grpo"."""
        if self.log_space_clip:
            clip = f"clip of log r to [-{self.clip_low:g}, +{self.clip_high:g}]"
        else:
            clip = f"clip of r to [1 - {self.clip_low:g}, 1 + {self.clip_high:g}]"
        if self.dual_clip is not None:
            clip += f", dual clip c = {self.dual_clip:g} for A < 0"
        if self.aggregation is not None:
            norm = f", divisor {self.norm_length:g}" if self.norm_length is not None else ""
            reduction = f"{self.aggregation}{norm} (no Hölder mean)"
        else:
            start, end = self.schedule(0, total), self.schedule(total - 1, total)
            shape = f"p = {start:g}" if start == end else f"p {self.schedule.kind} {start:g} -> {end:g}"
            reduction = f"Hölder mean, {shape}"
        advantage = self.estimator or estimator
        return f"{self.name}: {self.clip} {clip}, {reduction}, advantage: {advantage}"


def policy_measure(preset: LossPreset, weight: float, tokens: int) -> float:
    """How much one sample counts in the mean that `preset`'s policy loss takes over a batch:
    its weight (the Hölder presets' weighted mean over samples), its loss tokens (token-mean), or
    1 (the other token reductions' mean over sequences); 0 without a loss token. A micro-batch's
    share of a minibatch's policy loss (`total_loss`'s `policy_share`) is the sum of its samples'
    measures over the minibatch's."""
    if not tokens:
        return 0.0
    if preset.aggregation is None:
        return weight
    return float(tokens) if preset.aggregation == "token-mean" else 1.0


PRESETS: dict[str, LossPreset] = {
    preset.name: preset
    for preset in (
        LossPreset(
            "grpo",
            "GRPO (arXiv 2402.03300): token-level PPO clip, averaged per sequence",
            clip="token",
            clip_low=0.2,
            clip_high=0.2,
            schedule=make_schedule("constant", 1.0),
        ),
        LossPreset(
            "grpo_verl",
            "GRPO as verl runs it (the paper's GRPO baseline): token-level PPO clip with dual clip c = 3, "
            "token-mean over the batch",
            clip="token",
            clip_low=0.2,
            clip_high=0.2,
            schedule=make_schedule("constant", 1.0),
            aggregation="token-mean",
            dual_clip=3.0,
        ),
        LossPreset(
            "drgrpo",
            "Dr.GRPO (arXiv 2503.20783): token-level PPO clip, each sequence's token sum over the generation "
            "budget, advantages without the std",
            clip="token",
            clip_low=0.2,
            clip_high=0.2,
            schedule=make_schedule("constant", 1.0),
            aggregation="seq-mean-token-sum-norm",
            estimator="drgrpo",
        ),
        LossPreset(
            "gspo",
            "GSPO (arXiv 2507.18071): clipped geometric-mean sequence ratio",
            clip="sequence",
            clip_low=3e-4,
            clip_high=4e-4,
            schedule=make_schedule("constant", 0.0),
        ),
        LossPreset(
            "gmpo",
            "GMPO (arXiv 2507.20673): token clip of log r at +-0.4, then geometric mean",
            clip="token",
            clip_low=0.4,
            clip_high=0.4,
            schedule=make_schedule("constant", 0.0),
            log_space_clip=True,
        ),
        LossPreset(
            "holderpo",
            "HölderPO (arXiv 2605.12058): clipped Hölder-mean sequence ratio, p linear 1 -> -1",
            clip="sequence",
            clip_low=0.2,
            clip_high=0.2,
            schedule=make_schedule("linear", 1.0, -1.0),
            annealed=True,
        ),
        LossPreset(
            "holderpo_token",
            "HölderPO's token-clip variant (arXiv 2605.12058, Eq. 11): each token ratio clipped, then the "
            "Hölder mean, p linear 1 -> -1",
            clip="token",
            clip_low=0.2,
            clip_high=0.2,
            schedule=make_schedule("linear", 1.0, -1.0),
            annealed=True,
        ),
        LossPreset(
            "ppo",
            "PPO (arXiv 1707.06347): token-level clip, token-mean over the batch",
            clip="token",
            clip_low=0.2,
            clip_high=0.2,
            schedule=make_schedule("constant", 1.0),
            aggregation="token-mean",
        ),
    )
}
"""Preset name -> LossPreset: grpo, grpo_verl, drgrpo, gspo, gmpo, holderpo, holderpo_token, ppo."""


def get_preset(name: str) -> LossPreset:
    """The loss preset `name` (see PRESETS)."""
    if name not in PRESETS:
        raise ValueError(f"expected a loss preset in {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]


def configure_preset(
    name: str,
    *,
    clip_low: float | None = None,
    clip_high: float | None = None,
    schedule: PSchedule | None = None,
    norm_length: float | None = None,
) -> LossPreset:
    """The preset `name` with a run's settings in place, so that what it prints is what it trains.

    Args:
        name: one of PRESETS.
        clip_low, clip_high: this preset's clip ranges (None: its published ones).
        schedule: p over the run; used only by annealed presets (the others keep their fixed p).
        norm_length: the generation budget, the divisor of presets that normalise by a constant
            (Dr.GRPO); ignored by the others.
    """
    preset = get_preset(name)
    changes: dict = {}
    if clip_low is not None:
        changes["clip_low"] = clip_low
    if clip_high is not None:
        changes["clip_high"] = clip_high
    if schedule is not None and preset.annealed:
        changes["schedule"] = schedule
    if norm_length is not None and preset.aggregation == "seq-mean-token-sum-norm":
        if not norm_length > 0:
            raise ValueError(f"expected norm_length > 0 (the generation budget in tokens), got {norm_length}")
        changes["norm_length"] = float(norm_length)
    low, high = changes.get("clip_low", preset.clip_low), changes.get("clip_high", preset.clip_high)
    _clip_bounds(low, high, preset.log_space_clip)  # refuse a bad range now, not at the first update
    return replace(preset, **changes) if changes else preset


def total_loss(
    preset: LossPreset,
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    p: float | Tensor,
    *,
    weights: Tensor | None = None,
    clip_low: float | None = None,
    clip_high: float | None = None,
    ref_logp: Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
    policy_share: float = 1.0,
    token_share: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """What an update minimises: the preset's policy loss, plus the KL penalty to the reference,
    minus the entropy bonus:

        L = L_preset + kl_coef * mean_t KL(pi || pi_ref) - entropy_coef * mean_t H(pi)

    with both means over the masked tokens of the batch. A micro-batch of a larger minibatch
    returns its part of the minibatch's L: `policy_share` is its share of the minibatch's sample
    weight (the preset's loss is a weighted mean over samples), `token_share` its share of the
    minibatch's masked tokens (the KL and entropy terms are means over tokens), so that the parts
    add up to L whichever way the minibatch is cut, into micro-batches or over processes.

    Args:
        preset: the objective (see `PRESETS`).
        logp, old_logp, mask: (B, T) as in `holder_policy_loss`; advantages, weights: (B,).
        ref_logp: (B, T) log-probs of the reference policy; None: no KL term.
        entropy: (B, T) entropy of the sampling distribution at each token; None: no bonus.

    Returns:
        (loss, metrics): metrics are detached scalars under "loss/...": the preset's own
        metrics, "policy" (the policy loss), and "kl" and "entropy" where those terms are on.
    """
    policy, preset_metrics = preset.loss(
        logp, old_logp, advantages, mask, p, weights=weights, clip_low=clip_low, clip_high=clip_high
    )
    metrics = {f"loss/{key}": value for key, value in preset_metrics.items()}
    metrics["loss/policy"] = policy.detach()
    loss = policy_share * policy
    if ref_logp is not None:
        kl = masked_mean(kl_penalty(logp, ref_logp, mask, kl_estimator), mask)
        loss = loss + token_share * kl_coef * kl
        metrics["loss/kl"] = kl.detach()
    if entropy is not None:
        mean_entropy = masked_mean(entropy, mask)
        loss = loss - token_share * entropy_coef * mean_entropy
        metrics["loss/entropy"] = mean_entropy.detach()
    return loss, metrics
