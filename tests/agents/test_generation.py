"""Work savers (shared prompt starts, length buckets) change the work done, never what is sampled or recorded."""

import torch

from agents.generation import generate, length_buckets
from agents.llm_policy import DecodingConfig, LLMPolicy
from agents.prefix_cache import PrefixCache, common_prefix_length
from agents.scoring import response_logprobs
from tests.agents.test_constrained import COMMANDS, INTRO, _turn
from tests.conftest import FLOAT32_LOGPROB_ATOL, FLOAT32_SCORING_ATOL, FLOAT32_TENSOR_TOL


def _mixed_prompts(tokenizer):
    shared = [tokenizer.encode(f"Game {n}: " + INTRO, add_special_tokens=False) for n in (1, 22)]
    tails = [tokenizer.encode(t, add_special_tokens=False) for t in ("> look", "> go to fridge 1\nYou arrive.", "!")]
    prompts = [shared[0] + tails[0], shared[1] + tails[1], shared[0] + tails[2], tails[1]]
    return prompts, [len(shared[0]), len(shared[1]), len(shared[0]), 0]  # the last row: nothing cached


def test_cached_prefixes_sample_the_same_tokens_and_logprobs(tiny_model, tokenizer):
    prompts, prefix_lengths = _mixed_prompts(tokenizer)
    policy = LLMPolicy(tiny_model, tokenizer)
    constraints = [policy.constraint(COMMANDS) for _ in prompts]
    budget = max(c.max_length for c in constraints)
    plain = generate(tiny_model, tokenizer, prompts, [4, 5, 6, 7], constraints, max_new_tokens=budget)
    cache = PrefixCache(tiny_model)
    cached = generate(
        tiny_model,
        tokenizer,
        prompts,
        [4, 5, 6, 7],
        constraints,
        max_new_tokens=budget,
        prefix_lengths=prefix_lengths,
        prefix_cache=cache,
    )
    assert len(cache) == 2  # one entry per distinct prefix
    for a, b in zip(plain, cached):
        assert a.response_ids == b.response_ids
        torch.testing.assert_close(
            torch.tensor(b.logprobs), torch.tensor(a.logprobs), atol=FLOAT32_LOGPROB_ATOL, rtol=0
        )
    allowed = [c.replay(g.response_ids) for c, g in zip(constraints, cached)]
    logprobs, mask, _ = response_logprobs(
        tiny_model, prompts, [g.response_ids for g in cached], allowed, pad_id=tokenizer.eos_token_id
    )
    for row, generation in enumerate(cached):  # training's teacher-forced pass agrees with the cached sampling
        torch.testing.assert_close(
            logprobs[row][mask[row]], torch.tensor(generation.logprobs), atol=FLOAT32_LOGPROB_ATOL, rtol=0
        )


def test_cache_empties_when_the_weights_change_in_place(tiny_model, tokenizer):
    prefix = tuple(tokenizer.encode(INTRO, add_special_tokens=False))
    cache = PrefixCache(tiny_model)
    before = cache.keys_values(prefix)[-1][0].clone()
    assert cache.keys_values(prefix)[-1][0] is cache.keys_values(prefix)[-1][0]  # a hit
    layer = tiny_model.model.layers[-1].self_attn.k_proj.weight
    saved = layer.detach().clone()
    try:
        with torch.no_grad():
            layer.add_(0.5)  # what an optimizer step does
        after = cache.keys_values(prefix)[-1][0]
        assert not torch.allclose(before, after), "stale keys and values served after an update"
    finally:
        with torch.no_grad():
            layer.copy_(saved)


