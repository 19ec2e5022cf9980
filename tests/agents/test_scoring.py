"""Scoring work savers: trunk reuse (the states recorded during generation let training run only
the top blocks) and a head that projects only onto the tokens it needs. Both give the whole
model's log-probs and gradients, and stay off for models where they would not."""

import pytest
import torch
from transformers import GraniteConfig, GraniteForCausalLM, LlamaConfig, LlamaForCausalLM

from agents.generation import generate
from agents.llm_policy import LLMPolicy
from agents.policy import Turn
from agents.scoring import TrunkStates, output_matrix, record_trunk_states, response_logprobs
from agents.trunk import top_blocks, top_blocks_reproduce
from envs.batched import BatchedAlfWorld
from holderpo.config import load_config
from holderpo.samples import advantages, build_samples
from holderpo.trainer import Trainer
from rollouts.transcripts import TranscriptWriter
from tests.agents.test_constrained import COMMANDS, INTRO, _turn
from tests.conftest import (
    FIXTURE_GAMES,
    FLOAT32_LOGPROB_ATOL,
    FLOAT32_SCORING_ATOL,
    FLOAT32_TENSOR_TOL,
    TEST_RUN_OPTIONS,
)


def _model(config_class, model_class, tokenizer, **extra):
    torch.manual_seed(1)
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        **extra,
    )
    return model_class(config).eval()


@pytest.fixture(scope="module")
def three_layers(tokenizer):
    """Three blocks, the top two trained: block numbering inside `top_blocks` differs from the model's."""
    return _model(LlamaConfig, LlamaForCausalLM, tokenizer)


def _turns():
    """Three turns of one game and the first of another (a different task and room)."""
    other = Turn(
        "other#4",
        4,
        0,
        INTRO.replace("fridge.", "cabinet 1."),
        {"admissible_commands": COMMANDS, "task": "put some apple on cabinet 1"},
    )
    return [
        _turn(1),
        _turn(2, turn=1, history=[(INTRO, "look")], observation="Nothing happens."),
        _turn(
            3,
            turn=2,
            history=[(INTRO, "look"), ("Nothing happens.", "go to fridge 1")],
            observation="You arrive at fridge 1. On the fridge 1, you see nothing.",
        ),
        other,
    ]


def test_recorded_states_give_the_whole_models_logprobs_and_gradients(three_layers, tokenizer):
    policy = LLMPolicy(three_layers, tokenizer, trunk_layers=2)
    decisions = policy.act(_turns())
    tokens = [d.tokens for d in decisions]
    prompts = [t.prompt_ids for t in tokens]
    responses = [t.response_ids for t in tokens]
    prefixes = [t.prefix_length for t in tokens]
    assert len({tuple(p[:k]) for p, k in zip(prompts, prefixes)}) == 2  # two games, two shared starts
    for t, prompt, response, k in zip(tokens, prompts, responses, prefixes):
        assert t.trunk_states.shape == (len(prompt) - k + len(response) - 1, 64)
        assert t.prefix_states.shape == (k, 64)
    allowed = [policy.constraint(COMMANDS).replay(r) for r in responses]
    trunk = TrunkStates(2, [t.prefix_states for t in tokens], [t.trunk_states for t in tokens])

    def scored(states):
        three_layers.zero_grad()
        result = response_logprobs(
            three_layers,
            prompts,
            responses,
            allowed,
            pad_id=tokenizer.eos_token_id,
            prefix_lengths=prefixes,
            trunk=states,
        )
        (result.logprobs * torch.linspace(0.5, 1.5, result.logprobs.shape[1])).sum().backward()
        grads = {
            n: p.grad.clone() for n, p in three_layers.named_parameters() if ".layers.0." not in n and "embed" not in n
        }
        return result, grads

    whole, whole_grads = scored(None)
    top, top_grads = scored(trunk)
    torch.testing.assert_close(top.logprobs, whole.logprobs, atol=FLOAT32_SCORING_ATOL, rtol=0)
    for row, t in enumerate(tokens):  # and both equal what generation sampled with
        torch.testing.assert_close(
            top.logprobs[row][top.mask[row]], torch.tensor(t.logprobs), atol=FLOAT32_LOGPROB_ATOL, rtol=0
        )
    for name, grad in whole_grads.items():
        torch.testing.assert_close(top_grads[name], grad, **FLOAT32_TENSOR_TOL, msg=name)
    assert all(p.grad is None or not p.grad.any() for n, p in three_layers.named_parameters() if ".layers.0." in n)
    three_layers.zero_grad()


