"""The settings a policy plays by (prompt, decoding, step limit), and where each one came from.

A training checkpoint carries its run's resolved config (`agents.checkpoint_format.read_info`), so
`holderpo eval --policy runs/<name>/final` plays the way the run evaluated it: the run's context,
history, output format, decoding, response cap, evaluation temperature and step limit, unless a
flag overrides one. Any other model (the embedded one, a model folder, a Hugging Face id) takes the
flags, else the fallbacks below; a scripted baseline only takes the step limit.

This module imports no torch, so command-line help can list the settings at once.

    settings, sources = resolve_settings("runs/demo/final", {"max_steps": 20})
    print(describe_sources(settings, sources))  # settings from the checkpoint: context=step ...
    policy = make_policy("runs/demo/final", settings)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.baselines import BASELINES
from agents.checkpoint_format import MARKER, CheckpointError, is_checkpoint, read_info
from agents.prompts import OURS, PROMPT_STYLES, PromptConfig

# what generates a learned policy's responses (`agents.engines`): transformers, or vLLM (an extra)
ENGINES = ("hf", "vllm")

# where a setting came from -> how the one-line description names it
SOURCES = {"checkpoint": "from the checkpoint", "flag": "from flags", "default": "by default"}

# setting -> the training option it is read from in a checkpoint's config
RUN_OPTION = {
    "context": "context",
    "history": "history",
    "output_format": "output_format",
    "decoding": "decoding",
    "max_new_tokens": "max_new_tokens",
    "temperature": "eval_temperature",  # a checkpoint plays as its run's held-out evaluation did
    "max_steps": "max_steps",
    "prompt_style": "prompt_style",
    "max_think_tokens": "max_think_tokens",
}
# setting -> the value at which the one-line description leaves it out: the runs that predate the
# setting played by it, and their line reads as it always did
UNNAMED_AT = {"prompt_style": OURS, "max_think_tokens": 48}


def _s(default: Any, help: str, **choices: Any) -> Any:
    return field(default=default, metadata={"help": help, **choices})


@dataclass(frozen=True)
class PolicySettings:
    """How a policy plays. The defaults are the fallbacks of a policy that is not a training
    checkpoint: those of `PromptConfig`, `DecodingConfig` and `envs.alfworld_env.DEFAULT_MAX_STEPS`
    (written out here because agents.llm_policy imports torch; a test holds them equal)."""

    context: str = _s(
        "step", "step: a prompt per turn; full: the whole episode as one conversation", choices=("step", "full")
    )
    history: int = _s(2, "step context: earlier (observation, action) pairs in the prompt")
    output_format: str = _s(
        "action", "action: the command alone; react: <think> then <action>", choices=("action", "react")
    )
    decoding: str = _s(
        "constrained", "constrained: sample only admissible commands; free: any text", choices=("constrained", "free")
    )
    max_new_tokens: int = _s(64, "cap on response tokens per turn")
    temperature: float = _s(1.0, "sampling temperature (a training checkpoint's is its run's eval_temperature)")
    max_steps: int = _s(50, "step limit of an episode")
    prompt_style: str = _s(
        OURS, "ours: a short prompt; verl_agent: verl-agent's ALFWorld template (needs react)", choices=PROMPT_STYLES
    )
    max_think_tokens: int = _s(48, "react format, constrained decoding: cap on the free thought")

    def __post_init__(self):
        for f in dataclasses.fields(self):  # a checkpoint's settings are JSON: any type can come in
            value, kind = getattr(self, f.name), type(f.default)
            if not _of_kind(value, kind):
                raise ValueError(f"--{_flag(f.name)}: expected {_KINDS[kind]}, got {value!r}")
        for name in ("max_new_tokens", "max_think_tokens", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{_flag(name)}: expected a positive integer, got {getattr(self, name)}")
        if self.history < 0:
            raise ValueError(f"--history: expected a value >= 0, got {self.history}")
        if self.temperature <= 0:
            raise ValueError(f"--temperature: expected a value > 0, got {self.temperature}")
        for f in dataclasses.fields(self):
            if f.metadata.get("choices") and getattr(self, f.name) not in f.metadata["choices"]:
                raise ValueError(
                    f"--{_flag(f.name)}: expected one of {list(f.metadata['choices'])}, got {getattr(self, f.name)!r}"
                )
        self.prompt_config()  # refuses a prompt style that does not go with the context or output format

    def prompt_config(self) -> PromptConfig:
        return PromptConfig(self.context, self.history, self.output_format, style=self.prompt_style)

    def decoding_config(self):
        """The `agents.llm_policy.DecodingConfig` of these settings."""
        from agents.llm_policy import DecodingConfig

        return DecodingConfig(
            self.decoding, self.max_new_tokens, max_think_tokens=self.max_think_tokens, temperature=self.temperature
        )


_KINDS = {int: "an integer", float: "a finite number", str: "text"}


def _of_kind(value: Any, kind: type) -> bool:
    """Whether `value` is a `kind` as a setting means it: no bool for a number, no NaN or infinity."""
    if kind is float:
        return type(value) in (int, float) and math.isfinite(value)
    return type(value) is kind


def _flag(name: str) -> str:
    return name.replace("_", "-")


def checkpoint_settings(checkpoint: str) -> dict[str, Any]:
    """The settings a training checkpoint's run played by, refused whole if its marker (which
    anyone can edit) holds no run config or a setting of the wrong kind."""
    marker = Path(checkpoint) / MARKER
    config = read_info(checkpoint).get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{marker} holds no run config (a 'config' object)")
    stored = run_settings(config)
    try:
        PolicySettings(**stored)
    except ValueError as error:
        raise CheckpointError(f"{marker}: a setting of its run is unusable: {error}") from None
    return stored


def run_settings(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a training run's held-out evaluation played by, read from its resolved config
    (an option the config lacks is left out)."""
    return {name: run_config[option] for name, option in RUN_OPTION.items() if option in run_config}