def test_policy_shares_the_game_start_across_turns(tiny_model, tokenizer):
    turns = [
        _turn(1),
        _turn(2, turn=1, history=[(INTRO, "look")], observation="Nothing happens."),
        _turn(
            3,
            turn=2,
            history=[(INTRO, "look"), ("Nothing happens.", "go to fridge 1")],
            observation="You arrive at fridge 1.",
        ),
    ]
    with_cache = LLMPolicy(tiny_model, tokenizer)
    without = LLMPolicy(tiny_model, tokenizer, decoding=DecodingConfig(cache_prefixes=False))
    assert without.engine.prefix_cache is None
    decided = with_cache.act(turns)
    assert len(with_cache.engine.prefix_cache) == 1  # the three turns of the game share one start
    stem = with_cache._stem("put some apple on fridge", INTRO)
    assert tokenizer.decode(stem).rstrip().endswith("and a fridge 1.")  # system, task and room
    assert all(common_prefix_length(d.tokens.prompt_ids, stem) == len(stem) for d in decided)
    for a, b in zip(decided, without.act(turns)):
        assert a.tokens.response_ids == b.tokens.response_ids and a.action == b.action


def test_scoring_with_shared_starts_matches_plain_scoring_and_its_gradients(tiny_model, tokenizer):
    prompts, prefix_lengths = _mixed_prompts(tokenizer)
    responses = [
        tokenizer.encode(r, add_special_tokens=False) + [tokenizer.eos_token_id]
        for r in ("go to fridge 1", "look", "take apple 1 from countertop 1", "inventory")
    ]

    def scored(lengths):
        tiny_model.zero_grad()
        result = response_logprobs(
            tiny_model, prompts, responses, pad_id=tokenizer.eos_token_id, prefix_lengths=lengths
        )
        result.logprobs.sum().backward()
        return result.logprobs.detach(), {n: p.grad.clone() for n, p in tiny_model.named_parameters()}

    plain, plain_grads = scored(None)
    shared, shared_grads = scored(prefix_lengths)
    torch.testing.assert_close(shared, plain, atol=FLOAT32_SCORING_ATOL, rtol=0)
    for name, grad in plain_grads.items():  # the shared start passes gradients on like unshared prompts
        torch.testing.assert_close(shared_grads[name], grad, **FLOAT32_TENSOR_TOL, msg=name)
    tiny_model.zero_grad()


def test_length_buckets_split_only_where_padding_would_cost():
    assert length_buckets([13, 40, 36, 212, 20]) == [[0, 4, 2, 1], [3]]
    assert length_buckets([5, 5, 5]) == [[0, 1, 2]]
    assert sorted(i for bucket in length_buckets([300, 1, 90, 7, 150, 2]) for i in bucket) == list(range(6))


def test_one_long_prompt_gets_its_own_call_and_changes_no_result(tiny_model, tokenizer):
    policy = LLMPolicy(tiny_model, tokenizer)
    short = tokenizer.encode("> look\nYou see a fridge 1.", add_special_tokens=False)
    long = tokenizer.encode("help text " * 150, add_special_tokens=False)
    prompts = [short, long, short[:-2]]
    constraints = [policy.constraint(COMMANDS) for _ in prompts]
    budget = max(c.max_length for c in constraints)
    together = generate(tiny_model, tokenizer, prompts, [1, 2, 3], constraints, max_new_tokens=budget)
    alone = [
        generate(tiny_model, tokenizer, [p], [seed], [c], max_new_tokens=budget)[0]
        for p, seed, c in zip(prompts, [1, 2, 3], constraints)
    ]
    for a, b in zip(together, alone):
        assert a.response_ids == b.response_ids
        torch.testing.assert_close(
            torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=FLOAT32_LOGPROB_ATOL, rtol=0
        )
    responses = [g.response_ids for g in together]
    allowed = [c.replay(r) for c, r in zip(constraints, responses)]
    scored = response_logprobs(tiny_model, prompts, responses, allowed, pad_id=tokenizer.eos_token_id)
    for row, generation in enumerate(together):  # scored in two groups, rows back in their places
        torch.testing.assert_close(
            scored.logprobs[row][scored.mask[row]], torch.tensor(generation.logprobs), atol=FLOAT32_LOGPROB_ATOL, rtol=0
        )
