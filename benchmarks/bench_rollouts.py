"""Rollout throughput of the embedded model: 8 episodes batched vs one at a time, in one run.

Plays the same 8 episodes (same games, seeds and step limit) twice: once with all 8 in one
batch (one generate call per turn over every live episode), once with a batch of one. Reports
generated tokens/s, env steps/s and the ratio, for free decoding (64 new tokens a turn) and
constrained decoding, plus the peak resident memory. Last, the batched constrained rollout
again without the prefix cache (agents/prefix_cache.py), for the cache's speed-up.

    python benchmarks/bench_rollouts.py --games games/valid --max-steps 6
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from agents.llm_policy import DecodingConfig, LLMPolicy
from agents.models import load_embedded
from agents.prompts import PromptConfig
from envs.batched import BatchedAlfWorld
from envs.games import resolve_games
from rollouts.runner import play_episodes
from rollouts.specs import make_specs

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures" / "alfworld_data" / "json_2.1.1"


def measure(policy: LLMPolicy, specs, num_envs: int, max_steps: int) -> dict:
    with BatchedAlfWorld(num_envs, min(num_envs, 2), max_steps=max_steps) as batch:
        start = time.perf_counter()
        records = play_episodes(batch, policy, specs)
        elapsed = time.perf_counter() - start
    tokens = sum(len(t.tokens.response_ids) for r in records for t in r.turns)
    steps = sum(r.steps for r in records)
    return {
        "seconds": elapsed,
        "tokens_per_s": tokens / elapsed,
        "episodes_per_s": len(records) / elapsed,
        "steps_per_s": steps / elapsed,
        "tokens": tokens,
        "steps": steps,
    }


def episode_specs(games_path: str, episodes: int) -> list:
    """The first `episodes` episodes of the games, seed 0: enough samples per game to fill them."""
    games = resolve_games(games_path)
    return make_specs(games, seed=0, samples=-(-episodes // len(games)))[:episodes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", default=str(FIXTURES))
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=6)
    args = parser.parse_args()
    specs = episode_specs(args.games, args.episodes)
    model, tokenizer = load_embedded()
    report = {"episodes": len(specs), "max_steps": args.max_steps}
    for decoding, max_new_tokens in (("free", 64), ("constrained", 64)):
        policy = LLMPolicy(model, tokenizer, PromptConfig(), DecodingConfig(decoding, max_new_tokens))
        batched = measure(policy, specs, len(specs), args.max_steps)
        alone = measure(policy, specs, 1, args.max_steps)
        report[decoding] = {
            "batched": batched,
            "one_at_a_time": alone,
            "speedup_tokens_per_s": batched["tokens_per_s"] / alone["tokens_per_s"],
            "speedup_steps_per_s": batched["steps_per_s"] / alone["steps_per_s"],
        }
    uncached = LLMPolicy(model, tokenizer, PromptConfig(), DecodingConfig("constrained", 64, cache_prefixes=False))
    report["constrained"]["batched_without_prefix_cache"] = without = measure(
        uncached, specs, len(specs), args.max_steps
    )
    report["constrained"]["prefix_cache_speedup"] = (
        report["constrained"]["batched"]["steps_per_s"] / without["steps_per_s"]
    )
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
