"""The official recipes' objectives as presets and options (issue 21, items 8 and 9), each against
a float64 reference written here from the published formulas, not from holderpo's code."""

from __future__ import annotations

import math

import pytest
import torch

from holderpo.advantages import gigpo_advantages
from holderpo.config import load_config
from holderpo.losses import configure_preset, get_preset
from holderpo.schedules import make_schedule

# 3 samples x 5 tokens: ratios far above 3 and below 0.8 under both signs of A, one padded row
LOG_RATIOS = [
    [1.5, -0.5, 0.1, 2.0, 0.0],  # A < 0: tokens 0 and 3 exceed c = 3 (e^1.5 = 4.5, e^2 = 7.4)
    [0.3, -0.4, 0.05, 0.0, 0.0],  # A > 0
    [-0.3, 1.2, 0.0, 0.0, 0.0],  # A < 0, only two tokens
]
MASK = [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]
ADVANTAGES = [-1.5, 0.8, -0.6]


def batch():
    old = torch.tensor([[-1.0, -2.0, -0.5, -3.0, -1.5]] * 3, dtype=torch.float64)
    logp = (old + torch.tensor(LOG_RATIOS, dtype=torch.float64)).requires_grad_()
    return logp, old, torch.tensor(ADVANTAGES, dtype=torch.float64), torch.tensor(MASK, dtype=torch.bool)


def token_terms(logp, old, clip=0.2, dual=None):
    """verl's compute_policy_loss per token, as plain Python over the masked tokens."""
    rows = []
    for i, a in enumerate(ADVANTAGES):
        row = []
        for t in range(5):
            if MASK[i][t]:
                r = torch.exp(logp[i, t] - old[i, t])
                loss = torch.maximum(-a * r, -a * torch.clamp(r, 1 - clip, 1 + clip))
                if dual is not None and a < 0:
                    loss = torch.minimum(loss, torch.tensor(-a * dual, dtype=torch.float64))
                row.append(loss)
        rows.append(row)
    return rows


def check(preset, want, logp, old, advantages, mask, p=1.0):
    got, _ = preset.loss(logp, old, advantages, mask, p)
    (got_grad,) = torch.autograd.grad(got, logp)
    (want_grad,) = torch.autograd.grad(want, logp)
    assert math.isclose(got.item(), want.item(), rel_tol=1e-12, abs_tol=1e-12)
    assert torch.allclose(got_grad, want_grad, rtol=1e-12, atol=1e-12)


def test_grpo_verl_is_token_mean_with_dual_clip_3():
    logp, old, advantages, mask = batch()
    tokens = [loss for row in token_terms(logp, old, dual=3.0) for loss in row]
    check(get_preset("grpo_verl"), sum(tokens) / len(tokens), logp, old, advantages, mask)
    # the dual clip binds here: without it the loss is another number
    plain = [loss for row in token_terms(logp, old) for loss in row]
    assert not math.isclose((sum(plain) / len(plain)).item(), (sum(tokens) / len(tokens)).item(), rel_tol=1e-3)


def test_drgrpo_divides_each_sequence_sum_by_the_generation_budget():
    logp, old, advantages, mask = batch()
    preset = configure_preset("drgrpo", norm_length=64)
    want = sum(sum(row) / 64 for row in token_terms(logp, old)) / 3
    check(preset, want, logp, old, advantages, mask)
    assert preset.estimator == "drgrpo" and get_preset("drgrpo").estimator == "drgrpo"


def test_holderpo_token_clips_each_ratio_then_takes_the_holder_mean():
    """Eq. 11: r~_t = min(r_t, 1 + e) if A >= 0 else max(r_t, 1 - e); J = A ((1/T) sum r~^p)^(1/p)."""
    logp, old, advantages, mask = batch()
    schedule = make_schedule("linear", 2.0, -2.0)
    preset = configure_preset("holderpo_token", schedule=schedule)
    p = preset.schedule(10, 41)
    assert p == pytest.approx(1.0) and preset.clip == "token"
    total = 0.0
    for i, a in enumerate(ADVANTAGES):
        ratios = [torch.exp(logp[i, t] - old[i, t]) for t in range(5) if MASK[i][t]]
        clipped = [torch.clamp(r, max=1.2) if a >= 0 else torch.clamp(r, min=0.8) for r in ratios]
        total = total - a * (sum(r**p for r in clipped) / len(clipped)) ** (1 / p)
    check(preset, total / 3, logp, old, advantages, mask, p)


