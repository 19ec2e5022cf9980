"""Forward + backward time of holder_policy_loss next to the plain token-mean PPO loss.

Both losses run on the same random batch in one process, their repetitions interleaved so
that clock drift and cache state hit both alike; the script prints medians and their ratio.

    python benchmarks/bench_losses.py                       # B = 256, T = 512, float32
    python benchmarks/bench_losses.py --batch 64 --length 128 --repeats 50
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from holderpo.losses import holder_policy_loss, ppo_token_loss


def make_batch(batch: int, length: int, seed: int) -> tuple[torch.Tensor, ...]:
    """A synthetic minibatch: ratios exp(N(0, 0.1^2)), right-padded lengths uniform in 1..length."""
    generator = torch.Generator().manual_seed(seed)
    old_logp = -torch.rand(batch, length, generator=generator) * 3.0
    logp = old_logp + 0.1 * torch.randn(batch, length, generator=generator)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    mask = torch.arange(length)[None, :] < lengths[:, None]  # right-padded responses
    advantages = torch.randn(batch, generator=generator)
    return logp, old_logp, advantages, mask


def time_once(loss_fn: Callable[[torch.Tensor], torch.Tensor], logp: torch.Tensor) -> float:
    """Seconds for one forward + backward, from a fresh leaf."""
    leaf = logp.detach().requires_grad_(True)
    start = time.perf_counter()
    loss_fn(leaf).backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="samples B")
    parser.add_argument("--length", type=int, default=512, help="tokens per sample T")
    parser.add_argument("--repeats", type=int, default=200, help="timed repetitions of each loss")
    parser.add_argument("--warmup", type=int, default=20, help="untimed repetitions of each loss first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    logp, old_logp, advantages, mask = make_batch(args.batch, args.length, args.seed)
    candidates: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "ppo token-mean": lambda lp: ppo_token_loss(lp, old_logp, advantages, mask)[0],
        "holder seq clip p=0.5": lambda lp: holder_policy_loss(lp, old_logp, advantages, mask, 0.5)[0],
        "holder seq clip p=1e-3": lambda lp: holder_policy_loss(lp, old_logp, advantages, mask, 1e-3)[0],
        "holder seq clip p=0": lambda lp: holder_policy_loss(lp, old_logp, advantages, mask, 0.0)[0],
        "holder token clip p=0.5": lambda lp: holder_policy_loss(lp, old_logp, advantages, mask, 0.5, clip="token")[0],
    }
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for repeat in range(args.warmup + args.repeats):
        for name, loss_fn in candidates.items():  # interleaved: one of each per round
            elapsed = time_once(loss_fn, logp)
            if repeat >= args.warmup:
                times[name].append(elapsed)

    baseline = statistics.median(times["ppo token-mean"])
    print(
        f"B={args.batch} T={args.length} float32, {args.repeats} interleaved repeats, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
        f"({platform.machine()}), load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(f"{'loss':<26}{'median fwd+bwd (ms)':>22}{'vs PPO':>9}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<26}{median * 1e3:>22.3f}{median / baseline:>8.2f}x")


if __name__ == "__main__":
    main()