def resolve_settings(policy: str, flags: Mapping[str, Any]) -> tuple[PolicySettings, dict[str, str]]:
    """`policy`'s settings and where each came from ("flag", "checkpoint" or "default").

    A flag given (not None) wins; then, where `policy` is a training checkpoint, its run's own
    setting; then the fallback. A scripted baseline (expert, random) only has a step limit, so
    the sources name `max_steps` alone.
    """
    unknown = sorted(set(flags) - set(RUN_OPTION))
    if unknown:
        raise ValueError(f"expected settings among {list(RUN_OPTION)}, got {unknown}")
    stored = checkpoint_settings(policy) if is_checkpoint(policy) else {}
    values, sources = {}, {}
    for name in RUN_OPTION:
        if flags.get(name) is not None:
            values[name], sources[name] = flags[name], "flag"
        elif name in stored:
            values[name], sources[name] = stored[name], "checkpoint"
        else:
            sources[name] = "default"
    if policy in BASELINES:
        sources = {"max_steps": sources["max_steps"]}
    return PolicySettings(**values), sources


def describe_sources(settings: PolicySettings, sources: Mapping[str, str]) -> str:
    """One line: each setting that applies, grouped by where it came from (a setting at its
    `UNNAMED_AT` value left out)."""
    shown = {name: where for name, where in sources.items() if UNNAMED_AT.get(name) != getattr(settings, name)}
    groups = []
    for source, label in SOURCES.items():
        named = " ".join(f"{name}={getattr(settings, name)}" for name, where in shown.items() if where == source)
        if named:
            groups.append(f"{label}: {named}")
    return "settings " + "; ".join(groups)


def make_policy(name: str, settings: PolicySettings, engine: str = "hf"):
    """A scripted baseline by name, or the model `name` names (see `agents.models.load_policy_model`)
    as an `LLMPolicy` playing by `settings`, generating with `engine` (`agents.engines.ENGINES`)."""
    if name in BASELINES:
        return BASELINES[name]()
    from agents.llm_policy import LLMPolicy
    from agents.models import load_policy_model

    model, tokenizer = load_policy_model(name)
    generator = None
    if engine == "vllm":
        from agents.vllm_engine import VLLMEngine

        generator = VLLMEngine.for_model(model, tokenizer)
    prompt, decoding = settings.prompt_config(), settings.decoding_config()
    return LLMPolicy(model, tokenizer, prompt, decoding, name=name, engine=generator)
