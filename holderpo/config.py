"""The training configuration: one dataclass, documented field by field, validated up front.

Its defaults are the default run, `holderpo train` with no arguments: learning on a 2-core laptop
CPU with the embedded SmolLM2-135M-Instruct in about 30 minutes. Where a default is a tuned
choice, the comment beside it says why. A YAML file (`--config NAME` for a shipped one, or
`--config FILE`) overrides the defaults, command-line flags (`--group-size 4`) override both;
`validate()` runs before any work starts and names the option at fault.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agents.policy_settings import ENGINES
from envs.backends import ENV_BACKENDS
from holderpo.run_logging import TRACKERS, require_tracker

SHIPPED_CONFIGS = Path(__file__).parent / "configs"  # package data: `--config NAME` works from a wheel


def _f(default: Any, help: str, **choices: Any) -> Any:
    return field(default=default, metadata={"help": help, **choices})


@dataclass
class TrainConfig:
    # -- run --------------------------------------------------------------------------------
    name: str = _f("", "run name; the run folder is runs_dir/name (default: preset-seed-timestamp)")
    runs_dir: str = _f("runs", "folder holding run folders")
    seed: int = _f(0, "seed of the game sampler, episode seeds and model initialisation")
    # -- games ------------------------------------------------------------------------------
    # Generated once, then reused. Tiny scenes (at most 6 receptacles) have short solutions, so
    # episodes are short and a small model can find wins; the held-out set uses other floor plans.
    train_games: str = _f("games/default/train", "training games: a folder, or official:train from $ALFWORLD_DATA")
    heldout_games: str = _f("games/default/valid", "held-out games for evaluation ('' skips evaluation)")
    # >= 100 paired episodes before and after RL, the same games and seeds
    heldout_episodes: int = _f(100, "evaluate on the first N held-out games (0: all)")
    trust_game_files: bool = _f(False, "load games whose grammar is not alfworld's (runs their code)")
    generate_train: int = _f(60, "if train_games holds no games, first generate this many there (0: never)")
    generate_heldout: int = _f(100, "if heldout_games holds no games, first generate this many there (0: never)")
    generate_size: str = _f("tiny", "scene size of generated games", choices=("tiny", "small", "alfworld"))
    generate_seed: int = _f(0, "seed of generated games (fixed apart from the run seed, so runs share games)")
    # -- model ------------------------------------------------------------------------------
    model: str = _f("embedded", "embedded, a Hugging Face id, a local model folder, or a training checkpoint")
    # bfloat16/float16: trained weights and optimizer state stay float32 (master weights) and the
    # forward runs under autocast, as verl's FSDP mixed precision does; a bf16 weight cannot take
    # a step of lr 1e-6 (one bf16 ulp at |w| = 0.02 is ~1.2e-4)
    dtype: str = _f(
        "float32",
        "compute precision of forward passes (autocast); weights and optimizer state stay float32",
        choices=("float32", "bfloat16", "float16"),
    )
    device: str = _f("cpu", "torch device: cpu, cuda, cuda:1, ...")
    # vllm: rollouts and evaluations generate with vLLM holding its own copy of the weights, synced
    # after every update (agents/vllm_engine.py); several times faster on a GPU. hf: transformers on
    # the trained model itself, which on a CPU is as fast and records the trunk states (finetune=top)
    engine: str = _f(
        "hf", "what generates rollouts and evaluations: hf (transformers) or vllm (the vllm extra)", choices=ENGINES
    )
    # 0: vLLM shares the trainer's process and GPU, weights copied in memory; N: engines on GPUs of
    # their own, weights sent after each update (docs/generation.md says when each pays off)
    engine_workers: int = _f(
        0,
        "engine=vllm: 0 runs vLLM in the training process; N runs N engines in Ray actors, one per GPU "
        "(agents/ray_engine.py; the ray extra)",
    )
    # top: the frozen trunk's output is recorded during rollouts, so an update runs just the top
    # blocks (agents/trunk.py), 4x cheaper than the whole model
    finetune: str = _f(
        "top",
        "what trains: full (all weights), lora (peft adapters), top (the top `top_layers` blocks and the final norm)",
        choices=("full", "lora", "top"),
    )
    lora_rank: int = _f(16, "LoRA rank")
    lora_alpha: float = _f(32.0, "LoRA alpha (scale = alpha / rank)")
    top_layers: int = _f(
        4,
        "finetune=top: how many of the last transformer blocks train (rollouts record "
        "the frozen blocks' output, so updates run only these)",
    )
    # -- warm start ----------------------------------------------------------------------------
    # RL learns on the training games: 1 epoch left most groups all-lost (RL +5); 2 gave +1..+18
    # over 3 seeds; 3 fit those games enough for mixed groups: +15..+26
    sft_epochs: int = _f(3, "behaviour cloning epochs on the training games' walkthroughs before RL (0: none)")
    sft_lr: float = _f(3e-4, "behaviour cloning learning rate")
    sft_batch_size: int = _f(16, "behaviour cloning samples per step")
    # off: a react warm start demonstrates an empty thought. on: a thought written from what each
    # turn's prompt shows (agents/thoughts.py), so the model learns to reason before it acts
    sft_thoughts: bool = _f(
        False, "react format: demonstrations think before each command (a synthesised thought), not an empty thought"
    )
    # -- rollouts ---------------------------------------------------------------------------
    games_per_iteration: int = _f(4, "games drawn per iteration (each played group_size times)")
    # 8 games x groups of 4 instead (on 2-epoch warm starts): +18/+17 on seeds 0/1, -9 on seed 2, whose
    # groups of 4 lost together
    group_size: int = _f(8, "episodes per game and iteration (G of GRPO)")
    # tiny games are solved in 4-11 steps; longer episodes mostly wander
    max_steps: int = _f(10, "step limit of an episode")
    num_envs: int = _f(32, "episodes played at once")
    num_workers: int = _f(0, "env processes (0: one per CPU)")
    # local: on one machine, worker processes start fastest and need no Ray; ray: env actors can
    # run on other nodes of a cluster, leaving this machine's cores to the model
    env_backend: str = _f(
        "local",
        "where the envs run: local (worker processes) or ray (Ray actors; the ray extra); same results",
        choices=ENV_BACKENDS,
    )
    # "": Ray started on this machine (127.0.0.1 only); a cluster's nodes join with `ray start`
    ray_address: str = _f(
        "", "env_backend=ray or engine_workers: auto or HOST:PORT of a running Ray cluster ('' starts one here)"
    )
    context: str = _f("step", "step: one sample per turn; full: one per episode", choices=("step", "full"))
    history: int = _f(1, "step context: earlier (observation, action) pairs in the prompt")  # short prompts
    output_format: str = _f(
        "action", "action: the command only; react: <think> then <action>", choices=("action", "react")
    )
    # official: verl-agent's ALFWorld template; ours is shorter, for the small default model
    prompt_style: str = _f(
        "ours",
        "ours: a short prompt; verl_agent: verl-agent's ALFWorld template (step count, [Observation/Action] "
        "history, admissible list, <think> then <action>; needs --context step --output-format react)",
        choices=("ours", "verl_agent"),
    )
    # constrained: the untrained model writes 0% admissible free text; this makes every action count
    decoding: str = _f(
        "constrained", "constrained: only admissible commands; free: any text", choices=("constrained", "free")
    )
    max_new_tokens: int = _f(64, "cap on response tokens per turn")
    max_think_tokens: int = _f(
        48, "react format, constrained decoding: cap on the free thought ('</think>' is forced there)"
    )
    # verl-agent: response. Ours trains the tokens that choose the command: a small model's thought
    # gets its episode's credit whether or not it mattered (the same under the action format)
    loss_tokens: str = _f(
        "action",
        "tokens of a response the loss covers: action (the command; with a free react response, its "
        "<action> span, none when malformed) or response (every token written, thought included: verl-agent)",
        choices=("action", "response"),
    )
    temperature: float = _f(1.0, "rollout sampling temperature (1.0 keeps log-probs the model's)")
    # -- objective --------------------------------------------------------------------------
    preset: str = _f(
        "holderpo",
        "loss preset: holderpo (sequence clip), holderpo_token (token clip, Eq. 11), grpo (ours: sequence "
        "mean), grpo_verl (verl's: token mean, dual clip 3), drgrpo (constant length divisor, mean-only "
        "advantage), gspo, gmpo, ppo",
        choices=("holderpo", "holderpo_token", "grpo", "grpo_verl", "drgrpo", "gspo", "gmpo", "ppo"),
    )
    p_schedule: str = _f(
        "linear",
        "shape of p over the run (holderpo presets); cubic is the official code's (steep at the ends), "
        "smoothstep its mirror (flat at the ends)",
        choices=("constant", "linear", "cosine", "sine", "power", "cubic", "smoothstep"),
    )
    p_start: float = _f(1.0, "p at the first iteration (holderpo presets)")
    p_end: float = _f(-1.0, "p at the last iteration (holderpo presets)")
    # A range belongs to one preset: `compare` runs every other preset at its published range
    clip_low: float = _f(-1.0, "lower clip range of `preset` only (-1: the preset's own)")
    clip_high: float = _f(-1.0, "upper clip range of `preset` only (-1: the preset's own)")
    estimator: str = _f("grpo", "group advantage", choices=("grpo", "drgrpo", "rloo", "gigpo"))
    gigpo_omega: float = _f(1.0, "gigpo: weight of the step-level term")
    gigpo_gamma: float = _f(0.95, "gigpo: discount of step returns")
    # the GiGPO paper's form; verl-agent's run scripts default to mean_norm
    gigpo_mode: str = _f(
        "mean_std_norm",
        "gigpo: mean_std_norm divides both terms by their group's std (the GiGPO paper), mean_norm only "
        "centres them (verl-agent's default)",
        choices=("mean_std_norm", "mean_norm"),
    )
    # all-equal groups carry no gradient: skipping them saves their forward/backward passes
    skip_zero_signal: bool = _f(True, "drop episodes whose advantages are all 0 (no learning signal)")
    win_reward: float = _f(10.0, "return of a won episode")
    invalid_penalty: float = _f(0.1, "subtracted from the return per inadmissible or malformed action")
    # verl-agent: step (a format failure costs its own step row only); ours also charges a
    # well-formed command the game rejects (a wasted turn), and keeps one return per episode
    invalid_penalty_mode: str = _f(
        "episode",
        "episode: R = win - penalty per inadmissible or malformed turn, one return per episode; step "
        "(verl-agent): -penalty on the reward row of each malformed turn only (needs grpo_statistics: steps)",
        choices=("episode", "step"),
    )
    # verl-agent: steps (compute_mean_std_cross_steps); ours weighs every episode the same in its
    # group's baseline, so long losing episodes are not what the mean is made of
    grpo_statistics: str = _f(
        "episodes",
        "grpo/drgrpo group mean and std: over the episode returns (episodes), or over every step row of "
        "the group, each carrying its return (steps, verl-agent)",
        choices=("episodes", "steps"),
    )
    sample_weighting: str = _f(
        "sample",
        "sample: every sample weighs the same (long episodes weigh more); episode: every episode weighs the same",
        choices=("sample", "episode"),
    )
    # 0: no reference pass, a third less compute; short runs stay close to the start anyway
    kl_coef: float = _f(0.0, "weight of the KL penalty to the reference model (0: no reference)")
    kl_estimator: str = _f("k3", "KL estimator", choices=("k1", "k2", "k3", "low_var_kl"))
    # verl-agent: 0.001. The default run was tuned and measured without it; under constrained
    # decoding every sample is an admissible command already
    entropy_coef: float = _f(0.0, "entropy bonus weight")
    # verl scales each micro-batch's loss (its token means included) by its share of the samples,
    # so its update changes with the micro-batch size and with the number of GPUs; exact makes each
    # micro-batch compute its exact part of the minibatch's loss, so that any cut gives one update
    loss_shares: str = _f(
        "exact",
        "how micro-batches add up to a minibatch's loss: exact (policy loss by each preset's own mean, KL "
        "and entropy by tokens: the same update whatever the micro-batch size or number of processes) or "
        "verl (every term by the micro-batch's share of the sample weight, as verl does)",
        choices=("exact", "verl"),
    )
    # verl always recomputes them; auto differs only in float32, where the sampler's own log-probs
    # match the training forward to ~1.5e-5 per token and recomputing would cost a forward pass
    recompute_old_logprobs: str = _f(
        "auto",
        "score the old log-probs with the training forward before the update: auto (when the sampling "
        "precision or engine differs from training's, e.g. bfloat16), always, never (the sampler's)",
        choices=("auto", "always", "never"),
    )
    # -- optimisation -----------------------------------------------------------------------
    # 59-123 s each on a 2-core CPU: 15 minutes, ~20 with the 5-minute warm start (budget: 30)
    iterations: int = _f(10, "training iterations (collect, then update)")
    # 2 epochs (on 2-epoch warm starts): +7..+11 over 3 seeds (mean +8.7) against +1..+18 (mean +11.3)
    epochs: int = _f(1, "passes over each iteration's samples")
    minibatch_size: int = _f(32, "samples per optimiser step")  # ~5 optimiser steps per iteration: few iterations
    micro_batch_size: int = _f(16, "samples per forward/backward (gradient accumulation)")
    # far above the GPU recipe's 1e-6: few updates, and only the top 4 blocks train
    lr: float = _f(2e-4, "learning rate (AdamW)")
    # verl: 0.01. Over the default run's ~43 steps at lr 2e-4 it would shrink the trained weights by
    # under 0.01%; the run was measured without it
    weight_decay: float = _f(0.0, "AdamW weight decay")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0: off)")
    max_bad_steps: int = _f(3, "NaN/inf losses in a row before the run saves and stops")
    # -- evaluation and checkpoints ---------------------------------------------------------
    eval_every: int = _f(0, "evaluate on the held-out games every N iterations (0: only before/after)")
    # the recipe validates at 0.4; ours measures held-out success with the policy RL trains (T = 1)
    eval_temperature: float = _f(1.0, "sampling temperature of held-out evaluation")
    # an interrupted run loses at most 5 iterations (Ctrl-C saves at once)
    checkpoint_every: int = _f(5, "save a checkpoint every N iterations (0: only at the end)")
    # TensorBoard needs no account or server; wandb suits a team comparing many runs in one place
    tracker: str = _f(
        "tensorboard",
        "where metrics go besides metrics.jsonl (always written): tensorboard (RUN_DIR/tensorboard, when "
        "installed) or wandb (the wandb extra; WANDB_MODE=offline needs no account)",
        choices=TRACKERS,
    )

    def validate(self) -> TrainConfig:
        """Check every value; raise ValueError naming the option and what to pass instead."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, _checked_type(f.name, getattr(self, f.name), type(f.default)))
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"--{_flag(f.name)}: expected one of {list(choices)}, got {getattr(self, f.name)!r}")
        if self.ray_address and self.env_backend != "ray" and not self.engine_workers:
            raise ValueError(
                f"--ray-address {self.ray_address}: expected --env-backend ray or --engine-workers N, "
                f"got --env-backend {self.env_backend}"
            )
        positive = (
            "games_per_iteration",
            "group_size",
            "max_steps",
            "num_envs",
            "max_new_tokens",
            "max_think_tokens",
            "iterations",
            "epochs",
            "minibatch_size",
            "micro_batch_size",
            "lora_rank",
            "top_layers",
            "max_bad_steps",
            "sft_batch_size",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{_flag(name)}: expected a positive integer, got {getattr(self, name)}")
        non_negative = (
            "seed",
            "generate_seed",
            "generate_train",
            "generate_heldout",
            "sft_epochs",
            "num_workers",
            "engine_workers",
            "heldout_episodes",
            "kl_coef",
            "entropy_coef",
            "invalid_penalty",
            "weight_decay",
            "max_grad_norm",
            "eval_every",
            "checkpoint_every",
            "history",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"--{_flag(name)}: expected a value >= 0, got {getattr(self, name)}")
        for name in ("lr", "sft_lr", "temperature", "eval_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{_flag(name)}: expected a value > 0, got {getattr(self, name)}")
        if self.group_size < 2 and self.estimator != "drgrpo":
            raise ValueError(f"--group-size: group advantages need at least 2 episodes per game, got {self.group_size}")
        if self.grpo_statistics == "steps" and self.estimator not in ("grpo", "drgrpo"):
            raise ValueError(f"--grpo-statistics steps: expected --estimator grpo or drgrpo, got {self.estimator!r}")
        if self.invalid_penalty_mode == "step" and self.grpo_statistics != "steps" and self.estimator != "gigpo":
            raise ValueError(
                "--invalid-penalty-mode step puts the penalty on its own step row: expected "
                "--grpo-statistics steps (or --estimator gigpo)"
            )
        if self.engine_workers and self.engine != "vllm":
            raise ValueError(
                f"--engine-workers {self.engine_workers}: engine workers hold vLLM engines, expected --engine vllm, "
                f"got --engine {self.engine}"
            )
        if self.sft_thoughts and self.output_format != "react":
            raise ValueError("--sft-thoughts: demonstrations think in the react format, expected --output-format react")
        if self.prompt_style == "verl_agent" and (self.context, self.output_format) != ("step", "react"):
            raise ValueError("--prompt-style verl_agent: expected --context step and --output-format react")
        if self.minibatch_size % self.micro_batch_size:
            raise ValueError(
                f"--minibatch-size ({self.minibatch_size}) must be a multiple of "
                f"--micro-batch-size ({self.micro_batch_size})"
            )
        if not self.train_games:
            raise ValueError("--train-games: expected a games folder or official:train, got nothing")
        for name in ("clip_low", "clip_high"):
            if getattr(self, name) != -1.0 and getattr(self, name) <= 0:
                raise ValueError(f"--{_flag(name)}: expected > 0 (or -1 for the preset's), got {getattr(self, name)}")
        require_tracker(self.tracker)  # a missing package is found now, not after the model loads
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _checked_type(name: str, value: Any, kind: type) -> Any:
    """`value` as an option of type `kind`, or a ValueError naming the option. No coercion from
    text: in YAML `trust_game_files: "false"` is a non-empty string, which Python reads as true,
    so a quoted value is refused rather than guessed at. Integers are accepted for floats."""
    if kind is bool and type(value) is not bool:
        raise ValueError(f"--{_flag(name)}: expected true or false (unquoted in YAML), got {value!r}")
    if kind is int and type(value) is not int:
        raise ValueError(f"--{_flag(name)}: expected an integer, got {value!r}")
    if kind is float:
        if type(value) not in (int, float):
            raise ValueError(f"--{_flag(name)}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"--{_flag(name)}: expected a finite number, got {value!r}")
        return float(value)
    if kind is str and not isinstance(value, str):
        raise ValueError(f"--{_flag(name)}: expected text, got {value!r} ({type(value).__name__}); quote it in YAML")
    return value


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def shipped_configs() -> list[str]:
    """Names of the configs shipped with the package (`--config NAME`)."""
    return sorted(path.stem for path in SHIPPED_CONFIGS.glob("*.yaml"))


def config_file(source: str | Path) -> Path:
    """The YAML file that `--config` names: a file path, or the name of a shipped config."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    name = str(source).removesuffix(".yaml")
    if name in shipped_configs():
        return SHIPPED_CONFIGS / f"{name}.yaml"
    raise ValueError(
        f"--config: expected a YAML file or a shipped config name among {shipped_configs()}, "
        f"got {str(source)!r} (no such file)"
    )


def load_config(source: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The defaults, then the YAML file `source` (a path or a shipped config's name), then
    `overrides` (None values are skipped); unknown keys are an error naming them."""
    values: dict[str, Any] = {}
    if source is not None:
        path = config_file(source)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            problem = " ".join(str(error).split())  # yaml's message spans lines; keep the refusal on one
            raise ValueError(f"--config: {path} is not a YAML file of option: value ({problem})") from None
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
    """`--config` and one `--flag` per config field, typed and documented from the dataclass
    (default None: only flags given on the command line override the defaults and the file)."""
    parser.add_argument(
        "--config",
        default=None,
        metavar="NAME|FILE",
        help=f"a shipped config ({', '.join(shipped_configs())}) or a YAML file of options; "
        "it overrides the defaults below, flags override it",
    )
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
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name, None) is not None
    }
