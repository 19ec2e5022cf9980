"""Teacher-forced log-probs of recorded responses, under the masks they were sampled with.

Training needs log pi(y_t | ...) of the current, old and reference models for every response
token. Under constrained decoding the policy is the masked distribution, so a token's
log-prob is its logit minus the log-sum-exp over the allowed tokens only. Sequences are left
padded so that every response ends at the last position, and the LM head runs only on the
response positions, never on the prompts; where the head is a plain projection, only onto the
tokens whose logits are needed.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch.distributed.tensor import DTensor

from agents.generation import length_buckets
from agents.prefix_cache import KV_CACHE, run_prefix, stack_rows
from agents.trunk import TrunkRecorder, top_blocks


class Scored(NamedTuple):
    """Per-token results, right-aligned (B, R): row b's tokens fill its last len(responses[b]) columns."""

    logprobs: torch.Tensor  # log pi of each response token (0 where mask is false)
    mask: torch.Tensor  # bool: a real response token
    entropy: torch.Tensor | None  # entropy of the (masked) next-token distribution, if asked


class TrunkStates(NamedTuple):
    """Recorded hidden states entering block -top_layers (see `agents.trunk`): with them, scoring
    runs only the top blocks."""

    top_layers: int
    prefixes: Sequence[torch.Tensor | None]  # per row: over its shared prompt start (None: none)
    tails: Sequence[torch.Tensor]  # per row: over the rest of the prompt and the response but its last token


def pad_allowed(
    allowed_sets: Sequence[Sequence[tuple[int, ...] | None]], length: int
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
    trunk: TrunkStates | None = None,
    single_pass: bool = False,
) -> Scored:
    """Log-probs of each response token under the masks they were sampled with (see `Scored`).

    `allowed_sets[b][t]` is the allowed token tuple before token t (None: free). Gradients
    flow to the model. Reductions run in float32. With `prefix_lengths`, the first
    `prefix_lengths[b]` prompt tokens of row b form a shared start: each distinct start runs
    through the model once (gradients included) and its rows attend to it, as in generation.
    With `trunk`, only the top blocks run, on the recorded states (same result, less work).
    `single_pass`: one forward over all rows, without length buckets or shared starts (the same
    result, more padding): FSDP2 needs every rank to make as many forwards as the others.
    """
    if single_pass:
        prefix_lengths = None
    span = max(len(r) for r in responses)
    weight = output_matrix(model)
    head = _ProjectionHead(weight) if weight is not None else _LogitsHead()
    outputs = _response_outputs(
        model, prompts, responses, span, pad_id, prefix_lengths, trunk, weight is not None, single_pass
    )
    if weight is None:
        outputs = at_least_float32(outputs)  # logits: reductions in float32 or wider
    device = outputs.device
    targets = torch.tensor([[pad_id] * (span - len(r)) + list(r) for r in responses], device=device)
    mask = torch.tensor([[0] * (span - len(r)) + [1] * len(r) for r in responses], dtype=torch.bool).to(device)
    token_logits = head.tokens(outputs, targets.unsqueeze(-1)).squeeze(-1) / temperature
    if allowed_sets is not None:
        index, constrained = (t.to(device) for t in pad_allowed(allowed_sets, span))
    else:
        index = torch.full((len(responses), span, 1), -1, dtype=torch.long, device=device)
        constrained = torch.zeros_like(mask)
    # constrained tokens: a softmax over the allowed tokens only; free tokens: over the vocabulary
    allowed_logits = (head.tokens(outputs, index.clamp(min=0)) / temperature).masked_fill(index < 0, float("-inf"))
    normaliser = torch.logsumexp(allowed_logits, dim=-1)
    entropy = _entropy(allowed_logits, normaliser) if with_entropy else None
    free = mask & ~constrained
    if free.any():
        logits = head.full(outputs[free]) / temperature  # (free tokens, V)
        free_normaliser = torch.logsumexp(logits, dim=-1)
        normaliser = normaliser.masked_scatter(free, free_normaliser)
        if with_entropy:
            entropy = entropy.masked_scatter(free, _entropy(logits, free_normaliser))
    logprobs = (token_logits - normaliser).masked_fill(~mask, 0.0)
    return Scored(logprobs, mask, entropy.masked_fill(~mask, 0.0) if with_entropy else None)


