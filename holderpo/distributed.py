"""Training over several processes: which process this is, and the few collectives the trainer needs.

`torchrun --nproc_per_node N -m holderpo.cli train ...` starts N copies of the trainer, one per
rank; torchrun sets RANK and WORLD_SIZE, and `join_process_group` connects them (gloo on the CPU,
NCCL on GPUs). A plain `holderpo train` is one process and every collective here is a no-op, so
the trainer reads the same either way.

How the work is split, so that N ranks compute what one process would:

- rollouts: each rank plays whole groups (group g on rank g % N), so group advantages need no
  communication; evaluations split their episodes by index. The records are gathered for the
  transcripts and metrics, which rank 0 writes;
- updates: every rank draws the same minibatches over the whole batch (`SampleLayout`) and trains
  on the samples it holds; the summed gradient is the one-process gradient (`holderpo.parallel`).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

# a rank waits this long for the others at a collective (a slow evaluation on one of them included)
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run folder: logs, transcripts, checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def gather(self, item: T) -> list[T]:
        """Every rank's `item`, in rank order, on every rank (picklable objects)."""
        if not self.distributed:
            return [item]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, item)
        return gathered

    def broadcast(self, item: T) -> T:
        """Rank 0's `item`, on every rank."""
        if not self.distributed:
            return item
        box = [item]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on at least one rank."""
        if not self.distributed:
            return flag
        value = torch.tensor([int(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def max(self, number: int) -> int:
        if not self.distributed:
            return number
        value = torch.tensor([number])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return int(value.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def on_main(self, work: Callable[[], None]) -> None:
        """Run `work` on rank 0 while the others wait; a ValueError it raises is raised on every
        rank, so that bad input stops all of them with rank 0's message instead of leaving the
        others waiting at their next collective."""
        failure = None
        if self.is_main:
            try:
                work()
            except ValueError as error:
                failure = str(error)
        failure = self.broadcast(failure)
        if failure is not None:
            raise ValueError(failure)

    def owns(self, key: int) -> bool:
        """Whether the item numbered `key` (a group, an episode) is this rank's to play."""
        return key % self.world_size == self.rank


SINGLE = Ranks()


def launched_ranks() -> Ranks:
    """The ranks torchrun describes in the environment (one process when it did not start us)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return Ranks(int(os.environ.get("RANK", "0")), world_size)


def join_process_group(device: str) -> Ranks:
    """Connect to the other ranks torchrun started (gloo for CPU training, NCCL for CUDA); a
    process started without torchrun is rank 0 of 1 and joins nothing."""
    ranks = launched_ranks()
    if not ranks.distributed or dist.is_initialized():
        return ranks
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    return ranks


def rank_device(device: str, ranks: Ranks) -> str:
    """The device this rank trains on: each process on a node takes its own GPU ("cuda" is
    cuda:LOCAL_RANK under torchrun); a device named exactly, or the CPU, is used as given."""
    if device == "cuda" and ranks.distributed:
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@dataclass(frozen=True)
class SampleLayout:
    """An iteration's training samples as one batch over all ranks, in the order one process
    would hold them (group by group), so that every rank draws the same minibatches.

    `measures[g]` is how much global sample g counts in the policy loss's mean (its weight, or
    its tokens: `holderpo.losses.policy_measure`) and `tokens[g]` its number of loss tokens;
    `local[g]` the index of sample g in this rank's own list, for the samples this rank holds.
    """

    measures: tuple[float, ...]
    tokens: tuple[int, ...]
    local: dict[int, int]

    @property
    def count(self) -> int:
        return len(self.measures)

    def held(self, minibatch: Sequence[int]) -> list[int]:
        """This rank's samples among the global sample indices of `minibatch`, as local indices."""
        return [self.local[g] for g in minibatch if g in self.local]

    def measure(self, minibatch: Sequence[int]) -> float:
        """The policy-loss measure of a whole minibatch, over every rank's share of it."""
        return sum(self.measures[g] for g in minibatch)

    def token_count(self, minibatch: Sequence[int]) -> int:
        """The loss tokens of a whole minibatch, over every rank's share of it."""
        return sum(self.tokens[g] for g in minibatch)


def sample_layout(per_rank: Sequence[Sequence[tuple[int, float, int]]], rank: int) -> SampleLayout:
    """The layout from each rank's (group, measure, loss tokens) per sample, in its order.

    One process orders its samples by group (its episodes come group by group, each group's in
    order); a group lives on one rank, so a stable sort of all ranks' samples by group rebuilds
    that order exactly.
    """
    tagged = [
        (group, owner, index, measure, tokens)
        for owner, samples in enumerate(per_rank)
        for index, (group, measure, tokens) in enumerate(samples)
    ]
    tagged.sort(key=lambda item: item[:3])
    local = {position: index for position, (_, owner, index, *_) in enumerate(tagged) if owner == rank}
    return SampleLayout(tuple(item[3] for item in tagged), tuple(item[4] for item in tagged), local)
