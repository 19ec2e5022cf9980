"""Where responses come from: a generation engine turns prompts (token ids) into `Generation`s.

Every engine keeps one contract, so that a policy's decisions, transcripts and training records
do not depend on which engine produced them:

- one `Generation` per prompt; row b samples with its own seed `seeds[b]` (a function of the
  episode and the turn), so an episode never depends on the others in its batch;
- under `constraints[b]` only the tokens that constraint allows are sampled, and the recorded
  log-probs are those of the distribution actually sampled from (masked, tempered, top-p);
- a response that ended with the end-of-sequence token keeps it as its last id.

Engines:

- `HFEngine`: transformers `generate` on the very model being trained (`agents.generation`),
  with our prefix cache and, under finetune=top, the trunk states training reuses;
- `agents.vllm_engine.VLLMEngine`: vLLM, with its own copy of the weights that `sync` updates.

The same seed gives the same response twice on one engine; two engines draw differently (their
samplers differ), which is why training rescores old log-probs when another engine generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from agents.constrained import ActionConstraint
from agents.generation import Generation, generate
from agents.prefix_cache import PrefixCache


class GenerationEngine(Protocol):
    name: str
    # True when the engine samples from its own copy of the weights (training must rescore)
    separate_weights: bool

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        seeds: Sequence[int],
        constraints: Sequence[ActionConstraint | None],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop_strings: Sequence[str],
        prefix_lengths: Sequence[int] | None,
    ) -> list[Generation]: ...

    def prefix_states(self, prefix: tuple[int, ...]) -> torch.Tensor | None:
        """Trunk states over a shared prompt start, where the engine records them (else None)."""
        ...


class HFEngine:
    """transformers generation on the model itself: its weights are always the current ones.

    `prefix_cache`: run the model over each game's shared prompt start once (step context);
    `trunk_layers`: also record the hidden states entering that block from the top (see
    `agents.trunk`), which training under finetune=top reuses.
    """

    name = "hf"
    separate_weights = False

    def __init__(self, model, tokenizer, *, prefix_cache: bool = True, trunk_layers: int | None = None):
        self.model, self.tokenizer, self.trunk_layers = model, tokenizer, trunk_layers
        self.prefix_cache = PrefixCache(model, trunk_layers=trunk_layers) if prefix_cache else None

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        seeds: Sequence[int],
        constraints: Sequence[ActionConstraint | None],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop_strings: Sequence[str],
        prefix_lengths: Sequence[int] | None,
    ) -> list[Generation]:
        return generate(
            self.model,
            self.tokenizer,
            prompts,
            seeds,
            constraints,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            stop_strings=stop_strings,
            prefix_lengths=prefix_lengths,
            prefix_cache=self.prefix_cache,
            trunk_layers=self.trunk_layers,
        )

    def prefix_states(self, prefix: tuple[int, ...]) -> torch.Tensor | None:
        if not self.trunk_layers or not prefix or self.prefix_cache is None:
            return None
        return self.prefix_cache.trunk_states(prefix)