def test_one_pass_scoring_equals_bucketed_scoring_with_shared_starts(three_layers, tokenizer):
    """`single_pass` (what FSDP2 training needs: one forward per micro-batch on every rank) runs
    all rows together without shared starts, and gives the same log-probs and gradients."""
    policy = LLMPolicy(three_layers, tokenizer)
    tokens = [d.tokens for d in policy.act(_turns())]
    rows = {
        "prompts": [t.prompt_ids for t in tokens],
        "responses": [t.response_ids for t in tokens],
        "allowed_sets": [policy.constraint(COMMANDS).replay(t.response_ids) for t in tokens],
        "prefix_lengths": [t.prefix_length for t in tokens],
    }
    assert any(rows["prefix_lengths"])  # the bucketed path scores the shared starts apart

    def scored(single_pass):
        three_layers.zero_grad()
        result = response_logprobs(three_layers, **rows, pad_id=tokenizer.eos_token_id, single_pass=single_pass)
        result.logprobs.sum().backward()
        return result, {n: p.grad.clone() for n, p in three_layers.named_parameters()}

    (bucketed, bucketed_grads), (one_pass, one_pass_grads) = scored(False), scored(True)
    torch.testing.assert_close(one_pass.logprobs, bucketed.logprobs, atol=FLOAT32_SCORING_ATOL, rtol=0)
    for name, grad in bucketed_grads.items():
        torch.testing.assert_close(one_pass_grads[name], grad, **FLOAT32_TENSOR_TOL, msg=name)
    three_layers.zero_grad()


def test_states_recorded_without_generating_equal_the_rollouts(three_layers, tokenizer):
    """Behaviour cloning records the trunk over demonstrations in one pass; it must match what a
    rollout records over the same tokens (two shared starts, rows of different lengths)."""
    tokens = [d.tokens for d in LLMPolicy(three_layers, tokenizer, trunk_layers=2).act(_turns())]
    recorded = record_trunk_states(
        three_layers,
        [t.prompt_ids for t in tokens],
        [t.response_ids for t in tokens],
        2,
        pad_id=tokenizer.eos_token_id,
        prefix_lengths=[t.prefix_length for t in tokens],
    )
    assert recorded.top_layers == 2
    for t, prefix, tail in zip(tokens, recorded.prefixes, recorded.tails):
        torch.testing.assert_close(tail, t.trunk_states, **FLOAT32_TENSOR_TOL)
        torch.testing.assert_close(prefix, t.prefix_states, **FLOAT32_TENSOR_TOL)
    unshared = record_trunk_states(
        three_layers, [t.prompt_ids for t in tokens[:2]], [t.response_ids for t in tokens[:2]], 2
    )
    assert unshared.prefixes == [None, None]  # no shared start: the tail is the whole prompt
    assert unshared.tails[1].shape == (len(tokens[1].prompt_ids) + len(tokens[1].response_ids) - 1, 64)
    torch.testing.assert_close(
        unshared.tails[1][tokens[1].prefix_length :], tokens[1].trunk_states, **FLOAT32_TENSOR_TOL
    )


def test_policies_without_trunk_layers_record_nothing(three_layers, tokenizer):
    tokens = LLMPolicy(three_layers, tokenizer).act(_turns()[:1])[0].tokens
    assert tokens.trunk_states is None and tokens.prefix_states is None


