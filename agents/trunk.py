"""The frozen trunk below the trained top blocks, computed once per token.

When only the top n blocks train (`--finetune top`), the hidden states entering block -n are a
fixed function of the tokens, and generation computes them anyway. Recording them there lets
the update run just the top n blocks, forward and backward, instead of the whole model: on a
CPU the trunk's forward pass is most of an update's cost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class TrunkRecorder:
    """Inside `with`, records the hidden states entering block -n at every model call
    (`calls[i]`: (batch, tokens of call i, hidden), detached)."""

    def __init__(self, model, top_layers: int):
        self.block = model.get_decoder().layers[-top_layers]
        self.calls: list[torch.Tensor] = []

    def _record(self, module, args, kwargs) -> None:
        self.calls.append((args[0] if args else kwargs["hidden_states"]).detach())

    def __enter__(self) -> TrunkRecorder:
        self.calls = []
        self._handle = self.block.register_forward_pre_hook(self._record, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


@contextlib.contextmanager
def top_blocks(model, top_layers: int) -> Iterator[None]:
    """Inside, `model` is its top n blocks plus final norm and head: `inputs_embeds` are the
    hidden states entering block -n, and a KV cache holds n layers (numbered 0..n-1)."""
    body = model.get_decoder()
    layers = body.layers
    top = layers[-top_layers:]
    numbers = [block.self_attn.layer_idx for block in top]
    body.layers = top
    try:
        for index, block in enumerate(top):
            block.self_attn.layer_idx = index
        yield
    finally:
        body.layers = layers
        for block, number in zip(top, numbers):
            block.self_attn.layer_idx = number


@torch.no_grad()
def top_blocks_reproduce(model, top_layers: int, tolerance: float = 1e-4) -> bool:
    """Whether the top blocks run on recorded trunk states give the whole model's logits.

    True for Llama-like models; false where a model transforms `inputs_embeds` inside its
    forward (Granite multiplies them, for one), where trunk reuse must stay off.
    """
    device = next(model.parameters()).device
    ids = torch.arange(3, 19, device=device).unsqueeze(0) % model.config.vocab_size
    try:
        with TrunkRecorder(model, top_layers) as recorder:
            whole = model(input_ids=ids).logits
        with top_blocks(model, top_layers):
            top = model(inputs_embeds=recorder.calls[0]).logits
    except (AttributeError, TypeError, IndexError):
        return False
    return bool(torch.allclose(whole, top, atol=tolerance, rtol=tolerance))