def test_only_annealed_presets_take_the_run_schedule():
    schedule = make_schedule("cubic", 2.0, -2.0)
    assert configure_preset("holderpo", schedule=schedule).schedule == schedule
    assert configure_preset("gspo", schedule=schedule).schedule == get_preset("gspo").schedule
    with pytest.raises(ValueError, match="expected clip_low <= 1"):
        configure_preset("gspo", clip_low=1.5)


def test_gigpo_mean_only_centres_both_terms_without_the_std():
    # two episodes of one game, anchors: both start from "a"; episode 0 then visits "b" alone
    rewards = torch.tensor([10.0, 0.0], dtype=torch.float64)
    steps = [torch.tensor([0.0, 10.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64)]
    anchors = [["a", "b"], ["a"]]
    groups = torch.tensor([0, 0])
    got = gigpo_advantages(rewards, steps, anchors, groups, gamma=0.5, omega=1.0, std_normalize=False)
    # episode term: R - mean = +5, -5; step returns at "a": 0 + 0.5 * 10 = 5 and 0 -> centred +2.5, -2.5;
    # "b" is a singleton step group -> 0
    assert torch.equal(got[0], torch.tensor([5.0 + 2.5, 5.0], dtype=torch.float64))
    assert torch.equal(got[1], torch.tensor([-5.0 - 2.5], dtype=torch.float64))
    normalised = gigpo_advantages(rewards, steps, anchors, groups, gamma=0.5, omega=1.0)
    assert not torch.allclose(normalised[0], got[0])  # the default keeps the std (mean_std_norm)


@pytest.mark.parametrize("f", [0.0, 0.1, 0.25, 0.5, 0.8, 1.0])
def test_cubic_is_the_official_shape_and_smoothstep_ours(f):
    # the official code: p = mid + amp (2f - 1)^3 from p_min to p_max (train_zero_math_holder.py)
    p_min, p_max, total = -2.0, 2.0, 101
    iteration = round(f * (total - 1))
    official = (p_min + p_max) / 2 + (p_max - p_min) / 2 * (2 * f - 1) ** 3
    assert make_schedule("cubic", p_min, p_max)(iteration, total) == pytest.approx(official, abs=1e-12)
    ours = p_min + (p_max - p_min) * (3 * f**2 - 2 * f**3)
    assert make_schedule("smoothstep", p_min, p_max)(iteration, total) == pytest.approx(ours, abs=1e-12)


def test_compare_uses_each_methods_published_clip_range_under_the_paper_config():
    from holderpo.comparison import method_overrides, method_presets, settings_lines

    base = load_config("paper_alfworld_gpu")
    assert base.preset == "holderpo"
    presets = method_presets(base, ["holderpo", "grpo", "gspo", "gmpo", "grpo_verl"])
    effective = {name: (p.clip_low, p.clip_high, p.log_space_clip) for name, p in presets.items()}
    assert effective == {
        "holderpo": (base.clip_low, base.clip_high, False),  # the config's own range, for its own preset
        "grpo": (0.2, 0.2, False),
        "gspo": (3e-4, 4e-4, False),
        "gmpo": (0.4, 0.4, True),
        "grpo_verl": (0.2, 0.2, False),
    }
    # the runs get the same settings: their configs drop the range of another preset
    assert method_overrides(base, "gspo") == {"preset": "gspo", "clip_low": -1.0, "clip_high": -1.0}
    assert method_overrides(base, "holderpo") == {"preset": "holderpo"}
    lines = settings_lines(base, ["holderpo", "gspo", "gmpo"])
    assert lines[1] == "loss gspo: sequence clip of r to [1 - 0.0003, 1 + 0.0004], Hölder mean, p = 0, advantage: grpo"
    assert lines[2].startswith("loss gmpo: token clip of log r to [-0.4, +0.4]")
    assert lines[3].startswith("note: the config's clip range applies to its preset holderpo only")


def test_a_config_clip_range_reaches_its_own_preset():
    from holderpo.comparison import method_presets

    base = load_config(None, {"clip_low": 0.1, "clip_high": 0.28})
    presets = method_presets(base, ["holderpo", "gspo"])
    assert (presets["holderpo"].clip_low, presets["holderpo"].clip_high) == (0.1, 0.28)
    assert (presets["gspo"].clip_low, presets["gspo"].clip_high) == (3e-4, 4e-4)