def test_top_blocks_leave_the_model_whole_even_after_an_error(three_layers):
    with pytest.raises(RuntimeError):
        with top_blocks(three_layers, 2):
            assert len(three_layers.model.layers) == 2
            assert [b.self_attn.layer_idx for b in three_layers.model.layers] == [0, 1]
            raise RuntimeError("inside")
    assert len(three_layers.model.layers) == 3
    assert [b.self_attn.layer_idx for b in three_layers.model.layers] == [0, 1, 2]


def test_reuse_is_refused_where_the_model_transforms_its_input_states(three_layers, tokenizer):
    assert top_blocks_reproduce(three_layers, 2)
    granite = _model(GraniteConfig, GraniteForCausalLM, tokenizer, embedding_multiplier=12.0)
    assert not top_blocks_reproduce(granite, 2)  # it multiplies inputs_embeds inside its forward
    assert len(granite.model.layers) == 3


@pytest.mark.parametrize(
    "finetune, context, recorded", [("top", "step", True), ("full", "step", False), ("top", "full", False)]
)
def test_trainer_records_states_only_for_a_frozen_trunk_and_step_prompts(
    tiny_model_dir, tmp_path, finetune, context, recorded
):
    config = load_config(
        None,
        TEST_RUN_OPTIONS
        | {
            "train_games": str(FIXTURE_GAMES / "train"),
            "model": tiny_model_dir,
            "group_size": 2,
            "games_per_iteration": 2,
            "max_steps": 3,
            "num_envs": 4,
            "num_workers": 1,
            "finetune": finetune,
            "top_layers": 1,
            "kl_coef": 0.0,
            "context": context,
        },
    )
    trainer = Trainer(config, tmp_path / "run", echo=lambda _: None)
    with BatchedAlfWorld(4, 1, max_steps=3) as batch, TranscriptWriter(tmp_path / "t.jsonl", "p") as writer:
        records = trainer.collect(batch, 0, writer).records
    per_step, _, _ = advantages(records, "drgrpo", 10.0, 0.1)
    samples = build_samples(records, per_step, [True] * len(records), context, trainer._replay)
    assert samples and all((s.trunk_states is not None) == recorded for s in samples)
    assert all((turn.tokens.trunk_states is not None) == recorded for record in records for turn in record.turns)
    if recorded:  # the update's scoring on recorded states equals the whole model's
        plain = response_logprobs(
            trainer.model,
            [s.prompt_ids for s in samples],
            [s.response_ids for s in samples],
            [s.allowed for s in samples],
            pad_id=trainer.tokenizer.eos_token_id,
            prefix_lengths=[s.prefix_length for s in samples],
        )
        torch.testing.assert_close(trainer._score(samples).logprobs, plain.logprobs, atol=FLOAT32_SCORING_ATOL, rtol=0)


def test_scaled_logits_are_scored_from_the_full_head(three_layers, tokenizer):
    assert output_matrix(three_layers) is three_layers.lm_head.weight  # plain projection: allowed tokens only
    granite = _model(GraniteConfig, GraniteForCausalLM, tokenizer, logits_scaling=0.25)  # logits * 4
    assert output_matrix(granite) is None
    policy = LLMPolicy(granite, tokenizer)
    prompts = [tokenizer.encode(t, add_special_tokens=False) for t in (INTRO, "> look\nYou see a fridge 1.")]
    constraints = [policy.constraint(COMMANDS) for _ in prompts]
    generations = generate(
        granite, tokenizer, prompts, [5, 6], constraints, max_new_tokens=max(c.max_length for c in constraints)
    )
    scored = response_logprobs(
        granite,
        prompts,
        [g.response_ids for g in generations],
        [c.replay(g.response_ids) for c, g in zip(constraints, generations)],
        pad_id=tokenizer.eos_token_id,
    )
    for row, generation in enumerate(generations):
        torch.testing.assert_close(
            scored.logprobs[row][scored.mask[row]], torch.tensor(generation.logprobs), atol=FLOAT32_LOGPROB_ATOL, rtol=0
        )
