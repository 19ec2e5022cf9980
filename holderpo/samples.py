"""From played episodes to training samples: returns, group advantages, token tensors.

Step-wise context: each turn is a sample (its prompt, its response). Full context: each episode
is one sample whose "response" is everything after the first prompt; its mask covers the
action tokens of every turn and none of the observation tokens in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from holderpo.advantages import get_estimator, gigpo_advantages, zero_signal_mask
from rollouts.records import EpisodeRecord


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


def episode_return(record: EpisodeRecord, win_reward: float, invalid_penalty: float) -> float:
    """R = win_reward if won, minus invalid_penalty per inadmissible or malformed action."""
    invalid = sum(not turn.admissible for turn in record.turns)
    return (win_reward if record.won else 0.0) - invalid_penalty * invalid


def step_rewards(record: EpisodeRecord, win_reward: float, invalid_penalty: float) -> torch.Tensor:
    """Per-turn rewards for GiGPO: the win on its step, the penalty on invalid steps."""
    return torch.tensor([(win_reward if turn.reward > 0 else 0.0) - (0.0 if turn.admissible else invalid_penalty)
                         for turn in record.turns])


def advantages(records: Sequence[EpisodeRecord], estimator: str, win_reward: float, invalid_penalty: float,
               omega: float = 1.0, gamma: float = 0.95) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Per-turn advantages of each episode, the returns (N,), and the zero-signal mask (N,).

    An episode has zero signal when every advantage of it is 0: under the episode-level
    estimators, when its group's returns are all equal; under GiGPO an all-won group still
    ranks its steps (a shorter win has a higher discounted return), so only its episodes
    whose step advantages all vanish are marked.
    """
    returns = torch.tensor([episode_return(r, win_reward, invalid_penalty) for r in records], dtype=torch.float64)
    groups = torch.tensor([r.group for r in records])
    if estimator == "gigpo":
        per_step = gigpo_advantages(
            returns, [step_rewards(r, win_reward, invalid_penalty) for r in records],
            [[turn.observation for turn in r.turns] for r in records], groups, gamma=gamma, omega=omega)
        zero_signal = torch.tensor([bool((steps == 0).all()) for steps in per_step], dtype=torch.bool)
    else:
        episode = get_estimator(estimator)(returns, groups)
        per_step = [episode[i].expand(len(r.turns)) for i, r in enumerate(records)]
        zero_signal = zero_signal_mask(returns, groups)
    return per_step, returns, zero_signal


def _turn_tokens(turn, replay) -> tuple[list[int], list[int], list[float], list[bool], list, int]:
    extras = turn.extras
    allowed = replay(extras["admissible"], extras["response_ids"])
    return (extras["prompt_ids"], extras["response_ids"], extras["logprobs"], extras["loss_mask"], allowed,
            extras.get("prefix_length", 0))


def _turn_sample(turn, replay, advantage: float, index: int) -> Sample:
    prompt, response, logprobs, mask, allowed, prefix = _turn_tokens(turn, replay)
    return Sample(prompt, response, logprobs, mask, allowed, advantage, 1.0, index, prefix,
                  turn.extras.get("prefix_states"), turn.extras.get("trunk_states"))


def build_samples(records: Sequence[EpisodeRecord], per_step: Sequence[torch.Tensor], keep: Sequence[bool],
                  context: str, replay, sample_weighting: str = "sample") -> list[Sample]:
    """Training samples of the kept episodes.

    `replay(admissible, response_ids)` rebuilds the allowed set of each response token (a list
    of None under free decoding). With sample_weighting="episode" each episode's samples share
    a total weight of 1; with "sample" every sample weighs 1.
    """
    samples: list[Sample] = []
    for index, (record, steps) in enumerate(zip(records, per_step)):
        if not keep[index] or not record.turns or "prompt_ids" not in record.turns[0].extras:
            continue
        if context == "step":
            episode_samples = [_turn_sample(turn, replay, float(steps[t]), index)
                               for t, turn in enumerate(record.turns)]
        else:
            episode_samples = [_full_sample(record, steps, replay, index)]
        if sample_weighting == "episode":
            for sample in episode_samples:
                sample.weight = 1.0 / len(episode_samples)
        samples += episode_samples
    return samples


def _full_sample(record: EpisodeRecord, steps: torch.Tensor, replay, index: int) -> Sample:
    """One sample for a whole episode: the last prompt extends every earlier turn's tokens."""
    first_prompt, *_ = _turn_tokens(record.turns[0], replay)
    last_prompt, last_response, *_ = _turn_tokens(record.turns[-1], replay)
    sequence = last_prompt + last_response
    length = len(sequence) - len(first_prompt)
    logprobs, mask, allowed = [0.0] * length, [False] * length, [None] * length
    for turn in record.turns:
        prompt, response, turn_logprobs, turn_mask, turn_allowed, _ = _turn_tokens(turn, replay)
        start = len(prompt) - len(first_prompt)
        assert sequence[len(prompt): len(prompt) + len(response)] == response, "full context is a prefix chain"
        logprobs[start: start + len(response)] = turn_logprobs
        mask[start: start + len(response)] = turn_mask
        allowed[start: start + len(response)] = turn_allowed
    return Sample(first_prompt, sequence[len(first_prompt):], logprobs, mask, allowed,
                  float(steps.mean()), 1.0, index)


def right_aligned(rows: Sequence[Sequence], width: int, fill, dtype) -> torch.Tensor:
    """Stack ragged rows into (B, width), each row in its last columns (matches `Scored`)."""
    return torch.tensor([[fill] * (width - len(row)) + list(row) for row in rows], dtype=dtype)
