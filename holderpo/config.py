"""The training configuration: one dataclass, documented field by field, validated up front.

Values come from the defaults below, then a YAML file (`--config FILE`), then command-line
flags (`--group-size 4`); `validate()` runs before any work starts and names the option at fault.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def _f(default: Any, help: str, **choices: Any) -> Any:
    return field(default=default, metadata={"help": help, **choices})


@dataclass
class TrainConfig:
    # -- run --------------------------------------------------------------------------------
    name: str = _f("", "run name; the run folder is runs_dir/name (default: preset-seed-timestamp)")
    runs_dir: str = _f("runs", "folder holding run folders")
    seed: int = _f(0, "seed of the game sampler, episode seeds and model initialisation")
    # -- games ------------------------------------------------------------------------------
    train_games: str = _f("", "training games: a folder, or official:train from $ALFWORLD_DATA")
    heldout_games: str = _f("", "held-out games for evaluation ('' skips evaluation)")
    heldout_episodes: int = _f(0, "evaluate on the first N held-out games (0: all)")
    trust_game_files: bool = _f(False, "load games whose grammar is not alfworld's (runs their code)")
    generate_train: int = _f(0, "if train_games holds no games, first generate this many there (0: never)")
    generate_heldout: int = _f(0, "if heldout_games holds no games, first generate this many there (0: never)")
    generate_size: str = _f("tiny", "scene size of generated games", choices=("tiny", "small", "alfworld"))
    generate_seed: int = _f(0, "seed of generated games (fixed apart from the run seed, so runs share games)")
    # -- model ------------------------------------------------------------------------------
    model: str = _f("embedded", "embedded, a Hugging Face id, or a local model folder")
    dtype: str = _f("float32", "model dtype", choices=("float32", "bfloat16", "float16"))
    device: str = _f("cpu", "torch device: cpu, cuda, cuda:1, ...")
    finetune: str = _f("lora", "what trains: full (all weights), lora (peft adapters), top (the top "
                       "`top_layers` blocks and the final norm)", choices=("full", "lora", "top"))
    lora_rank: int = _f(16, "LoRA rank")
    lora_alpha: float = _f(32.0, "LoRA alpha (scale = alpha / rank)")
    top_layers: int = _f(2, "finetune=top: how many of the last transformer blocks train (rollouts record "
                            "the frozen blocks' output, so updates run only these)")
    # -- warm start ----------------------------------------------------------------------------
    sft_epochs: int = _f(0, "behaviour cloning epochs on the training games' walkthroughs before RL (0: none)")
    sft_lr: float = _f(1e-4, "behaviour cloning learning rate")
    sft_batch_size: int = _f(16, "behaviour cloning samples per step")
    # -- rollouts ---------------------------------------------------------------------------
    games_per_iteration: int = _f(4, "games drawn per iteration (each played group_size times)")
    group_size: int = _f(8, "episodes per game and iteration (G of GRPO)")
    max_steps: int = _f(50, "step limit of an episode")
    num_envs: int = _f(16, "episodes played at once")
    num_workers: int = _f(0, "env processes (0: one per CPU)")
    context: str = _f("step", "step: one sample per turn; full: one per episode", choices=("step", "full"))
    history: int = _f(2, "step context: earlier (observation, action) pairs in the prompt")
    output_format: str = _f("action", "action: the command only; react: <think> then <action>",
                            choices=("action", "react"))
    decoding: str = _f("constrained", "constrained: only admissible commands; free: any text",
                       choices=("constrained", "free"))
    max_new_tokens: int = _f(64, "cap on response tokens per turn")
    temperature: float = _f(1.0, "rollout sampling temperature (1.0 keeps log-probs the model's)")
    # -- objective --------------------------------------------------------------------------
    preset: str = _f("holderpo", "loss preset", choices=("holderpo", "grpo", "gspo", "gmpo", "ppo"))
    p_schedule: str = _f("linear", "shape of p over the run (holderpo preset)",
                         choices=("constant", "linear", "cosine", "sine", "power", "cubic"))
    p_start: float = _f(1.0, "p at the first iteration (holderpo preset)")
    p_end: float = _f(-1.0, "p at the last iteration (holderpo preset)")
    clip_low: float = _f(-1.0, "lower clip range (-1: the preset's own)")
    clip_high: float = _f(-1.0, "upper clip range (-1: the preset's own)")
    estimator: str = _f("grpo", "group advantage", choices=("grpo", "drgrpo", "rloo", "gigpo"))
    gigpo_omega: float = _f(1.0, "gigpo: weight of the step-level term")
    gigpo_gamma: float = _f(0.95, "gigpo: discount of step returns")
    skip_zero_signal: bool = _f(True, "drop episodes whose advantages are all 0 (no learning signal)")
    win_reward: float = _f(10.0, "return of a won episode")
    invalid_penalty: float = _f(0.1, "subtracted from the return per inadmissible or malformed action")
    sample_weighting: str = _f("sample", "sample: every sample weighs the same (long episodes weigh "
                               "more); episode: every episode weighs the same", choices=("sample", "episode"))
    kl_coef: float = _f(0.01, "weight of the KL penalty to the reference model (0: no reference)")
    kl_estimator: str = _f("k3", "KL estimator", choices=("k1", "k2", "k3", "low_var_kl"))
    entropy_coef: float = _f(0.0, "entropy bonus weight")
    # -- optimisation -----------------------------------------------------------------------
    iterations: int = _f(10, "training iterations (collect, then update)")
    epochs: int = _f(1, "passes over each iteration's samples")
    minibatch_size: int = _f(32, "samples per optimiser step")
    micro_batch_size: int = _f(8, "samples per forward/backward (gradient accumulation)")
    lr: float = _f(1e-5, "learning rate (AdamW)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0: off)")
    max_bad_steps: int = _f(3, "NaN/inf losses in a row before the run saves and stops")
    # -- evaluation and checkpoints ---------------------------------------------------------
    eval_every: int = _f(0, "evaluate on the held-out games every N iterations (0: only before/after)")
    eval_temperature: float = _f(1.0, "sampling temperature of held-out evaluation")
    checkpoint_every: int = _f(0, "save a checkpoint every N iterations (0: only at the end)")

    def validate(self) -> "TrainConfig":
        """Check every value; raise ValueError naming the option and what to pass instead."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"--{_flag(f.name)}: expected one of {list(choices)}, got {getattr(self, f.name)!r}")
        positive = ("games_per_iteration", "group_size", "max_steps", "num_envs", "max_new_tokens",
                    "iterations", "epochs", "minibatch_size", "micro_batch_size", "lora_rank",
                    "top_layers", "max_bad_steps", "sft_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{_flag(name)}: expected a positive integer, got {getattr(self, name)}")
        non_negative = ("generate_train", "generate_heldout", "sft_epochs", "num_workers", "heldout_episodes", "kl_coef", "entropy_coef", "invalid_penalty",
                        "weight_decay", "max_grad_norm", "eval_every", "checkpoint_every", "history")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"--{_flag(name)}: expected a value >= 0, got {getattr(self, name)}")
        for name in ("lr", "sft_lr", "temperature", "eval_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{_flag(name)}: expected a value > 0, got {getattr(self, name)}")
        if self.group_size < 2 and self.estimator != "drgrpo":
            raise ValueError(f"--group-size: group advantages need at least 2 episodes per game, got "
                             f"{self.group_size}")
        if self.minibatch_size % self.micro_batch_size:
            raise ValueError(f"--minibatch-size ({self.minibatch_size}) must be a multiple of "
                             f"--micro-batch-size ({self.micro_batch_size})")
        if not self.train_games:
            raise ValueError("--train-games: expected a games folder or official:train, got nothing")
        for name in ("clip_low", "clip_high"):
            if getattr(self, name) != -1.0 and getattr(self, name) <= 0:
                raise ValueError(f"--{_flag(name)}: expected > 0 (or -1 for the preset's), got {getattr(self, name)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the YAML file, then `overrides`; unknown keys are an error naming them."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"--config: no such file {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"--config: {path} must hold a mapping of option: value, got {type(loaded).__name__}")
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; see `holderpo train --help` for the list")
    return TrainConfig(**values).validate()


def add_config_flags(parser) -> None:
    """One `--flag` per config field, typed and documented from the dataclass (default None:
    only flags given on the command line override the file)."""
    for f in dataclasses.fields(TrainConfig):
        kind = type(f.default)
        kwargs: dict[str, Any] = {"default": None, "help": f"{f.metadata['help']} (default: {f.default!r})"}
        if kind is bool:
            kwargs["type"], kwargs["metavar"] = _parse_bool, "BOOL"
        else:
            kwargs["type"] = kind
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(f"--{_flag(f.name)}", dest=f.name, **kwargs)


def config_overrides(args) -> dict[str, Any]:
    """The config options given as flags on a parsed command line (None: not given)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
            if getattr(args, f.name, None) is not None}
