"""Behaviour cloning on the expert's walkthroughs: the warm start before RL.

From the untrained small model, a group of episodes almost never sees a win, so RL has no
signal. A short phase of supervised learning on the stored walkthroughs of the training games
fixes that. It uses exactly what RL uses: the same prompts, the same response tokens for a
command, and under constrained decoding the same masked distribution, with forced tokens left
out of the loss.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from agents.baselines import WalkthroughPolicy
from agents.llm_policy import LLMPolicy
from agents.parsing import REACT
from agents.policy import Turn
from agents.scoring import TrunkStates, record_trunk_states
from agents.thoughts import EpisodeMemory, Goal, demonstration_thought
from envs.backends import open_envs
from envs.games import read_task_params
from holderpo.samples import Sample, right_aligned, score_samples
from rollouts.runner import play_episodes
from rollouts.specs import make_specs


def demonstration_samples(
    policy: LLMPolicy,
    games: Sequence[str],
    *,
    num_envs: int = 8,
    num_workers: int | None = None,
    seed: int = 0,
    env_backend: str = "local",
    ray_address: str | None = None,
    thoughts: bool = False,
    **env_kwargs,
) -> list[Sample]:
    """One sample per turn of every winning walkthrough, prompted as `policy` prompts.

    Walkthroughs are played without the RL step limit: every turn of a demonstration teaches.
    `env_backend` and `ray_address` choose where they are played (`envs.backends.open_envs`).
    `thoughts` (react format): each command comes after a thought written from what the turn's
    prompt shows (`agents.thoughts`); otherwise after an empty one.
    """
    if policy.prompt.context != "step":
        raise ValueError("behaviour cloning supports the step context only; use --context step")
    if thoughts and policy.prompt.output_format != REACT:
        raise ValueError("demonstration thoughts need the react output format; use --output-format react")
    walker = WalkthroughPolicy()
    specs = make_specs(games, seed)
    num_envs = min(num_envs, len(specs))
    with open_envs(env_backend, num_envs, num_workers, ray_address, max_steps=1000, **env_kwargs) as batch:
        records = play_episodes(batch, walker, specs, progress="demonstrations")
    won = {record.episode_id for record in records if record.won}
    samples = []
    for turn in walker.turns:
        if turn.episode_id not in won:
            continue
        action = walker.walkthrough(turn.info["gamefile"])[turn.turn]
        response = policy.demonstration_ids(action, demonstration_thought_for(policy, turn, action) if thoughts else "")
        if policy.constrained:
            constraint = policy.constraint(turn.info["admissible_commands"])
            allowed = constraint.replay(response)
            mask = [not (a is not None and len(a) == 1) for a in allowed]
        else:
            allowed, mask = [None] * len(response), [True] * len(response)
        prompt = policy.prompt_ids(turn)
        prefix = (policy.prefix_lengths([turn], [prompt]) or [0])[0]
        samples.append(
            Sample(
                prompt,
                response,
                [0.0] * len(response),
                mask,
                allowed,
                advantage=0.0,
                weight=1.0,
                episode=len(samples),
                prefix_length=prefix,
            )
        )
    return samples


def demonstration_thought_for(policy: LLMPolicy, turn: Turn, action: str) -> str:
    """The thought before `action` at `turn`, from the turns the policy's prompt shows; its
    wording drawn from (episode, turn), so the same demonstrations come out in every run."""
    goal = Goal.from_params(turn.info["task"], turn.info["task_type"], read_task_params(turn.info["gamefile"]))
    shown = turn.history[-policy.prompt.history :] if policy.prompt.history else ()
    memory = EpisodeMemory.replay(shown, turn.observation)
    return demonstration_thought(goal, memory, action, random.Random(f"{turn.episode_id}|{turn.turn}"))


def grouped_order(samples: Sequence[Sample], rng: np.random.Generator) -> list[int]:
    """A shuffled order that keeps the samples of one game together: games in random order, each
    game's turns shuffled. A batch then spans one or two games, so their shared prompt start
    runs through the model once per batch instead of once per sample (about half the work)."""
    by_start: dict[tuple[int, ...], list[int]] = {}
    for index, sample in enumerate(samples):
        by_start.setdefault(tuple(sample.prompt_ids[: sample.prefix_length]), []).append(index)
    groups = list(by_start.values())
    order = []
    for group in rng.permutation(len(groups)):
        order += [groups[group][i] for i in rng.permutation(len(groups[group]))]
    return order


def demonstration_trunk(
    model, samples: Sequence[Sample], top_layers: int, *, batch_size: int, pad_id: int
) -> TrunkStates:
    """The frozen trunk's output over every demonstration, computed in batches without gradients:
    the epochs then run only the top blocks (see `agents.trunk`). Batches follow the games, so
    that a game's shared prompt start runs once per batch, not once per sample."""
    order = sorted(range(len(samples)), key=lambda i: samples[i].prompt_ids[: samples[i].prefix_length])
    prefixes: list = [None] * len(samples)
    tails: list = [None] * len(samples)
    for start in tqdm(range(0, len(order), batch_size), desc="trunk states", unit="batch", leave=False):
        indices = order[start : start + batch_size]
        chunk = [samples[i] for i in indices]
        states = record_trunk_states(
            model,
            [s.prompt_ids for s in chunk],
            [s.response_ids for s in chunk],
            top_layers,
            pad_id=pad_id,
            prefix_lengths=[s.prefix_length for s in chunk],
        )
        for index, prefix, tail in zip(indices, states.prefixes, states.tails):
            prefixes[index], tails[index] = prefix, tail
    return TrunkStates(top_layers, prefixes, tails)


def clone_behaviour(
    model,
    samples: Sequence[Sample],
    parameters,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    pad_id: int,
    seed: int = 0,
    trunk_layers: int | None = None,
    echo: Callable[[str], None] = print,
    precision: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> list[float]:
    """Minimise the masked negative log-likelihood of the demonstrations; the mean loss per epoch.

    With `trunk_layers` (only the top blocks train), the trunk runs once over the demonstrations
    and every epoch runs only the top blocks on its output: the same losses, less work. Forward
    passes run inside `precision()` (the run's compute precision), backward passes outside it."""
    if not samples:
        raise ValueError("no demonstrations: the training games have no winning walkthroughs")
    with precision():
        trunk = (
            demonstration_trunk(model, samples, trunk_layers, batch_size=batch_size, pad_id=pad_id)
            if trunk_layers
            else None
        )
    optimizer = torch.optim.AdamW(parameters, lr=lr)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 17]))
    losses = []
    bar = tqdm(total=epochs * -(-len(samples) // batch_size), desc="behaviour cloning", unit="step", leave=False)
    for epoch in range(epochs):
        total, count = 0.0, 0
        order = grouped_order(samples, rng)
        for start in range(0, len(samples), batch_size):
            bar.update(1)
            indices = order[start : start + batch_size]
            chunk = [samples[i] for i in indices]
            chunk_trunk = (
                None
                if trunk is None
                else TrunkStates(
                    trunk.top_layers, [trunk.prefixes[i] for i in indices], [trunk.tails[i] for i in indices]
                )
            )
            with precision():
                scored = score_samples(model, chunk, pad_id=pad_id, trunk=chunk_trunk)
                width = scored.logprobs.shape[1]
                mask = right_aligned([s.loss_mask for s in chunk], width, False, torch.bool).to(scored.logprobs.device)
                loss = -(scored.logprobs * mask).sum() / mask.sum().clamp(min=1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(chunk), count + len(chunk)
        losses.append(total / count)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        echo(f"behaviour cloning epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}")
    bar.close()
    return losses
