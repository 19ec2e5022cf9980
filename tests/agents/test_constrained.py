"""Constrained decoding, parsing, and the log-prob consistency that makes first ratios exactly 1."""

import pytest
import torch

from agents.constrained import ACTION, DONE, FORCED, THINK, ActionConstraint
from agents.generation import generate
from agents.llm_policy import DecodingConfig, LLMPolicy, turn_seed
from agents.parsing import parse_output
from agents.policy import Turn
from agents.prompts import PromptConfig
from agents.scoring import response_logprobs
from tests.conftest import FLOAT32_LOGPROB_ATOL

COMMANDS = [
    "go to cabinet 1",
    "go to cabinet 10",
    "go to fridge 1",
    "take apple 1 from countertop 1",
    "look",
    "inventory",
]
INTRO = (
    "-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room. Looking quickly "
    "around you, you see a cabinet 1, a cabinet 10, a countertop 1, and a fridge 1.\n\n"
    "Your task is to: put some apple on fridge."
)


def _turn(seed, turn=0, history=(), observation=INTRO, commands=COMMANDS):
    info = {"admissible_commands": commands, "task": "put some apple on fridge"}
    return Turn(f"game#{seed}", seed, turn, observation, info, tuple(history))


# -- the constraint state machine ------------------------------------------------------------------
def test_trie_keeps_cabinet_1_and_10_apart(tokenizer):
    eos = tokenizer.eos_token_id

    def encode(text):
        return tokenizer.encode(text, add_special_tokens=False)

    constraint = ActionConstraint([encode(c) for c in COMMANDS], [eos], eos)
    prefix = encode("go to cabinet 1")
    allowed = constraint.replay(prefix + [eos])
    assert set(allowed[-1]) == {eos, encode("0")[0]}  # after "cabinet 1": end here, or "0"
    assert set(allowed[0]) == {encode(c)[0] for c in COMMANDS}
    with pytest.raises(ValueError, match="not allowed"):
        constraint.replay(encode("go to sofa"))


def test_react_constraint_phases(tokenizer):
    def encode(text):
        return tokenizer.encode(text, add_special_tokens=False)

    eos = tokenizer.eos_token_id
    constraint = ActionConstraint(
        [encode(c) for c in COMMANDS],
        [*encode("</action>"), eos],
        eos,
        think_close_ids=encode("</think>"),
        action_open_ids=encode("\n<action>"),
        max_think_tokens=4,
    )
    free = encode("I need the apple</think>")
    tokens = free + encode("\n<action>") + encode("look") + encode("</action>") + [eos]
    phases = constraint.phases(tokens)
    assert phases[: len(free)] == [THINK] * len(free)
    assert phases[len(free) : len(free) + 4] == [FORCED] * 4
    assert phases[-1] == ACTION
    assert constraint.replay(tokens)[0] is None  # the thought is free
    # A thought over its cap gets `</think>` forced, token by token.
    capped = encode("a b c d")[:4]
    state = constraint.start()
    for token in capped:
        state = constraint.advance(state, token)
    for expected in encode("</think>"):
        assert constraint.allowed(state) == (expected,)
        state = constraint.advance(state, expected)
    assert state.phase == FORCED and constraint.allowed(state) is not None
    done = constraint.start()
    for token in tokens:
        done = constraint.advance(done, token)
    assert done.phase == DONE


# -- parsing never raises --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, fmt, status, action",
    [
        ("go to fridge 1", "action", "admissible", "go to fridge 1"),
        ("  Go to Fridge 1.\nmore", "action", "admissible", "go to fridge 1"),
        ("go to sofa 1", "action", "inadmissible", "go to sofa 1"),
        ("", "action", "malformed", ""),
        ("\n\n  ", "action", "malformed", ""),
        ("<think>hm</think><action>look</action>", "react", "admissible", "look"),
        ("<think>hm</think> look", "react", "malformed", "<think>hm</think> look"),
        ("\ufffd\ufffd", "action", "inadmissible", "\ufffd\ufffd"),
        ("x" * 5000, "action", "inadmissible", "x" * 200),
    ],
)
def test_parse_classifies_without_raising(text, fmt, status, action):
    parsed = parse_output(text, fmt, COMMANDS)
    assert (parsed.status, parsed.action) == (status, action)


# -- log-prob consistency ----------------------------------------------------------------------------
def _prompts(tokenizer):
    short = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Put an apple in the fridge."}], add_generation_prompt=True, tokenize=False
    )
    long = tokenizer.apply_chat_template(
        [{"role": "user", "content": INTRO * 3}], add_generation_prompt=True, tokenize=False
    )
    return [tokenizer.encode(t, add_special_tokens=False) for t in (short, long, short)]