def at_least_float32(values: torch.Tensor) -> torch.Tensor:
    """`values` in float32, or as they are if wider: bf16 logits are reduced in float32, and a
    float64 model (the tests' exact comparisons) keeps its precision."""
    return values.to(torch.promote_types(values.dtype, torch.float32))


class _LogitsHead:
    """Scores from the model's own logits (B, R, V), in float32 or wider."""

    @staticmethod
    def tokens(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return logits.gather(-1, index)

    @staticmethod
    def full(logits: torch.Tensor) -> torch.Tensor:
        return logits


class _ProjectionHead:
    """Scores from final hidden states (B, R, H): only the logits asked for are computed. Under
    constrained decoding that is a few dozen allowed tokens instead of the whole vocabulary,
    whose projection would otherwise cost more than the top blocks of the model."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight

    def tokens(self, hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return at_least_float32(torch.einsum("brh,brkh->brk", hidden, self.weight[index]))

    def full(self, hidden: torch.Tensor) -> torch.Tensor:
        return at_least_float32(hidden @ self.weight.T)


_OUTPUT_MATRICES: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def output_matrix(model) -> torch.Tensor | None:
    """The (V, H) output embedding when the model's logits are exactly `final hidden @ it.T`
    (checked once per model); None where the model scales or caps its logits (Granite, Gemma 2),
    or where FSDP2 shards it: its whole weight then exists only inside the model's forward."""
    head = model.get_output_embeddings()
    if isinstance(head.weight, DTensor):
        return None
    if model not in _OUTPUT_MATRICES:
        _OUTPUT_MATRICES[model] = isinstance(head, torch.nn.Linear) and head.bias is None and _plain_projection(model)
    return head.weight if _OUTPUT_MATRICES[model] else None


@torch.no_grad()
def _plain_projection(model) -> bool:
    ids = (torch.arange(3, 11, device=next(model.parameters()).device) % model.config.vocab_size).unsqueeze(0)
    logits = model(input_ids=ids).logits
    hidden = model.get_decoder()(input_ids=ids).last_hidden_state
    return bool(torch.allclose(logits, model.get_output_embeddings()(hidden), atol=1e-4, rtol=1e-4))


def _response_outputs(
    model,
    prompts,
    responses,
    span: int,
    pad_id: int,
    prefix_lengths,
    trunk: TrunkStates | None,
    hidden: bool,
    single_pass: bool = False,
) -> torch.Tensor:
    """(B, span, V) logits, or with `hidden` (B, span, H) final hidden states, before each
    response position, rows right-aligned. Rows of similar length run together
    (`length_buckets`), so one long prompt does not pad every other row; or, with
    `single_pass`, all in one forward."""
    prefix_lengths = list(prefix_lengths) if prefix_lengths else [0] * len(prompts)
    lengths = [len(p) - k + len(r) for p, k, r in zip(prompts, prefix_lengths, responses)]
    parts, order = [], []
    for rows in [list(range(len(prompts)))] if single_pass else length_buckets(lengths):
        bucket_trunk = (
            None
            if trunk is None
            else TrunkStates(trunk.top_layers, [trunk.prefixes[i] for i in rows], [trunk.tails[i] for i in rows])
        )
        outputs = _bucket_outputs(
            model,
            [prompts[i] for i in rows],
            [responses[i] for i in rows],
            pad_id,
            [prefix_lengths[i] for i in rows],
            bucket_trunk,
            hidden,
        )
        parts.append(torch.nn.functional.pad(outputs, (0, 0, span - outputs.shape[1], 0)))
        order += rows
    stacked = torch.cat(parts)
    return stacked[torch.tensor(order).argsort().to(stacked.device)]


def _bucket_outputs(
    model, prompts, responses, pad_id: int, prefix_lengths: list[int], trunk: TrunkStates | None, hidden: bool
) -> torch.Tensor:
    """(b, span_b, V or H) outputs of one group of rows (see `_response_outputs`). A row's input is
    its prompt after the shared start and its response but the last token (never fed back)."""
    device = next(model.parameters()).device
    span = max(len(r) for r in responses)
    starts = [tuple(p[:k]) for p, k in zip(prompts, prefix_lengths)]
    if trunk is None:
        tails = [list(p[k:]) + list(r[:-1]) for p, k, r in zip(prompts, prefix_lengths, responses)]
        length = max(len(t) for t in tails)
        inputs = {"input_ids": torch.tensor([[pad_id] * (length - len(t)) + t for t in tails]).to(device)}
        start_inputs = dict(zip(starts, starts))
    else:
        tails = list(trunk.tails)
        length = max(len(t) for t in tails)
        states = [torch.nn.functional.pad(t, (0, 0, length - len(t), 0)) for t in tails]
        inputs = {"inputs_embeds": torch.stack(states).to(device)}
        start_inputs = dict(zip(starts, trunk.prefixes))
    tail_mask = torch.tensor([[0] * (length - len(t)) + [1] * len(t) for t in tails])
    width = max(prefix_lengths)
    start_mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in starts], dtype=torch.long)
    attention = torch.cat([start_mask.reshape(len(starts), width), tail_mask], dim=1)
    positions = ((attention.cumsum(-1) - 1).clamp(min=0))[:, width:]
    with top_blocks(model, trunk.top_layers) if trunk else contextlib.nullcontext():
        cache = None
        if width:
            computed = {start: run_prefix(model, start_inputs[start]) for start in dict.fromkeys(starts) if start}
            cache = stack_rows(model.config, [computed.get(start) for start in starts], width)
        context = {"attention_mask": attention.to(device), "position_ids": positions.to(device), KV_CACHE: cache}
        if hidden:
            return model.get_decoder()(**inputs, **context).last_hidden_state[:, -span:]
        return model(**inputs, **context, logits_to_keep=span).logits


