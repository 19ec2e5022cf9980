"""The update's forward+backward: whole model vs top blocks on recorded trunk states, full vs allowed-token head.

Plays the same episodes twice with the embedded model (top 4 blocks trainable, as in the default
run): once recording the hidden states entering block -4 (`agents/trunk.py`), once not, for the
cost of recording. Then scores every turn as the update does (micro-batches of 16, forward and
backward, shared prompt starts) four ways, in alternating rounds: the whole model or the top
blocks on the recorded states, each with the LM head over the whole vocabulary (the path before
these savers, forced here) or over the allowed tokens only. Reports seconds per sample, ratios
to the whole-model full-head pass, the largest log-prob difference and the states' size.

    python benchmarks/bench_trunk_reuse.py --games games/default/train --episodes 16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from unittest import mock

import torch

from agents.llm_policy import DecodingConfig, LLMPolicy
from agents.models import load_embedded
from agents.prompts import PromptConfig
from envs.batched import BatchedAlfWorld
from envs.games import resolve_games
from holderpo.modeling import prepare_for_training
from holderpo.samples import build_samples, recorded_trunk, score_samples
from rollouts.runner import play_episodes
from rollouts.specs import make_specs

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures" / "alfworld_data" / "json_2.1.1"
TOP_LAYERS = 4


def rollout(policy: LLMPolicy, specs, max_steps: int):
    with BatchedAlfWorld(len(specs), 2, max_steps=max_steps) as batch:
        start = time.perf_counter()
        records = play_episodes(batch, policy, specs)
        return records, time.perf_counter() - start


VARIANTS = {  # name: (top blocks on recorded states, LM head over the whole vocabulary)
    "whole model, full head": (False, True),
    "whole model, allowed-token head": (False, False),
    "top blocks, full head": (True, True),
    "top blocks, allowed-token head": (True, False),
}


def update_pass(
    model, samples, pad_id: int, reuse: bool, full_head: bool, micro: int = 16
) -> tuple[float, list[torch.Tensor]]:
    """Seconds of one forward+backward over all samples, and the log-probs of each micro-batch."""
    if full_head:  # what scoring does for models whose logits are not a plain projection
        with mock.patch("agents.scoring.output_matrix", return_value=None):
            return update_pass(model, samples, pad_id, reuse, False, micro)
    model.zero_grad(set_to_none=True)
    start, logprobs = time.perf_counter(), []
    for begin in range(0, len(samples), micro):
        chunk = samples[begin : begin + micro]
        trunk = recorded_trunk(chunk, TOP_LAYERS) if reuse else None
        scored = score_samples(model, chunk, pad_id=pad_id, trunk=trunk)
        scored.logprobs.sum().backward()
        logprobs.append(scored.logprobs.detach())
    return time.perf_counter() - start, logprobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", default=str(FIXTURES))
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    games = resolve_games(args.games)
    specs = make_specs(games, seed=0, samples=-(-args.episodes // len(games)))[: args.episodes]
    model, tokenizer = load_embedded()
    model = prepare_for_training(model, "top", top_layers=TOP_LAYERS)
    prompt, decoding = PromptConfig("step", 1, "action"), DecodingConfig("constrained")
    recording = LLMPolicy(model, tokenizer, prompt, decoding, trunk_layers=TOP_LAYERS)
    records, recorded_seconds = rollout(recording, specs, args.max_steps)
    _, plain_seconds = rollout(LLMPolicy(model, tokenizer, prompt, decoding), specs, args.max_steps)
    replay = lambda admissible, response: recording.constraint(admissible).replay(response)  # noqa: E731
    per_step = [torch.ones(len(r.turns)) for r in records]
    samples = build_samples(records, per_step, [True] * len(records), "step", replay)
    timings: dict[str, list[float]] = {name: [] for name in VARIANTS}
    logprobs = {}
    for _ in range(args.repeats):
        for name, (reuse, full_head) in VARIANTS.items():
            seconds, logprobs[name] = update_pass(model, samples, tokenizer.eos_token_id, reuse, full_head)
            timings[name].append(seconds)
    baseline = logprobs["whole model, full head"]
    per_sample = {name: min(times) / len(samples) for name, times in timings.items()}
    prefixes = {id(s.prefix_states): s.prefix_states for s in samples if s.prefix_states is not None}
    state_bytes = sum(s.trunk_states.numel() * 4 for s in samples) + sum(p.numel() * 4 for p in prefixes.values())
    report = {
        "episodes": len(specs),
        "samples": len(samples),
        "max_steps": args.max_steps,
        "rollout_seconds": {
            "recording": recorded_seconds,
            "not_recording": plain_seconds,
            "ratio": recorded_seconds / plain_seconds,
        },
        "update_seconds_per_sample": per_sample,
        "speedup_over_whole_model_full_head": {
            name: per_sample["whole model, full head"] / value for name, value in per_sample.items()
        },
        "max_logprob_difference": {
            name: max(float((a - b).abs().max()) for a, b in zip(baseline, rows)) for name, rows in logprobs.items()
        },
        "recorded_states_mb": state_bytes / 2**20,
        "timings": timings,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