@pytest.mark.parametrize("output_format", ["action", "react"])
@pytest.mark.parametrize("decoding", ["constrained", "free"])
def test_sampling_logprobs_equal_teacher_forced(tiny_model, tokenizer, output_format, decoding):
    policy = LLMPolicy(
        tiny_model,
        tokenizer,
        PromptConfig(output_format=output_format),
        DecodingConfig(decoding=decoding, max_new_tokens=20, max_think_tokens=6),
    )
    prompts = _prompts(tokenizer)
    constraints = [policy.constraint(COMMANDS) if decoding == "constrained" else None for _ in prompts]
    budget = max([20] + [c.max_length for c in constraints if c is not None])
    generations = generate(tiny_model, tokenizer, prompts, [1, 2, 3], constraints, max_new_tokens=budget)
    allowed = [c.replay(g.response_ids) for c, g in zip(constraints, generations)] if constraints[0] else None
    logprobs, mask, _ = response_logprobs(
        tiny_model, prompts, [g.response_ids for g in generations], allowed, pad_id=tokenizer.eos_token_id
    )
    for row, generation in enumerate(generations):
        recorded = torch.tensor(generation.logprobs)
        assert recorded.shape == logprobs[row][mask[row]].shape
        torch.testing.assert_close(logprobs[row][mask[row]], recorded, atol=FLOAT32_LOGPROB_ATOL, rtol=0)
        if decoding == "constrained":
            assert parse_output(generation.text, output_format, COMMANDS).status == "admissible"


def test_embedded_model_consistency_mixed_lengths(tokenizer):
    from agents.models import load_embedded

    model, _ = load_embedded()
    policy = LLMPolicy(model, tokenizer, decoding=DecodingConfig(max_new_tokens=12))
    prompts = _prompts(tokenizer)
    constraints = [policy.constraint(COMMANDS) for _ in prompts]
    generations = generate(model, tokenizer, prompts, [7, 8, 9], constraints, max_new_tokens=12)
    allowed = [c.replay(g.response_ids) for c, g in zip(constraints, generations)]
    logprobs, mask, _ = response_logprobs(
        model, prompts, [g.response_ids for g in generations], allowed, pad_id=tokenizer.eos_token_id
    )
    for row, generation in enumerate(generations):
        torch.testing.assert_close(
            logprobs[row][mask[row]], torch.tensor(generation.logprobs), atol=FLOAT32_LOGPROB_ATOL, rtol=0
        )


# -- the policy ------------------------------------------------------------------------------------
def test_constrained_policy_is_always_admissible_and_masks_forced_tokens(tiny_model, tokenizer):
    policy = LLMPolicy(tiny_model, tokenizer, decoding=DecodingConfig(max_new_tokens=16))
    decisions = policy.act([_turn(seed) for seed in range(12)])
    assert all(d.status == "admissible" and d.action in COMMANDS for d in decisions)
    for decision in decisions:
        tokens = decision.tokens
        assert len(tokens.response_ids) == len(tokens.logprobs) == len(tokens.loss_mask)
        assert not any(m and f for m, f in zip(tokens.loss_mask, tokens.forced))
        forced_logprobs = [lp for lp, f in zip(tokens.logprobs, tokens.forced) if f]
        assert all(abs(lp) < 1e-6 for lp in forced_logprobs)  # probability 1


def test_episode_randomness_does_not_depend_on_batch(tiny_model, tokenizer):
    policy = LLMPolicy(tiny_model, tokenizer, decoding=DecodingConfig(decoding="free", max_new_tokens=8))
    alone = policy.act([_turn(5)])[0]
    together = policy.act([_turn(1), _turn(5, observation=INTRO), _turn(9)])[1]
    assert alone.tokens.response_ids == together.tokens.response_ids
    assert turn_seed(5, 0) != turn_seed(5, 1)


def test_full_context_extends_the_episode_tokens(tiny_model, tokenizer):
    policy = LLMPolicy(tiny_model, tokenizer, PromptConfig(context="full"), DecodingConfig(max_new_tokens=16))
    first = policy.act([_turn(3)])[0]
    second_turn = _turn(3, turn=1, history=[(INTRO, first.action)], observation="You arrive at fridge 1.")
    prompt = policy.prompt_ids(second_turn)
    assert (
        prompt[: len(first.tokens.prompt_ids) + len(first.tokens.response_ids)]
        == first.tokens.prompt_ids + first.tokens.response_ids
    )
    assert "You arrive at fridge 1." in tokenizer.decode(prompt[len(first.tokens.prompt_ids) :])
