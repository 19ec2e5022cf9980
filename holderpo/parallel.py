"""How the trained weights are shared between training processes: replicated, or sharded by FSDP2.

- `Replicated` (top-layer and LoRA training, and every one-process run): each rank holds all
  the weights; after the micro-batches of an optimizer step one all-reduce sums the gradients,
  so every rank takes the same step. This is DDP's algorithm, without wrapping the model in
  `DistributedDataParallel`: under finetune=top the update runs only the top blocks on recorded
  trunk states, bypassing the wrapper's forward its reducer relies on, and ranks hold different
  numbers of samples per minibatch, where DDP expects one synchronised backward per rank. The
  trained tensors are small (4 blocks, or adapters): one all-reduce per step is all they need.
- `FullySharded` (full fine-tuning on several ranks): torch's FSDP2 (`fully_shard` on every
  decoder block, then the model) keeps 1/N of each weight, its gradient and its optimizer state
  on each rank, in float32 (the forward's precision is the run's autocast `dtype`). Forwards and
  backwards all-gather and reduce-scatter, so ranks must run them in lockstep: `lockstep` pads a
  rank's micro-batches to the most any rank has. Generation and scoring without gradients run
  inside `gathered()`, which all-gathers the weights once, so each rank may then make as many
  forwards as its own episodes need.

Checkpoints hold whole tensors in one process's layout (`full_weights`, `full_optimizer_state`),
so a run resumes on any number of ranks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, distribute_tensor

from holderpo.distributed import Ranks
from holderpo.modeling import trainable_parameters

T = TypeVar("T")


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a possibly sharded one (a collective when it is sharded)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def shaped_like(target: torch.Tensor, whole_tensor: torch.Tensor) -> torch.Tensor:
    """`whole_tensor` laid out as `target` is: this rank's shard of it when `target` is sharded."""
    if isinstance(target, DTensor):
        return distribute_tensor(whole_tensor.to(target.dtype), target.device_mesh, target.placements)
    return whole_tensor


class Replicated:
    """Every rank holds every weight; gradients are summed by one all-reduce per step."""

    # losses are scaled so that the ranks' gradients sum to the one-process gradient
    loss_scale = 1.0
    # whether every training forward is a collective that all ranks must make together
    lockstep_forwards = False

    def __init__(self, ranks: Ranks):
        self.ranks = ranks

    def wrap(self, model):
        return model

    def lockstep(self, chunks: Sequence[T]) -> list[T | None]:
        """The micro-batches this rank runs in an optimizer step (any count: no collective inside)."""
        return list(chunks)

    def reduce_gradients(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Sum every rank's gradients, flattened into one buffer (one message per step)."""
        if not self.ranks.distributed:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(parameters, grads):
            p.grad = flat[offset : offset + g.numel()].view_as(g)
            offset += g.numel()

    @contextlib.contextmanager
    def gathered(self, model) -> Iterator[None]:
        yield

    def full_weights(self, model) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in trainable_parameters(model).items()}

    def full_model_state(self, model) -> dict[str, torch.Tensor] | None:
        """The model's whole state for `save_pretrained` (None: the model saves its own)."""
        return None

    def full_optimizer_state(self, optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def load_optimizer_state(self, optimizer, saved: dict[str, Any]) -> None:
        optimizer.load_state_dict(saved)


class FullySharded(Replicated):
    """FSDP2: each rank holds a shard of every weight, gradient and optimizer state."""

    def __init__(self, ranks: Ranks):
        super().__init__(ranks)
        # FSDP2 averages gradients over ranks; the losses are built to be summed
        self.loss_scale = float(ranks.world_size)
        self.lockstep_forwards = True
        self._modules: list = []

    def wrap(self, model):
        from torch.distributed.fsdp import fully_shard

        for block in model.model.layers:
            fully_shard(block)
        fully_shard(model)
        self._modules = [module for module in model.modules() if hasattr(module, "unshard")]
        return model

    def lockstep(self, chunks: Sequence[T]) -> list[T | None]:
        """This rank's micro-batches, padded with None (an idle forward and backward) to the most
        any rank has: every forward and backward is a collective here."""
        return list(chunks) + [None] * (self.ranks.max(len(chunks)) - len(chunks))

    def reduce_gradients(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Nothing to do: each backward reduce-scattered its gradients already."""

    @contextlib.contextmanager
    def gathered(self, model) -> Iterator[None]:
        """All-gather the weights once (every rank at once), keep them whole through any number
        of forwards, then free them: generation and scoring without lockstep."""
        for module in self._modules:
            module.unshard()
            module.set_reshard_after_forward(False)
        try:
            yield
        finally:
            for module in self._modules:
                module.reshard()
                module.set_reshard_after_forward(True)

    def full_weights(self, model) -> dict[str, torch.Tensor]:
        return {name: whole(p.detach()).clone() for name, p in trainable_parameters(model).items()}

    def full_model_state(self, model) -> dict[str, torch.Tensor] | None:
        return {name: whole(tensor) for name, tensor in model.state_dict().items()}

    def full_optimizer_state(self, optimizer) -> dict[str, Any]:
        saved = optimizer.state_dict()
        state = {index: {key: whole(value) for key, value in entry.items()} for index, entry in saved["state"].items()}
        return {"state": state, "param_groups": saved["param_groups"]}

    def load_optimizer_state(self, optimizer, saved: dict[str, Any]) -> None:
        """A whole optimizer state (any number of ranks saved it) sharded as this rank's weights are."""
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        state = {}
        for index, entry in saved["state"].items():
            target = parameters[index]
            state[index] = {
                key: shaped_like(target, value) if value.shape == target.shape else value  # `step` is a scalar
                for key, value in entry.items()
            }
        optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def weight_sharing(finetune: str, ranks: Ranks) -> Replicated:
    """FSDP2 for full fine-tuning over several ranks; replicated weights otherwise."""
    if ranks.distributed and finetune == "full":
        return FullySharded(ranks)
    return Replicated(ranks)
