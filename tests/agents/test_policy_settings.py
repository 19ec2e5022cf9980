"""A policy's settings: a flag, else a training checkpoint's own, else the fallback; and one line
saying which came from where."""

import dataclasses
import json

import pytest

from agents.checkpoint_format import MARKER
from agents.llm_policy import DecodingConfig
from agents.policy_settings import PolicySettings, describe_sources, resolve_settings
from agents.prompts import PromptConfig
from envs.alfworld_env import DEFAULT_MAX_STEPS

NO_FLAGS = dict.fromkeys(
    ("context", "history", "output_format", "decoding", "max_new_tokens", "temperature", "max_steps")
)


def _checkpoint(tmp_path, config: dict) -> str:
    (tmp_path / MARKER).write_text(json.dumps({"iteration": 1, "config": config, "run": "demo"}))
    return str(tmp_path)


def test_the_fallbacks_are_the_prompt_decoding_and_env_defaults():
    fallback, prompt, decoding = PolicySettings(), PromptConfig(), DecodingConfig()
    assert (fallback.context, fallback.history, fallback.output_format) == (
        prompt.context,
        prompt.history,
        prompt.output_format,
    )
    assert (fallback.decoding, fallback.max_new_tokens, fallback.max_think_tokens, fallback.temperature) == (
        decoding.decoding,
        decoding.max_new_tokens,
        decoding.max_think_tokens,
        decoding.temperature,
    )
    assert fallback.max_steps == DEFAULT_MAX_STEPS


def test_a_checkpoint_plays_by_its_runs_settings_unless_a_flag_says_otherwise(tmp_path):
    run = {
        "context": "step",
        "history": 1,
        "output_format": "react",
        "decoding": "free",
        "max_new_tokens": 96,
        "temperature": 1.0,
        "eval_temperature": 0.5,
        "max_steps": 10,
        "lr": 1e-4,
    }
    settings, sources = resolve_settings(_checkpoint(tmp_path, run), NO_FLAGS | {"max_steps": 20})
    assert settings == PolicySettings("step", 1, "react", "free", 96, 0.5, 20)  # the run's eval temperature
    defaults = {"prompt_style": "default", "max_think_tokens": "default"}
    assert sources == dict.fromkeys(NO_FLAGS, "checkpoint") | {"max_steps": "flag"} | defaults
    assert describe_sources(settings, sources) == (
        "settings from the checkpoint: context=step history=1 output_format=react decoding=free "
        "max_new_tokens=96 temperature=0.5; from flags: max_steps=20"
    )
    assert settings.prompt_config() == PromptConfig("step", 1, "react")
    assert settings.decoding_config() == DecodingConfig("free", 96, temperature=0.5)


def test_other_policies_take_flags_then_fallbacks(tmp_path):
    partial = _checkpoint(tmp_path, {"model": "x", "history": 4})  # an older or hand-made checkpoint
    settings, sources = resolve_settings(partial, NO_FLAGS)
    assert settings == PolicySettings(history=4) and sources["history"] == "checkpoint"
    assert {s for name, s in sources.items() if name != "history"} == {"default"}
    settings, sources = resolve_settings("embedded", NO_FLAGS | {"temperature": 0.7})
    assert settings == PolicySettings(temperature=0.7)
    assert describe_sources(settings, sources) == (
        "settings from flags: temperature=0.7; by default: context=step history=2 output_format=action "
        "decoding=constrained max_new_tokens=64 max_steps=50"
    )
    settings, sources = resolve_settings("expert", NO_FLAGS | {"history": 3})  # a baseline has no prompt
    assert describe_sources(settings, sources) == "settings by default: max_steps=50"


def test_bad_settings_name_the_flag():
    with pytest.raises(ValueError, match="--max-steps: expected a positive integer, got 0"):
        PolicySettings(max_steps=0)
    with pytest.raises(ValueError, match=r"--decoding: expected one of \['constrained', 'free'\], got 'greedy'"):
        dataclasses.replace(PolicySettings(), decoding="greedy")
    with pytest.raises(ValueError, match=r"expected settings among .*, got \['top_k'\]"):
        resolve_settings("embedded", {"top_k": 5})