@torch.no_grad()
def record_trunk_states(
    model,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    top_layers: int,
    *,
    pad_id: int = 0,
    prefix_lengths: Sequence[int] | None = None,
) -> TrunkStates:
    """The trunk states a rollout would have recorded for these rows, from one pass without
    gradients. Behaviour cloning trains on demonstrations no rollout played, for several
    epochs: with these, every epoch runs only the top blocks."""
    prefix_lengths = list(prefix_lengths) if prefix_lengths else [0] * len(prompts)
    tails = [len(p) - k + len(r) - 1 for p, k, r in zip(prompts, prefix_lengths, responses)]
    prefixes: list[torch.Tensor | None] = [None] * len(prompts)
    rows_states: list[torch.Tensor | None] = [None] * len(prompts)
    for rows in length_buckets(tails):
        starts = [tuple(prompts[i][: prefix_lengths[i]]) for i in rows]
        with TrunkRecorder(model, top_layers) as recorder:
            _bucket_outputs(
                model,
                [prompts[i] for i in rows],
                [responses[i] for i in rows],
                pad_id,
                [prefix_lengths[i] for i in rows],
                None,
                hidden=True,
            )
        # `_bucket_outputs` runs each distinct non-empty start once, in order, then the rows' tails
        *start_calls, tail_call = recorder.calls
        start_states = dict(zip([start for start in dict.fromkeys(starts) if start], start_calls))
        for position, row in enumerate(rows):
            prefixes[row] = start_states[starts[position]][0] if starts[position] else None
            rows_states[row] = tail_call[position, tail_call.shape[1] - tails[row] :]
    return TrunkStates(top_layers, prefixes, rows_states)


def _entropy(logits: torch.Tensor, normaliser: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dim; -inf logits (masked tokens) count as 0."""
    logp = logits - normaliser.unsqueeze(-1)
    return -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)
