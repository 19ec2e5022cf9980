"""From played episodes to training samples: returns, group advantages, token tensors.

Step-wise context: each turn is a sample (its prompt, its response). Full context: each episode
is one sample whose "response" is everything after the first prompt; its mask covers what
`loss_tokens` names of every turn's response and none of the observation tokens in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from agents.policy import TokenRecord
from agents.scoring import Scored, TrunkStates, response_logprobs
from holderpo.advantages import get_estimator, gigpo_advantages, step_row_advantages, zero_signal_mask
from rollouts.records import EpisodeRecord, TurnRecord


@dataclass
class Sample:
    prompt_ids: list[int]
    response_ids: list[int]
    old_logprobs: list[float]  # sampling log-probs (0 where not in the loss)
    loss_mask: list[bool]
    allowed: list[tuple[int, ...] | None]  # the constraint before each response token
    advantage: float
    weight: float
    episode: int  # index of its episode in the iteration
    prefix_length: int = 0  # leading prompt tokens shared with other samples of its game (scored once)
    # recorded at generation under finetune=top (see agents.trunk): the hidden states entering the
    # first trained block over the prefix, and over the rest of the prompt and the response
    prefix_states: torch.Tensor | None = None
    trunk_states: torch.Tensor | None = None


def loss_weight(sample: Sample) -> float:
    """A sample's weight in its minibatch: its own, or 0 when none of its tokens is in the loss."""
    return sample.weight if any(sample.loss_mask) else 0.0


def is_invalid(turn: TurnRecord, penalty_mode: str = "episode") -> bool:
    """Whether a turn earns the invalid-action penalty: under "episode" (ours) an inadmissible or
    malformed action, under "step" (verl-agent's) only a format failure (`turn.malformed`: no
    readable action, or under verl-agent's prompt a broken think/action format; see agents.parsing)."""
    return turn.malformed if penalty_mode == "step" else not turn.admissible


def episode_return(
    record: EpisodeRecord, win_reward: float, invalid_penalty: float, penalty_mode: str = "episode"
) -> float:
    """R = win_reward if won, minus invalid_penalty per invalid turn (see `is_invalid`)."""
    invalid = sum(is_invalid(turn, penalty_mode) for turn in record.turns)
    return (win_reward if record.won else 0.0) - invalid_penalty * invalid


def row_returns(record: EpisodeRecord, win_reward: float, invalid_penalty: float, penalty_mode: str) -> torch.Tensor:
    """The return each step row carries (L,) float64: under "episode" the episode's return on every
    row; under "step" (verl-agent) the episode's win reward minus the penalty of that row only."""
    if penalty_mode == "episode":
        return torch.full(
            (len(record.turns),), episode_return(record, win_reward, invalid_penalty), dtype=torch.float64
        )
    win = win_reward if record.won else 0.0
    return torch.tensor(
        [win - invalid_penalty * is_invalid(turn, "step") for turn in record.turns], dtype=torch.float64
    )


def step_rewards(
    record: EpisodeRecord, win_reward: float, invalid_penalty: float, penalty_mode: str = "episode"
) -> torch.Tensor:
    """Per-turn rewards for GiGPO: the win on its step, the penalty on invalid steps."""
    return torch.tensor(
        [
            (win_reward if turn.reward > 0 else 0.0) - (invalid_penalty if is_invalid(turn, penalty_mode) else 0.0)
            for turn in record.turns
        ]
    )


