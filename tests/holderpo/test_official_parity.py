"""Parity of one whole update with the published semantics, in float64.

What this proves: for each objective we ship under the names of published methods (HölderPO with
its sequence clip and its token clip, GRPO in the paper's form and in verl's, GSPO, GMPO), one
optimizer step of our trainer on a fixed batch of step-wise ALFWorld episodes computes the same
loss and the same gradient of every trained weight as the method's official definition, to 1e-6.
The batch holds what the official recipe has to get right: a group that mixes a win with losses
and one where only a format penalty separates the rows, episodes of 1 to 4 turns, responses of
different lengths, one without any tags, one without a thought, one drifting into Chinese, old
log-probs that put some ratios outside every clip range (asserted), a KL penalty to a reference
that differs from the trained weights, an entropy bonus, and two micro-batches of accumulation.

Ours runs through the trainer itself: records -> `Trainer.training_batch` (rewards, step-row
group advantages, samples) -> `Trainer.reference_logprobs` -> `Trainer.optimizer_step`
(micro-batches, `micro_batch_loss`, backward), on the trainer's model turned float64.

The reference below is written from the papers and from verl / verl-agent's published formulas,
and imports nothing from holderpo/ or agents/ for the math: format check, scores, group statistics,
log-probs (a plain forward over prompt + response), entropies, every policy loss, the KL and the
accumulation are computed here again, on copies of the weights taken before the update. Sharing
code with the implementation under test would let one mistake pass on both sides.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from agents.generation import Generation
from agents.llm_policy import DecodingConfig, LLMPolicy
from agents.parsing import parse_output
from agents.policy import TokenRecord
from agents.prompts import PromptConfig
from holderpo.config import load_config
from holderpo.modeling import trainable_parameters
from holderpo.trainer import Trainer
from rollouts.records import EpisodeRecord, TurnRecord
from tests.conftest import FIXTURE_GAMES, TEST_RUN_OPTIONS, random_llama

# What separates the two sides is rounding, ~1e-8 at most against this bar: our minibatches hold
# the old log-probs, advantages and reference log-probs in float32 (`holderpo.samples.Minibatch`),
# and transformers' Llama RMSNorm normalises in float32 even in a float64 model, so the first
# layer's gradients differ by ~4e-9 where ours sums a shared prompt start's gradients before it.
TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}
TEMPERATURE = 0.8
KL_COEF = 0.05
ENTROPY_COEF = 0.01
WIN_REWARD, INVALID_PENALTY = 10.0, 0.1
INIT_RANGE, PERTURBATION = 0.2, 0.05  # the starting weights' scale, and the policy's distance from them


# -- the fixed batch -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    observation: str
    response: str
    stop: bool = True  # the sampler stopped at "</action>" (else the end-of-sequence token ends it)


@dataclass(frozen=True)
class Episode:
    game: str
    task: str
    group: int
    won: bool
    steps: tuple[Step, ...]
    admissible: tuple[str, ...]


KITCHEN = ("go to countertop 1", "go to table 1", "open fridge 1", "take mug 1 from countertop 1", "look")
BEDROOM = ("go to desk 1", "go to bed 1", "take book 1 from desk 1", "examine book 1", "look")

EPISODES = (
    # group 0: one win among two losses
    Episode(
        "kitchen",
        "put a clean mug in coffeemachine.",
        0,
        True,
        (
            Step(
                "You are in the middle of a room.",
                "<think>mugs are kept on counters</think><action>go to countertop 1</action>",
            ),
            Step(
                "On the countertop 1, you see a mug 1.",
                "<think>there it is, I should take it</think><action>take mug 1 from countertop 1</action>",
            ),
        ),
        KITCHEN,
    ),
    Episode(
        "kitchen",
        "put a clean mug in coffeemachine.",
        0,
        False,
        (
            Step("You are in the middle of a room.", "go to the sink and look around", stop=False),  # no tags
            Step("Nothing happens.", "<action>open fridge 1</action>"),  # a command but no thought
            Step("You open the fridge 1.", "<think>the apple is on the table</think><action>go to table 1</action>"),
        ),
        KITCHEN,
    ),
    Episode(
        "kitchen",
        "put a clean mug in coffeemachine.",
        0,
        False,
        (Step("You are in the middle of a room.", "<think>look first</think><action>look</action>"),),
        KITCHEN,
    ),
    # group 1: both lost; only the format penalty of one row tells the rows apart
    Episode(
        "bedroom",
        "examine the book with the desklamp.",
        1,
        False,
        (
            Step("You are in a bedroom.", "<think>books lie on desks</think><action>go to desk 1</action>"),
            Step(
                "On the desk 1, you see a book 1.",
                "<think>我 should take the book</think><action>take book 1 from desk 1</action>",
            ),
            Step("Nothing happens.", "<think>maybe the bed</think><action>go to bed 1</action>"),
            Step(
                "On the bed 1, you see nothing.",
                "<think>back to the desk</think><action>go to desk 1</action>",
                stop=False,
            ),
        ),
        BEDROOM,
    ),
    Episode(
        "bedroom",
        "examine the book with the desklamp.",
        1,
        False,
        (
            Step("You are in a bedroom.", "<think>the bed first</think><action>go to bed 1</action>"),
            Step("On the bed 1, you see nothing.", "<think>now the desk, I think</think><action>go to desk 1</action>"),
        ),
        BEDROOM,
    ),
)
ROWS = sum(len(e.steps) for e in EPISODES)  # 12 step rows: two micro-batches of 6


def _log_ratio_offsets(row: int, length: int) -> torch.Tensor:
    """The fixed log-ratio log pi - log pi_old of each token of a row: a shift per row and a
    ripple along it, large enough to leave every clip range somewhere; row 4 (a losing row) also
    carries one token with ratio e^1.3 > 3, past verl's dual clip."""
    shifts = (0.3, -0.1, 0.35, -0.3, 0.05, -0.25, 0.3, -0.35, 0.1, -0.2, 0.25, 0.0)
    t = torch.arange(length, dtype=torch.float64)
    offsets = shifts[row] + 0.2 * torch.sin(1.3 * t + 0.7 * row)
    if row == 4:
        offsets[length // 2] = 1.3
    return offsets


@dataclass
class OfficialBatch:
    """The batch as the reference sees it, one entry per step row in episode and turn order."""

    rows: list[tuple[list[int], list[int]]]  # (prompt, response) token ids
    prefix_lengths: list[int]  # the game's shared prompt start (what our policy records)
    old: list[torch.Tensor]  # old log-probs: the current model's, minus the fixed log-ratios
    ref: list[torch.Tensor]  # the reference model's log-probs
    advantages: list[float]


@dataclass
class Weights:
    directory: str  # the starting model as a checkpoint folder (what the trainer loads)
    reference: torch.nn.Module  # the starting model in float64: the KL reference
    current: torch.nn.Module  # the same after a fixed perturbation: the policy the update trains


# -- the official semantics, float64 ---------------------------------------------------------------
def official_format_ok(text: str) -> bool:
    """verl-agent's ALFWorld projection: both action tags, both think tags, no CJK character."""
    tags = ("<action>", "</action>", "<think>", "</think>")
    return all(tag in text for tag in tags) and not any("\u4e00" <= ch <= "\u9fff" for ch in text)


def official_advantages(episodes) -> list[float]:
    """One score per step row, 10 * won - 0.1 * format failure; GRPO across the steps of a group:
    (score - mean) / (unbiased std + 1e-6), a lone row with mean 0 and std 1."""
    scores = [
        (e.group, WIN_REWARD * e.won - INVALID_PENALTY * (not official_format_ok(s.response)))
        for e in episodes
        for s in e.steps
    ]
    stats = {}
    for group in {g for g, _ in scores}:
        values = torch.tensor([v for g, v in scores if g == group], dtype=torch.float64)
        stats[group] = (0.0, 1.0) if len(values) == 1 else (float(values.mean()), float(values.std()))
    return [(v - stats[g][0]) / (stats[g][1] + 1e-6) for g, v in scores]


def forward_scores(model, prompt: list[int], response: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(logits / T) of each response token, and the entropy of softmax(logits / T) at
    each response position, from one plain forward over the prompt and the response (its last
    token is never an input); the LM head runs on the response positions only."""
    ids = torch.tensor([prompt + response[:-1]])
    logits = model(input_ids=ids, logits_to_keep=len(response)).logits[0] / TEMPERATURE
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, torch.tensor(response)[:, None])[:, 0]
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def holder_mean(r: torch.Tensor, p: float) -> torch.Tensor:
    return torch.exp(torch.log(r).mean()) if p == 0 else r.pow(p).mean().pow(1.0 / p)


def official_policy_loss(preset: str, p: float, rows) -> tuple[torch.Tensor, int, int]:
    """(loss, clipped, unclipped) of one micro-batch; rows: (x, A) with x the (L,) log-ratios.
    clipped / unclipped count the elements (tokens or sequences) whose clip binds or does not."""
    clipped = unclipped = 0
    if preset == "grpo_verl":  # verl compute_policy_loss: dual clip c = 3, token-mean
        losses = []
        for x, a in rows:
            r = x.exp()
            plain, capped = -a * r, -a * r.clamp(0.8, 1.2)
            loss = torch.maximum(plain, capped)
            if a < 0:
                loss = torch.minimum(loss, torch.full_like(loss, -a * 3.0))
            binds = (capped > plain) | (loss != torch.maximum(plain, capped))
            clipped, unclipped = clipped + int(binds.sum()), unclipped + int((~binds).sum())
            losses.append(loss)
        return torch.cat(losses).mean(), clipped, unclipped
    objectives = []
    for x, a in rows:
        r = x.exp()
        if preset == "grpo":  # the GRPO paper: per-token clipped surrogate, mean over the sequence
            j_t = torch.minimum(r * a, r.clamp(0.8, 1.2) * a)
            binds = j_t < r * a
            j = j_t.mean()
        elif preset == "gspo":  # geometric-mean sequence ratio, clip 3e-4 / 4e-4
            s = x.mean().exp()
            j = torch.minimum(s * a, s.clamp(1 - 3e-4, 1 + 4e-4) * a)
            binds = j < s * a
        elif preset == "gmpo":  # pessimistic clip of log r at 0.4, geometric mean
            x_clip = x.clamp(max=0.4) if a >= 0 else x.clamp(min=-0.4)
            j = a * x_clip.mean().exp()
            binds = x_clip != x
        elif preset == "holderpo":  # Hölder-mean sequence ratio, PPO clip on it
            rho = holder_mean(r, p)
            j = torch.minimum(rho * a, rho.clamp(0.8, 1.2) * a)
            binds = j < rho * a
        elif preset == "holderpo_token":  # Eq. 11: clip each token ratio, then the Hölder mean
            r_clip = r.clamp(max=1.2) if a >= 0 else r.clamp(min=0.8)
            j = holder_mean(r_clip, p) * a
            binds = r_clip != r
        else:
            raise AssertionError(preset)
        binds = torch.as_tensor(binds)
        clipped, unclipped = clipped + int(binds.sum()), unclipped + int((~binds).sum())
        objectives.append(j)
    return -torch.stack(objectives).mean(), clipped, unclipped


def official_update(preset, p, model, batch: OfficialBatch, micro: int):
    """The loss of one update (each micro-batch's loss over the number of micro-batches, summed)
    and its backward into `model`; returns (loss, clipped, unclipped, dual-clipped tokens)."""
    chunks = [range(start, start + micro) for start in range(0, len(batch.rows), micro)]
    total, clipped, unclipped, dual = torch.zeros((), dtype=torch.float64), 0, 0, 0
    for chunk in chunks:
        per_row, logps, entropies = [], [], []
        for i in chunk:
            logp, entropy = forward_scores(model, *batch.rows[i])
            x = logp - batch.old[i]
            per_row.append((x, batch.advantages[i]))
            logps.append(logp)
            entropies.append(entropy)
            if batch.advantages[i] < 0:
                dual += int((x.exp() > 3.0).sum())
        policy, c, u = official_policy_loss(preset, p, per_row)
        d = torch.cat([batch.ref[i] for i in chunk]) - torch.cat(logps)
        kl = (d.exp() - d - 1).clamp(-10.0, 10.0).mean()  # verl's low_var_kl, token-mean
        entropy = torch.cat(entropies).mean()
        loss = (policy + KL_COEF * kl - ENTROPY_COEF * entropy) / len(chunks)
        loss.backward()
        total, clipped, unclipped = total + loss.detach(), clipped + c, unclipped + u
    return total, clipped, unclipped, dual


def _tokens(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def _perturb(model) -> None:
    """A fixed change of every weight, so that the trained policy differs from its reference."""
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(PERTURBATION * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))


def starting_weights(tokenizer, folder: Path) -> Weights:
    """A random 2-layer Llama with the embedded model's vocabulary, narrower than the shared
    tiny model: in float64 the LM head over 49k tokens is most of the time, and it scales with
    the width. Its weights are drawn wider than the default 0.02 so that the logits, and the
    gradients compared, are far from flat."""
    model = random_llama(
        tokenizer,
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        initializer_range=INIT_RANGE,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    reference = model.double().requires_grad_(False)
    current = copy.deepcopy(reference)
    _perturb(current)
    return Weights(str(folder), reference, current)


def official_batch_of(weights: Weights, tokenizer) -> OfficialBatch:
    rows, prefix_lengths, old, ref = [], [], [], []
    for episode in EPISODES:
        start = _tokens(tokenizer, f"Your task is to: {episode.task}\n")
        for step in episode.steps:
            prompt = start + _tokens(tokenizer, step.observation)
            response = _tokens(tokenizer, step.response) + ([] if step.stop else [tokenizer.eos_token_id])
            with torch.no_grad():
                logp, _ = forward_scores(weights.current, prompt, response)
                ref_logp, _ = forward_scores(weights.reference, prompt, response)
            old.append(logp - _log_ratio_offsets(len(rows), len(response)))
            ref.append(ref_logp)
            rows.append((prompt, response))
            prefix_lengths.append(len(start))
    return OfficialBatch(rows, prefix_lengths, old, ref, official_advantages(EPISODES))


@pytest.fixture(scope="module")
def weights(tokenizer, tmp_path_factory) -> Weights:
    return starting_weights(tokenizer, tmp_path_factory.mktemp("narrow-model"))


@pytest.fixture(scope="module")
def official_batch(weights, tokenizer) -> OfficialBatch:
    return official_batch_of(weights, tokenizer)


# -- our side ---------------------------------------------------------------------------------------
def _trainer(model_dir: str, run_dir: Path, preset: str, p: float) -> Trainer:
    options = TEST_RUN_OPTIONS | {
        "train_games": str(FIXTURE_GAMES / "train"),
        "model": model_dir,
        "finetune": "full",
        "preset": preset,
        "p_schedule": "constant",  # read by the holderpo presets only
        "p_start": p,
        "p_end": p,
        "prompt_style": "verl_agent",
        "context": "step",
        "output_format": "react",
        "decoding": "free",
        "loss_tokens": "response",
        "temperature": TEMPERATURE,
        "grpo_statistics": "steps",
        "invalid_penalty_mode": "step",
        "invalid_penalty": INVALID_PENALTY,
        "win_reward": WIN_REWARD,
        "skip_zero_signal": False,
        "estimator": "grpo",
        "sample_weighting": "sample",
        "kl_coef": KL_COEF,
        "kl_estimator": "low_var_kl",
        "entropy_coef": ENTROPY_COEF,
        "clip_low": -1.0,
        "clip_high": -1.0,
        "max_grad_norm": 0.0,
        "lr": 1e-12,
        "minibatch_size": ROWS,
        "micro_batch_size": ROWS // 2,
        "recompute_old_logprobs": "never",
        "loss_shares": "verl",  # verl's micro-batch scaling, which the official update follows
    }
    return Trainer(load_config(None, options), run_dir, echo=lambda _: None)


def _records(trainer: Trainer, batch: OfficialBatch) -> list[EpisodeRecord]:
    """The episodes as a rollout records them: statuses from our parser (verl-agent's format
    check), loss masks from our policy, the batch's tokens and old log-probs."""
    records, row = [], 0
    for index, episode in enumerate(EPISODES):
        turns = []
        for step in episode.steps:
            (prompt, response), old = batch.rows[row], batch.old[row].tolist()
            generation = Generation(response, old, [0] * len(response), step.response, "stop" if step.stop else "eos")
            parsed = parse_output(step.response, "react", episode.admissible, require_thought=True)
            tokens = TokenRecord(
                prompt_ids=prompt,
                response_ids=response,
                logprobs=generation.logprobs,
                forced=generation.forced,
                loss_mask=trainer.policy._loss_mask(generation, None),
                admissible=sorted(episode.admissible),
                prefix_length=batch.prefix_lengths[row],
            )
            turns.append(
                TurnRecord(
                    observation=step.observation,
                    action=parsed.action,
                    response=step.response,
                    thought=parsed.thought,
                    admissible=parsed.action in episode.admissible,
                    malformed=parsed.malformed,
                    reward=1.0 if episode.won and step is episode.steps[-1] else 0.0,
                    status=parsed.status,
                    finish=generation.finish,
                    tokens=tokens,
                )
            )
            row += 1
        records.append(
            EpisodeRecord(
                episode_id=f"{episode.game}#{index}",
                game=episode.game,
                game_id=episode.game,
                task_type="test",
                task=episode.task,
                sample=index,
                seed=index,
                group=episode.group,
                outcome="won" if episode.won else "step-limit",
                turns=turns,
            )
        )
    return records


@dataclass
class Parity:
    """Both sides of one update."""

    ours_loss: torch.Tensor
    official_loss: torch.Tensor
    ours_grads: dict[str, torch.Tensor]
    official_grads: dict[str, torch.Tensor]
    clipped: int  # tokens or sequences whose clip binds in the reference
    unclipped: int
    dual_clipped: int  # tokens with A < 0 and a ratio above verl's dual clip c = 3


def parity(preset: str, p: float | None, weights: Weights, batch: OfficialBatch, run_dir: Path) -> Parity:
    """One update of ours on the batch and the reference's, from the same weights."""
    trainer = _trainer(weights.directory, run_dir, preset, 0.0 if p is None else p)
    p_used = trainer.preset.schedule(0, trainer.cfg.iterations)
    assert p is None or p_used == p
    trainer.model.double()
    ours = trainable_parameters(trainer.model)
    assert ours.keys() == dict(weights.current.named_parameters()).keys()
    for name, parameter in weights.reference.named_parameters():
        assert torch.equal(ours[name], parameter)  # loaded from the same checkpoint
    trainer.reference.snapshot()  # the KL reference: the starting weights, now in float64
    with torch.no_grad():
        for name, parameter in weights.current.named_parameters():
            ours[name].copy_(parameter)
    assert {t.dtype for t in ours.values()} == {torch.float64}

    # ours: the trainer's path, from the records to the gradients it leaves in param.grad
    records = _records(trainer, batch)
    turns = [turn for record in records for turn in record.turns]
    # our parser's verdicts are verl-agent's format check: no tags, no thought, CJK
    assert [turn.malformed for turn in turns] == [not official_format_ok(s.response) for e in EPISODES for s in e.steps]
    assert sum(turn.malformed for turn in turns) == 3 and turns[3].action == "open fridge 1"
    samples = trainer.training_batch(records).samples
    assert [(s.prompt_ids, s.response_ids) for s in samples] == batch.rows
    assert all(all(s.loss_mask) for s in samples)
    assert [s.advantage for s in samples] == pytest.approx(batch.advantages, rel=1e-12, abs=1e-12)
    losses = []
    micro_batch_loss = trainer.micro_batch_loss

    def recording(chunk, chunk_ref, p_value, *shares):
        loss, metrics = micro_batch_loss(chunk, chunk_ref, p_value, *shares)
        losses.append((loss.detach(), len(chunk)))
        return loss, metrics

    trainer.micro_batch_loss = recording
    assert trainer.optimizer_step(samples, trainer.reference_logprobs(samples), p_used) is not None
    assert [n for _, n in losses] == [ROWS // 2, ROWS // 2]
    assert all(loss.dtype == torch.float64 for loss, _ in losses)
    ours_loss = sum(loss for loss, _ in losses)  # each micro-batch's loss is its part of the minibatch's

    # the official semantics, on a copy of the same weights
    model = copy.deepcopy(weights.current).requires_grad_(True)
    loss, clipped, unclipped, dual = official_update(preset, p_used, model, batch, ROWS // 2)
    return Parity(
        ours_loss,
        loss,
        {name: q.grad for name, q in ours.items()},
        {name: q.grad for name, q in model.named_parameters()},
        clipped,
        unclipped,
        dual,
    )


CASES = [
    ("grpo", None),
    ("grpo_verl", None),
    ("gspo", None),
    ("gmpo", None),
    ("holderpo", 1.0),
    ("holderpo", 0.5),
    ("holderpo", 0.05),  # |p| < 0.1: our Hölder mean takes its expm1 / log1p form there
    ("holderpo", -1.0),
    ("holderpo_token", 1.0),
    ("holderpo_token", 0.05),
    ("holderpo_token", -1.0),
]


@pytest.mark.parametrize(("preset", "p"), CASES, ids=[f"{name}-p={p}" if p is not None else name for name, p in CASES])
def test_one_update_matches_the_official_semantics_in_float64(weights, official_batch, tmp_path, preset, p):
    result = parity(preset, p, weights, official_batch, tmp_path / "run")
    advantages = official_batch.advantages
    assert {a > 0 for a in advantages[:6]} == {a > 0 for a in advantages[6:]} == {True, False}
    assert result.clipped > 0 and result.unclipped > 0  # both branches of the clip are exercised
    if preset == "grpo_verl":
        assert result.dual_clipped > 0  # and verl's dual clip
    # gradients far above the tolerance, or the comparison would prove little
    assert max(float(g.abs().max()) for g in result.official_grads.values()) > 1e-2
    torch.testing.assert_close(result.ours_loss, result.official_loss, **TOLERANCE)
    assert result.ours_grads.keys() == result.official_grads.keys()
    for name, grad in result.official_grads.items():
        torch.testing.assert_close(result.ours_grads[name], grad, **TOLERANCE, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize(("loss_tokens", "expected"), [("response", True), ("action", False)])
def test_a_response_without_tags_is_trained_on_only_under_loss_tokens_response(
    tiny_model, tokenizer, loss_tokens, expected
):
    text = "go to the sink and look around"
    ids = _tokens(tokenizer, text) + [tokenizer.eos_token_id]
    assert parse_output(text, "react", list(KITCHEN), require_thought=True).malformed
    policy = LLMPolicy(
        tiny_model,
        tokenizer,
        PromptConfig("step", 1, "react", style="verl_agent"),
        DecodingConfig("free", 32, loss_tokens=loss_tokens),
    )
    generation = Generation(ids, [-1.0] * len(ids), [0] * len(ids), text, "eos")
    mask = policy._loss_mask(generation, None)
    assert len(mask) == len(ids)
    assert mask == [expected] * len(ids)
