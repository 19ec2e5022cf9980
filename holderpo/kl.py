"""KL estimators to a frozen reference policy, and masked means.

The three estimators of KL(pi_theta || pi_ref) from tokens sampled by pi_theta (Schulman,
"Approximating KL divergence", 2020), with delta_t = log pi_ref(y_t) - log pi_theta(y_t):

    k1 = -delta_t                                   unbiased, high variance, can be negative
    k2 = delta_t^2 / 2                              biased, low variance
    k3 = exp(delta_t) - delta_t - 1                 unbiased, low variance, always >= 0

k3 is verl's "low_var_kl"; like verl we clamp it to [-10, 10] so that one token whose
probability collapsed under the reference cannot dominate the penalty.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["KL_ESTIMATORS", "K3_CLAMP", "kl_penalty", "masked_mean"]

K3_CLAMP = 10.0
"""k3 values are clamped to [-K3_CLAMP, K3_CLAMP], as verl's low_var_kl does."""


def _k1(delta: Tensor) -> Tensor:
    return -delta


def _k2(delta: Tensor) -> Tensor:
    return 0.5 * delta.square()


def _k3(delta: Tensor) -> Tensor:
    # expm1 keeps exp(delta) - 1 - delta accurate for the small deltas of a well-behaved policy,
    # where exp(delta) - delta - 1 would cancel to zero in float32.
    return (torch.expm1(delta) - delta).clamp(-K3_CLAMP, K3_CLAMP)


KL_ESTIMATORS: dict[str, Callable[[Tensor], Tensor]] = {
    "k1": _k1,
    "k2": _k2,
    "k3": _k3,
    "low_var_kl": _k3,
}
"""Estimator name -> per-token function of delta = ref_logp - logp."""


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `values` over the positions where `mask` is true.

    Args:
        values: (B, T) (any shape) values; masked-out entries may hold anything, even NaN.
        mask: same shape as `values`, bool or 0/1.
        dim: the dimension to average over; None averages over all entries.

    Returns:
        The masked mean, reduced over `dim` (a 0-dim tensor for dim=None). A slice with no
        true mask entry gives 0, not NaN.
    """
    if mask.shape != values.shape:
        raise ValueError(
            f"expected mask of the values' shape {tuple(values.shape)}, got {tuple(mask.shape)}; "
            "pass the (B, T) loss mask of the same batch"
        )
    mask = mask.bool()
    dims = tuple(range(values.dim())) if dim is None else dim
    return torch.where(mask, values, 0).sum(dims) / mask.sum(dims).clamp_min(1)


def kl_penalty(logp: Tensor, ref_logp: Tensor, mask: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token KL estimate of KL(pi_theta || pi_ref), zero at masked-out tokens.

    Args:
        logp: (B, T) log pi_theta(y_t) of the sampled tokens (carries the gradient).
        ref_logp: (B, T) log pi_ref(y_t) of the same tokens under the frozen reference.
        mask: (B, T) bool or 0/1, true for tokens in the loss.
        estimator: one of KL_ESTIMATORS: "k1", "k2", "k3" (= "low_var_kl", clamped to [-10, 10]).

    Returns:
        (B, T) per-token estimates in float32 (float64 for float64 inputs); reduce them with
        `masked_mean` (or `holderpo.losses.aggregate`) and scale by the KL coefficient.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"expected a KL estimator in {sorted(KL_ESTIMATORS)}, got {estimator!r}")
    if not (logp.shape == ref_logp.shape == mask.shape):
        raise ValueError(
            "expected logp, ref_logp and mask of one (B, T) shape, got "
            f"{tuple(logp.shape)}, {tuple(ref_logp.shape)} and {tuple(mask.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(logp.dtype, ref_logp.dtype), torch.float32)
    # Masking delta rather than the result keeps garbage in masked-out positions out of the
    # backward pass too (exp(nan) there would turn a zero upstream gradient into NaN), and every
    # estimator is 0 at delta = 0, so masked-out tokens come out as 0.
    delta = torch.where(mask.bool(), ref_logp.to(dtype) - logp.to(dtype), 0)
    return KL_ESTIMATORS[estimator](delta)