def advantages(
    records: Sequence[EpisodeRecord],
    estimator: str,
    win_reward: float,
    invalid_penalty: float,
    omega: float = 1.0,
    gamma: float = 0.95,
    gigpo_std: bool = True,
    penalty_mode: str = "episode",
    statistics: str = "episodes",
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Per-turn advantages of each episode, the returns (N,), and the zero-signal mask (N,).
    `gigpo_std`: GiGPO divides both of its terms by their group's std (False: centres them only).
    `penalty_mode`: which turns are penalised and where (see `is_invalid`, `row_returns`).
    `statistics`: "episodes" compares the N returns within each group, "steps" every step row
    (`holderpo.advantages.step_row_advantages`); a per-step penalty needs the latter.

    An episode has zero signal when every advantage of it is 0: under the episode-level
    estimators, when its group's returns are all equal; under GiGPO an all-won group still
    ranks its steps (a shorter win has a higher discounted return), so only its episodes
    whose step advantages all vanish are marked.
    """
    if estimator != "gigpo" and penalty_mode == "step" and statistics != "steps":
        raise ValueError("a per-step invalid penalty needs per-row group statistics (statistics='steps') or gigpo")
    returns = torch.tensor(
        [episode_return(r, win_reward, invalid_penalty, penalty_mode) for r in records], dtype=torch.float64
    )
    groups = torch.tensor([r.group for r in records])
    if estimator == "gigpo":
        per_step = gigpo_advantages(
            returns,
            [step_rewards(r, win_reward, invalid_penalty, penalty_mode) for r in records],
            [[turn.observation for turn in r.turns] for r in records],
            groups,
            gamma=gamma,
            omega=omega,
            std_normalize=gigpo_std,
        )
        zero_signal = torch.tensor([bool((steps == 0).all()) for steps in per_step], dtype=torch.bool)
    elif statistics == "steps":
        rows = [row_returns(r, win_reward, invalid_penalty, penalty_mode) for r in records]
        per_step, zero_signal = step_row_advantages(rows, groups, get_estimator(estimator))
    else:
        episode = get_estimator(estimator)(returns, groups)
        per_step = [episode[i].expand(len(r.turns)) for i, r in enumerate(records)]
        zero_signal = zero_signal_mask(returns, groups)
    return per_step, returns, zero_signal


def _turn_sample(tokens: TokenRecord, replay, advantage: float, index: int) -> Sample:
    allowed = replay(tokens.admissible, tokens.response_ids)
    return Sample(
        tokens.prompt_ids,
        tokens.response_ids,
        tokens.logprobs,
        tokens.loss_mask,
        allowed,
        advantage,
        1.0,
        index,
        tokens.prefix_length,
        tokens.prefix_states,
        tokens.trunk_states,
    )


def build_samples(
    records: Sequence[EpisodeRecord],
    per_step: Sequence[torch.Tensor],
    keep: Sequence[bool],
    context: str,
    replay,
    sample_weighting: str = "sample",
) -> list[Sample]:
    """Training samples of the kept episodes.

    `replay(admissible, response_ids)` rebuilds the allowed set of each response token (a list
    of None under free decoding). With sample_weighting="episode" each episode's samples share
    a total weight of 1; with "sample" every sample weighs 1.
    """
    samples: list[Sample] = []
    for index, (record, steps) in enumerate(zip(records, per_step)):
        if not keep[index] or not record.turns or record.turns[0].tokens is None:
            continue
        turn_tokens = [turn.tokens for turn in record.turns]
        if context == "step":
            episode_samples = [
                _turn_sample(tokens, replay, float(steps[t]), index) for t, tokens in enumerate(turn_tokens)
            ]
        else:
            episode_samples = [_full_sample(turn_tokens, steps, replay, index)]
        if sample_weighting == "episode":
            for sample in episode_samples:
                sample.weight = 1.0 / len(episode_samples)
        samples += episode_samples
    return samples


def _full_sample(turns: Sequence[TokenRecord], steps: torch.Tensor, replay, index: int) -> Sample:
    """One sample for a whole episode (its turns' tokens): the last prompt extends every earlier
    turn's tokens."""
    first_prompt = turns[0].prompt_ids
    sequence = turns[-1].prompt_ids + turns[-1].response_ids
    length = len(sequence) - len(first_prompt)
    logprobs, mask, allowed = [0.0] * length, [False] * length, [None] * length
    for turn in turns:
        prompt, response = turn.prompt_ids, turn.response_ids
        start = len(prompt) - len(first_prompt)
        assert sequence[len(prompt) : len(prompt) + len(response)] == response, "full context is a prefix chain"
        logprobs[start : start + len(response)] = turn.logprobs
        mask[start : start + len(response)] = turn.loss_mask
        allowed[start : start + len(response)] = replay(turn.admissible, response)
    return Sample(first_prompt, sequence[len(first_prompt) :], logprobs, mask, allowed, float(steps.mean()), 1.0, index)


def with_old_logprobs(sample: Sample, logprobs: Sequence[float]) -> Sample:
    """`sample` with other old log-probs (one per response token), kept 0 outside the loss as the
    sampler's are."""
    if len(logprobs) != len(sample.response_ids):
        raise ValueError(f"expected {len(sample.response_ids)} log-probs, one per response token, got {len(logprobs)}")
    return replace(sample, old_logprobs=[float(v) if m else 0.0 for v, m in zip(logprobs, sample.loss_mask)])


def right_aligned(rows: Sequence[Sequence], width: int, fill, dtype) -> torch.Tensor:
    """Stack ragged rows into (B, width), each row in its last columns (matches `Scored`)."""
    return torch.tensor([[fill] * (width - len(row)) + list(row) for row in rows], dtype=dtype)


@dataclass(frozen=True)
class Minibatch:
    """One micro-batch's per-sample data as right-aligned tensors that line up with the model's
    scores (`agents.scoring.Scored`, (B, T)): row b's response fills its last columns."""

    old_logprobs: torch.Tensor  # (B, T) float32: sampling log-probs, 0 outside the loss
    mask: torch.Tensor  # (B, T) bool: response tokens in the loss
    advantages: torch.Tensor  # (B,) float32
    weights: torch.Tensor  # (B,) float32: each sample's weight in the loss
    ref_logprobs: torch.Tensor | None  # (B, T) float32: the reference's log-probs; None without KL

    @classmethod
    def from_samples(
        cls, samples: Sequence[Sample], ref: Sequence[torch.Tensor] | None, scored_mask: torch.Tensor
    ) -> Minibatch:
        """`ref[b]`: the reference's log-probs of sample b's scored tokens; `scored_mask` (B, T):
        the real response tokens of the scores, whose width and device the tensors take."""
        width, device = scored_mask.shape[1], scored_mask.device
        mask = right_aligned([s.loss_mask for s in samples], width, False, torch.bool) & scored_mask.cpu()
        return cls(
            old_logprobs=right_aligned([s.old_logprobs for s in samples], width, 0.0, torch.float32).to(device),
            mask=mask.to(device),
            advantages=torch.tensor([s.advantage for s in samples], dtype=torch.float32).to(device),
            weights=torch.tensor([s.weight for s in samples], dtype=torch.float32).to(device),
            ref_logprobs=None
            if ref is None
            else right_aligned([r.tolist() for r in ref], width, 0.0, torch.float32).to(device),
        )


def score_samples(
    model,
    samples: Sequence[Sample],
    *,
    pad_id: int,
    trunk: TrunkStates | None = None,
    with_entropy: bool = False,
    temperature: float = 1.0,
    single_pass: bool = False,
) -> Scored:
    """The model's log-probs of the samples' responses under their recorded constraints (see
    `agents.scoring.response_logprobs`); with `trunk`, on recorded trunk states (top blocks only).
    `temperature`: the rollouts' own, since they sampled (and recorded log-probs) from
    softmax(logits / T); at any other T every ratio would be off from the first step."""
    return response_logprobs(
        model,
        [s.prompt_ids for s in samples],
        [s.response_ids for s in samples],
        [s.allowed for s in samples],
        temperature=temperature,
        pad_id=pad_id,
        with_entropy=with_entropy,
        prefix_lengths=[s.prefix_length for s in samples],
        trunk=trunk,
        single_pass=single_pass,
    )


def recorded_trunk(samples: Sequence[Sample], top_layers: int | None) -> TrunkStates | None:
    """The trunk states the samples' rollouts recorded, if every one has them (None otherwise)."""
    if not top_layers or any(s.trunk_states is None for s in samples):
        return None
    return TrunkStates(top_layers, [s.prefix_states for s in samples], [s.trunk_states for s in samples])
