"""Behaviour cloning: the whole model every epoch vs the trunk once, then the top blocks only.

With the top 4 blocks trainable (the default run), the 26 blocks below them compute the same
states in every epoch. `clone_behaviour(..., trunk_layers=4)` records them once, without
gradients, and each epoch runs only the top blocks (`holderpo/sft.py`). This script builds the
demonstrations of the given games, then runs the default warm start (2 epochs, batches of 16,
lr 3e-4) both ways from the same starting weights, in alternating rounds, and reports the
seconds, the ratio and how far the per-epoch losses and the trained weights of the two ways are apart.

    python benchmarks/bench_sft_trunk.py --games games/default/train
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from agents.llm_policy import DecodingConfig, LLMPolicy
from agents.models import load_embedded
from agents.prompts import PromptConfig
from envs.games import resolve_games
from holderpo.modeling import prepare_for_training, trainable_parameters
from holderpo.sft import clone_behaviour, demonstration_samples

TOP_LAYERS = 4
WAYS = {"whole model every epoch": None, "trunk once, top blocks per epoch": TOP_LAYERS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", required=True, help="training games (a folder or a list file)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    model, tokenizer = load_embedded()
    model = prepare_for_training(model, "top", top_layers=TOP_LAYERS)
    policy = LLMPolicy(model, tokenizer, PromptConfig("step", 1, "action"), DecodingConfig("constrained"))
    samples = demonstration_samples(policy, resolve_games(args.games), num_envs=16, num_workers=2)
    start_weights = {name: p.detach().clone() for name, p in trainable_parameters(model).items()}
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    losses, weights = {}, {}
    for _ in range(args.rounds):
        for way, trunk_layers in WAYS.items():
            with torch.no_grad():
                for name, p in trainable_parameters(model).items():
                    p.copy_(start_weights[name])
            tick = time.perf_counter()
            losses[way] = clone_behaviour(
                model,
                samples,
                list(trainable_parameters(model).values()),
                epochs=args.epochs,
                lr=3e-4,
                batch_size=16,
                pad_id=tokenizer.eos_token_id,
                trunk_layers=trunk_layers,
                echo=lambda _: None,
            )
            seconds[way].append(time.perf_counter() - tick)
            weights[way] = {name: p.detach().clone() for name, p in trainable_parameters(model).items()}
    whole, top = WAYS
    best = {way: min(times) for way, times in seconds.items()}
    print(
        json.dumps(
            {
                "samples": len(samples),
                "epochs": args.epochs,
                "seconds": best,
                "speedup": best[whole] / best[top],
                "losses": losses,
                "max_weight_difference": max(
                    float((weights[whole][n] - weights[top][n]).abs().max()) for n in weights[whole]
                ),
                "timings": seconds,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
