"""Keys and values of shared prompt beginnings, computed once and reused across turns.

Every step-wise prompt of a game starts with the same tokens (system prompt, task, room), and a
group plays each game G times for up to `max_steps` turns. On a CPU the prompt pass dominates a
turn, so the model runs over a shared beginning once; later turns only run their own tail.
The stored keys and values belong to one state of the weights: the cache empties itself when
any parameter has been modified in place since (an optimizer step, a loaded checkpoint).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from transformers import DynamicCache

KeysValues = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (1, kv heads, length, head dim) each


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def run_prefix(model, prefix: Sequence[int]) -> KeysValues:
    """The model's keys and values over `prefix` (with gradients where grad mode is on)."""
    device = next(model.parameters()).device
    cache = model(input_ids=torch.tensor([list(prefix)], device=device), use_cache=True, logits_to_keep=1).cache
    return [(layer.keys, layer.values) for layer in cache.layers]


class PrefixCache:
    """An LRU store of per-prefix keys and values for one model."""

    def __init__(self, model, capacity: int = 64):
        self.model, self.capacity = model, capacity
        self._entries: OrderedDict[tuple[int, ...], KeysValues] = OrderedDict()
        self._weights_version = self._version()

    def _version(self) -> int:
        # torch bumps a tensor's _version on every in-place write, which is how optimizers and
        # load_state_dict / copy_ change parameters
        return sum(parameter._version for parameter in self.model.parameters())

    def __len__(self) -> int:
        return len(self._entries)

    @torch.no_grad()
    def keys_values(self, prefix: tuple[int, ...]) -> KeysValues:
        """The prefix's keys and values, computed on a miss."""
        version = self._version()
        if version != self._weights_version:
            self._entries.clear()
            self._weights_version = version
        if prefix in self._entries:
            self._entries.move_to_end(prefix)
            return self._entries[prefix]
        entry = run_prefix(self.model, prefix)
        self._entries[prefix] = entry
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return entry

    def batch(self, prefixes: Sequence[tuple[int, ...]]) -> DynamicCache:
        """One cache for a batch: row b holds prefixes[b], left-padded to the longest (empty: all padding)."""
        return stack_rows(self.model.config, [self.keys_values(p) if p else None for p in prefixes],
                          max(len(p) for p in prefixes))


def stack_rows(config, rows: Sequence[KeysValues | None], width: int) -> DynamicCache:
    """A batch cache whose row b holds rows[b] (None: nothing) left-padded with zeros to `width`.

    Differentiable: gradients reach the keys and values of every row (training runs a shared
    prompt start once per micro-batch this way)."""
    template = next(row for row in rows if row is not None)
    cache = DynamicCache(config=config)
    for layer, (keys, values) in enumerate(template):
        empty = (keys[..., :0, :], values[..., :0, :])
        per_row = [row[layer] if row is not None else empty for row in rows]
        cache.update(_left_padded([k for k, _ in per_row], width), _left_padded([v for _, v in per_row], width), layer)
    return cache


def _left_padded(tensors: list[torch.Tensor], width: int) -> torch.Tensor:
    """(1, heads, length_b, dim) tensors zero-padded on the left to `width` and stacked on the batch axis."""
    return torch.cat([torch.nn.functional.pad(t, (0, 0, width - t.shape[2], 0)) for t in tensors])
