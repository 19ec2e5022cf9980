"""Teacher-forced log-probs of recorded responses, under the masks they were sampled with.

Training needs log pi(y_t | ...) of the current, old and reference models for every response
token. Under constrained decoding the policy is the masked distribution, so a token's
log-prob is its logit minus the log-sum-exp over the allowed tokens only. Sequences are left
padded so that every response ends at the last position, and the LM head runs only on the
last positions (`logits_to_keep`), never on the prompts.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from agents.generation import length_buckets
from agents.prefix_cache import run_prefix, stack_rows


class Scored(NamedTuple):
    """Per-token results, right-aligned (B, R): row b's tokens fill its last len(responses[b]) columns."""

    logprobs: torch.Tensor  # log pi of each response token (0 where mask is false)
    mask: torch.Tensor  # bool: a real response token
    entropy: torch.Tensor | None  # entropy of the (masked) next-token distribution, if asked


def pad_allowed(allowed_sets: Sequence[Sequence[tuple[int, ...] | None]], length: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Allowed sets as a padded index tensor (B, T, K) (-1: padding) and a constrained flag (B, T)."""
    width = max((len(a) for row in allowed_sets for a in row if a is not None), default=1)
    index = torch.full((len(allowed_sets), length, width), -1, dtype=torch.long)
    constrained = torch.zeros(len(allowed_sets), length, dtype=torch.bool)
    for b, row in enumerate(allowed_sets):
        offset = length - len(row)  # responses are right-aligned
        for t, allowed in enumerate(row):
            if allowed is not None:
                index[b, offset + t, : len(allowed)] = torch.tensor(allowed)
                constrained[b, offset + t] = True
    return index, constrained


def response_logprobs(
    model,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    allowed_sets: Sequence[Sequence[tuple[int, ...] | None]] | None = None,
    *,
    temperature: float = 1.0,
    pad_id: int = 0,
    with_entropy: bool = False,
    prefix_lengths: Sequence[int] | None = None,
) -> Scored:
    """Log-probs of each response token under the masks they were sampled with (see `Scored`).

    `allowed_sets[b][t]` is the allowed token tuple before token t (None: free). Gradients
    flow to the model. Reductions run in float32. With `prefix_lengths`, the first
    `prefix_lengths[b]` prompt tokens of row b form a shared start: each distinct start runs
    through the model once (gradients included) and its rows attend to it, as in generation.
    """
    span = max(len(r) for r in responses)
    logits = _response_logits(model, prompts, responses, span, pad_id, prefix_lengths)
    logits = logits.float() / temperature  # (B, R, V): the logits that predict each response token
    device = logits.device
    targets = torch.tensor([[pad_id] * (span - len(r)) + list(r) for r in responses], device=device)
    token_logits = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    normaliser = torch.logsumexp(logits, dim=-1)
    entropy = _entropy(logits, normaliser) if with_entropy else None
    if allowed_sets is not None:
        index, constrained = pad_allowed(allowed_sets, span)
        index, constrained = index.to(device), constrained.to(device)
        allowed_logits = logits.gather(-1, index.clamp(min=0)).masked_fill(index < 0, float("-inf"))
        allowed_normaliser = torch.logsumexp(allowed_logits, dim=-1)
        normaliser = torch.where(constrained, allowed_normaliser, normaliser)
        if with_entropy:
            entropy = torch.where(constrained, _entropy(allowed_logits, allowed_normaliser), entropy)
    mask = torch.tensor([[0] * (span - len(r)) + [1] * len(r) for r in responses], dtype=torch.bool).to(device)
    logprobs = (token_logits - normaliser).masked_fill(~mask, 0.0)
    return Scored(logprobs, mask, entropy.masked_fill(~mask, 0.0) if with_entropy else None)


def _response_logits(model, prompts, responses, span: int, pad_id: int, prefix_lengths) -> torch.Tensor:
    """(B, span, V) logits before each response position, rows right-aligned. Rows of similar
    length run together (`length_buckets`), so one long prompt does not pad every other row."""
    prefix_lengths = list(prefix_lengths) if prefix_lengths else [0] * len(prompts)
    lengths = [len(p) - k + len(r) for p, k, r in zip(prompts, prefix_lengths, responses)]
    parts, order = [], []
    for rows in length_buckets(lengths):
        logits = _bucket_logits(model, [prompts[i] for i in rows], [responses[i] for i in rows], pad_id,
                                [prefix_lengths[i] for i in rows])
        parts.append(torch.nn.functional.pad(logits, (0, 0, span - logits.shape[1], 0)))
        order += rows
    stacked = torch.cat(parts)
    return stacked[torch.tensor(order).argsort().to(stacked.device)]


def _bucket_logits(model, prompts, responses, pad_id: int, prefix_lengths: list[int]) -> torch.Tensor:
    """(b, span_b, V) logits of one group of rows (see `_response_logits`)."""
    device = next(model.parameters()).device
    span = max(len(r) for r in responses)
    starts = [tuple(p[:k]) for p, k in zip(prompts, prefix_lengths)]
    tails = [list(p[k:]) + list(r) for p, k, r in zip(prompts, prefix_lengths, responses)]
    length = max(len(t) for t in tails)
    input_ids = torch.tensor([[pad_id] * (length - len(t)) + t for t in tails])
    tail_mask = torch.tensor([[0] * (length - len(t)) + [1] * len(t) for t in tails])
    width = max(prefix_lengths)
    cache = None
    if width:
        computed = {start: run_prefix(model, start) for start in dict.fromkeys(starts) if start}
        cache = stack_rows(model.config, [computed.get(start) for start in starts], width)
    start_mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in starts], dtype=torch.long)
    attention = torch.cat([start_mask.reshape(len(starts), width), tail_mask], dim=1)
    positions = ((attention.cumsum(-1) - 1).clamp(min=0))[:, width:]
    output = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                   position_ids=positions.to(device), cache=cache, logits_to_keep=span + 1)
    return output.logits[:, :-1]


def _entropy(logits: torch.Tensor, normaliser: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dim; -inf logits (masked tokens) count as 0."""
    logp = logits - normaliser.unsqueeze(-1)
    return -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)
