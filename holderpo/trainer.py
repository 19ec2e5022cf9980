"""The HölderPO training loop.

Each iteration: draw games, play G episodes of each (collect), turn returns into group
advantages, then run `epochs` passes of minibatch updates of the Hölder-mean policy loss at the
scheduled p, plus a KL penalty to the frozen reference. Evaluation on held-out games, metrics,
checkpoints and exact resume sit around that loop; `Trainer.train` reads top to bottom.

Seams for scale: `collect` is the only place that generates (another engine plugs in there),
and `update` the only place that computes gradients. Under torchrun every rank runs this same
loop on its share of the episodes and samples (`holderpo.distributed`, `holderpo.parallel`);
rank 0 writes the run folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from agents.baselines import RandomAdmissiblePolicy
from agents.llm_policy import DecodingConfig, LLMPolicy
from agents.models import load_model
from agents.policy_settings import PolicySettings, run_settings
from agents.prefix_cache import weights_version
from agents.prompts import PromptConfig
from agents.trunk import top_blocks_reproduce
from envs.backends import open_envs
from envs.batched import BatchedEnvs
from envs.games import GameScan, find_games
from eval.evaluate import summarize
from holderpo.checkpoint import CheckpointError, checkpoints_newest_first, load_trainer_state, save_checkpoint
from holderpo.config import TrainConfig
from holderpo.distributed import SINGLE, Ranks, SampleLayout, rank_device, sample_layout
from holderpo.losses import LossPreset, configure_preset, exponent_diagnostics, policy_measure, total_loss
from holderpo.modeling import (
    MASTER_DTYPE,
    Reference,
    compute_precision,
    loss_scaler,
    prepare_for_training,
    trainable_parameters,
)
from holderpo.parallel import shaped_like, weight_sharing, whole
from holderpo.report import run_report
from holderpo.run_logging import RunLogger, plot_metrics, read_metrics
from holderpo.samples import (
    Minibatch,
    Sample,
    advantages,
    build_samples,
    loss_weight,
    recorded_trunk,
    score_samples,
    with_old_logprobs,
)
from holderpo.schedules import make_schedule
from holderpo.sft import clone_behaviour, demonstration_samples
from rollouts.records import EpisodeRecord, EpisodeSpec
from rollouts.runner import play_episodes
from rollouts.specs import iteration_games, iteration_specs, make_specs
from rollouts.transcripts import TranscriptWriter

__all__ = ["Trainer", "TrainerState", "TrainingDiverged", "iteration_games", "progress_line"]


class TrainingDiverged(RuntimeError):
    """The loss was NaN or infinite too many times in a row; the run saved and stopped."""


@dataclass
class TrainerState:
    """Where a run stands; every checkpoint saves it, so a resumed run goes on exactly.

    Held-out evaluations are the evaluator's summary plus `won` per episode id: every
    evaluation of a run plays the same episodes, so any two of them pair up.
    """

    iteration: int = 0  # iterations finished
    wall_seconds: float = 0.0  # time spent training so far, over all resumes
    bad_steps: int = 0  # NaN/inf losses in a row (the run stops at max_bad_steps)
    skipped_steps: int = 0  # NaN/inf losses in all
    heldout_random: dict | None = None  # the random admissible policy, before anything else
    heldout_untrained: dict | None = None  # the model as loaded
    heldout_before: dict | None = None  # the policy RL starts from (after the warm start, if any)
    sft_done: bool = False
    sft_losses: list[float] = field(default_factory=list)  # behaviour cloning loss per epoch
    sft_samples: int = 0
    sft_seconds: float = 0.0

    # what a warm start leaves behind: its record and the evaluations made before RL
    WARM_START: ClassVar[tuple[str, ...]] = (
        "sft_done",
        "sft_losses",
        "sft_samples",
        "sft_seconds",
        "heldout_random",
        "heldout_untrained",
        "heldout_before",
    )

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainerState:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in saved.items() if key in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingBatch:
    """An iteration's training samples (this rank's), where they sit in the whole batch over all
    ranks, and what the rollouts of all ranks measured."""

    samples: list[Sample]
    layout: SampleLayout
    metrics: dict[str, float]  # rollout/... and update/samples


@dataclass
class Played:
    """Episodes played by the ranks: this rank's, whole, and every rank's in the order of their
    specs, without tokens (the very same list in one process)."""

    records: list[EpisodeRecord]
    everyone: list[EpisodeRecord]


@dataclass
class RunSession:
    """What stays open while a run trains: its envs, transcript files, metrics log and Ctrl-C flag."""

    envs: BatchedEnvs
    train_log: TranscriptWriter | None  # None on ranks other than 0: rank 0 writes the run folder
    eval_log: TranscriptWriter | None
    logger: RunLogger | None
    stop: StopRequest


class StopRequest:
    """Inside `with`, Ctrl-C asks the run to stop at the next iteration boundary (it saves
    first); a second Ctrl-C stops at once, and the last checkpoint stays usable."""

    def __init__(self, echo: Callable[[str], None]):
        self.requested = False
        self.echo = echo

    def __enter__(self) -> StopRequest:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.echo("stopping after this iteration (Ctrl-C again to stop at once)")


# -- pure helpers ---------------------------------------------------------------------------------
def rollout_metrics(records: Sequence[EpisodeRecord], returns: torch.Tensor, zero_signal: torch.Tensor) -> dict:
    steps = sum(r.steps for r in records)
    return {
        "rollout/success_rate": sum(r.won for r in records) / len(records),
        "rollout/return_mean": float(returns.mean()),
        "rollout/episode_length": steps / len(records),
        "rollout/admissible_rate": sum(r.admissible_actions for r in records) / max(steps, 1),
        "rollout/errored": sum(r.outcome == "errored" for r in records),
        "rollout/zero_signal_fraction": float(zero_signal.float().mean()),
    }


def _silent(line: str) -> None:
    """The console of ranks other than 0: rank 0 speaks for the run."""


def progress_line(iteration: int, iterations: int, metrics: dict) -> str:
    """One console line per iteration. An iteration whose groups all won or all lost together
    has nothing to learn from and makes no update; it says so instead of printing a NaN loss."""
    update = (
        f"loss={metrics['loss/policy']:+.4f}"
        if "loss/policy" in metrics
        else "no update (every group won or lost together)"
    )
    return (
        f"iteration {iteration + 1}/{iterations}  p={metrics['schedule/p']:+.3f}  "
        f"success={metrics['rollout/success_rate']:.2f}  return={metrics['rollout/return_mean']:+.2f}  "
        f"samples={metrics['update/samples']}  {update}"
    )


def minibatch_indices(count: int, minibatch_size: int, epochs: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Sample indices of each optimizer step: `epochs` shuffled passes, cut into minibatches."""
    for _ in range(epochs):
        order = rng.permutation(count)
        for start in range(0, count, minibatch_size):
            yield order[start : start + minibatch_size]


def micro_batches(items: Sequence, size: int) -> list[Sequence]:
    """`items` cut into consecutive micro-batches of `size` (the last may be shorter)."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def recomputes_old_logprobs(option: str, dtype: str, separate_engine: bool = False) -> bool:
    """Whether the old log-probs are rescored by the training forward before an update.

    The sampler's log-probs come from a KV-cached, token-by-token forward: in float32 they match
    the training forward to ~1.5e-5 per token, but in bf16 to only 2.5e-3..6e-3, which puts most
    sequences outside GSPO's 3e-4 clip before any update. "auto" therefore rescores whenever the
    precision is not float32, and a separate generation engine (other kernels, possibly other
    weights' copies) is always rescored, whatever the option says.
    """
    if separate_engine or option == "always":
        return True
    return option == "auto" and dtype != "float32"


# metrics that are means over a micro-batch's loss tokens (the others are over its samples)
TOKEN_MEAN_METRICS = ("loss/kl", "loss/entropy")

# largest |engine - model| log-prob a synced engine may show: float32 kernels agree to ~3e-5 (measured
# on the embedded model); half precisions round logits to ~1e-2
SYNC_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.25, "float16": 0.25}


def without_tokens(record: EpisodeRecord) -> EpisodeRecord:
    """An episode as its transcript and metrics need it: no token ids, log-probs or trunk states
    (what ranks send each other)."""
    return dataclasses.replace(record, turns=[dataclasses.replace(turn, tokens=None) for turn in record.turns])


def check_ranks(config: TrainConfig, ranks: Ranks) -> None:
    """Refuse, before any work, a run that cannot be split over `ranks` as configured."""
    if not ranks.distributed:
        return
    if config.games_per_iteration < ranks.world_size:
        raise ValueError(
            f"--games-per-iteration {config.games_per_iteration}: each of the {ranks.world_size} processes "
            "plays whole groups, so draw at least one game per process"
        )
    if config.finetune == "full" and config.engine == "vllm":
        raise ValueError("--engine vllm with --finetune full over several processes (FSDP2) is not supported yet")


def timed(function: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """`function(*args)` and the seconds it took."""
    tick = time.time()
    return function(*args), time.time() - tick


def loss_preset(config: TrainConfig) -> LossPreset:
    """The objective a run trains with: its preset, with the config's clip range (`clip_low`,
    `clip_high`: -1 keeps the preset's own), its p schedule (annealed presets only) and, for
    presets that divide by a constant length (Dr.GRPO), the generation budget of one sample.
    `holderpo compare` prints these settings before training, from this same function."""
    budget = config.max_new_tokens * (config.max_steps if config.context == "full" else 1)
    return configure_preset(
        config.preset,
        clip_low=None if config.clip_low == -1.0 else config.clip_low,
        clip_high=None if config.clip_high == -1.0 else config.clip_high,
        schedule=make_schedule(config.p_schedule, config.p_start, config.p_end),
        norm_length=budget,
    )


# -- the trainer ----------------------------------------------------------------------------------
class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        resume: bool = False,
        echo: Callable[[str], None] = print,
        warm_start_from: Path | None = None,
        ranks: Ranks = SINGLE,
    ):
        check_ranks(config, ranks)
        self.cfg, self.run_dir, self.ranks = config, Path(run_dir), ranks
        self.echo = echo if ranks.is_main else _silent
        self.device = rank_device(config.device, ranks)
        # the folders skipped are reported by the run folder (`holderpo.run_folder`)
        trust = config.trust_game_files
        self.train_scan = find_games(config.train_games, trust)
        self.heldout_scan = find_games(config.heldout_games, trust) if config.heldout_games else GameScan()
        self.train_games, self.heldout_games = self.train_scan.games, self.heldout_scan.games
        self.preset = loss_preset(config)  # its clip range and p schedule are the run's
        self.estimator = self.preset.estimator or config.estimator  # Dr.GRPO is defined with its own

        torch.manual_seed(config.seed)  # LoRA's initialisation
        # float32 master weights and optimizer state; `dtype` is the precision forwards compute in
        base, self.tokenizer = load_model(config.model, MASTER_DTYPE, self.device)
        model = prepare_for_training(base, config.finetune, config.lora_rank, config.lora_alpha, config.top_layers)
        self.sharing = weight_sharing(config.finetune, ranks)  # replicated, or FSDP2 for full over ranks
        self.model = self.sharing.wrap(model)
        self.reference = Reference(self.model, config.finetune) if config.kl_coef > 0 else None
        self.optimizer = torch.optim.AdamW(
            trainable_parameters(self.model).values(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.scaler = loss_scaler(self.device, config.dtype)  # float16 only; else a pass-through
        prompt = PromptConfig(config.context, config.history, config.output_format, style=config.prompt_style)
        decoding = DecodingConfig(
            config.decoding,
            config.max_new_tokens,
            max_think_tokens=config.max_think_tokens,
            temperature=config.temperature,
            loss_tokens=config.loss_tokens,
        )
        self.trunk_layers = self._trunk_layers()
        # vLLM samples from its own copy of the weights, pushed before each generation that follows
        # a change (`engine_in_sync`); with transformers, rollouts sample with this very model
        self.engine = self._vllm_engine() if config.engine == "vllm" else None
        self.engine_weights, self.engine_sync_error = None, None  # the weights it holds, its last check
        self.recompute_old_logprobs = recomputes_old_logprobs(
            config.recompute_old_logprobs, config.dtype, separate_engine=self.engine is not None
        )
        self.policy = LLMPolicy(
            self.model, self.tokenizer, prompt, decoding, config.name, self.trunk_layers, engine=self.engine
        )
        # held-out evaluation plays by the settings `holderpo eval` reads back from a checkpoint
        evaluation = PolicySettings(**run_settings(config.to_dict()))
        self.eval_policy = LLMPolicy(
            self.model,
            self.tokenizer,
            evaluation.prompt_config(),
            evaluation.decoding_config(),
            name=config.name,
            engine=self.engine,
        )
        self.state = TrainerState()
        if resume:
            self._restore()
        elif warm_start_from is not None:
            self._adopt_warm_start(Path(warm_start_from))

    # -- the loop -------------------------------------------------------------------------------
    def train(self) -> dict:
        """The run: held-out baselines and the warm start, then per iteration collect ->
        advantages -> update -> evaluate/log/checkpoint, then the held-out evaluation after RL.
        Returns the report, or {} when Ctrl-C stopped the run (it saved; --resume goes on)."""
        cfg, state = self.cfg, self.state
        started = time.time() - state.wall_seconds
        with self.session() as run:
            self.before_rl(run)
            while state.iteration < cfg.iterations:
                if self.ranks.any(run.stop.requested):  # Ctrl-C on any rank stops them all here
                    return self.save_interrupted()
                p = self.preset.schedule(state.iteration, cfg.iterations)
                played, rollout_seconds = timed(self.collect, run.envs, state.iteration, run.train_log)
                batch = self.training_batch(played.records, played.everyone)
                update_metrics, update_seconds = timed(self.update, batch.samples, state.iteration, p, batch.layout)
                state.iteration += 1
                metrics = batch.metrics | {"schedule/p": p, "time/rollout": rollout_seconds} | update_metrics
                metrics |= {"time/update": update_seconds} | self.periodic_evaluation(run)
                state.wall_seconds = time.time() - started
                self.log(run, metrics)
                self.periodic_checkpoint()
            after = self.evaluate(run.envs, run.eval_log) if self.heldout_games else None
        state.wall_seconds = time.time() - started
        self.save(self.run_dir / "final")
        return self.report(after)

    @contextlib.contextmanager
    def session(self) -> Iterator[RunSession]:
        """The envs of this rank (as many slots as its share of an iteration's episodes, at most
        `num_envs`), the transcripts and metrics log (rank 0), and the Ctrl-C flag."""
        cfg, transcripts = self.cfg, self.run_dir / "transcripts"
        groups_here = -(-cfg.games_per_iteration // self.ranks.world_size)
        with contextlib.ExitStack() as stack:
            envs = stack.enter_context(
                open_envs(
                    cfg.env_backend,
                    min(cfg.num_envs, groups_here * cfg.group_size),
                    cfg.num_workers or None,
                    cfg.ray_address or None,
                    max_steps=cfg.max_steps,
                    trust_game_files=cfg.trust_game_files,
                )
            )
            train_log = eval_log = logger = None
            if self.ranks.is_main:
                train_log = stack.enter_context(TranscriptWriter(transcripts / "train.jsonl", cfg.preset, cfg.model))
                eval_log = stack.enter_context(TranscriptWriter(transcripts / "eval.jsonl", cfg.preset, cfg.model))
                logger = RunLogger(self.run_dir, cfg.tracker, config=cfg.to_dict(), run_name=cfg.name)
                stack.callback(logger.close)
            stop = stack.enter_context(StopRequest(self.echo))
            yield RunSession(envs, train_log, eval_log, logger, stop)

    # -- the stages -----------------------------------------------------------------------------
    def before_rl(self, run: RunSession) -> None:
        """Held-out baselines (random policy, untrained model), the warm start, and the held-out
        evaluation RL starts from; each once, so a resumed run skips what it has."""
        state = self.state
        if self.heldout_games and state.heldout_untrained is None:
            state.heldout_random = self.evaluate(run.envs, None, RandomAdmissiblePolicy())
            state.heldout_untrained = self.evaluate(run.envs, run.eval_log)
            self.echo(
                f"held-out success, random admissible policy: {state.heldout_random['success_rate']:.3f}; "
                f"untrained model: {state.heldout_untrained['success_rate']:.3f}"
            )
        if self.cfg.sft_epochs and not state.sft_done:
            self.warm_start()
        if self.heldout_games and state.heldout_before is None:
            state.heldout_before = (
                self.evaluate(run.envs, run.eval_log) if self.cfg.sft_epochs else state.heldout_untrained
            )
            self.echo(f"held-out success before RL: {state.heldout_before['success_rate']:.3f}")
            if self.cfg.sft_epochs:  # the warm-start checkpoint also keeps its evaluation (compare reuses both)
                self.save(self.checkpoint_path(0))

    def collect(self, envs: BatchedEnvs, iteration: int, writer: TranscriptWriter | None) -> Played:
        """The iteration's episodes: G per drawn game, this rank's share of them (whole groups)."""
        games = iteration_games(self.train_games, iteration, self.cfg.games_per_iteration, self.cfg.seed)
        specs = iteration_specs(games, iteration, self.cfg.group_size, self.cfg.seed)
        self.engine_in_sync()
        return self.play(envs, self.policy, specs, writer, "collect", shard_by=lambda index, spec: spec.group)

    def play(
        self,
        envs: BatchedEnvs,
        policy,
        specs: Sequence[EpisodeSpec],
        writer: TranscriptWriter | None,
        progress: str,
        shard_by: Callable[[int, EpisodeSpec], int],
    ) -> Played:
        """Play this rank's share of `specs` (those whose `shard_by` key it owns; all of them in
        one process). The transcript gets every rank's episodes: as each ends in one process,
        gathered in the order of `specs` when there are several."""
        mine = [index for index, spec in enumerate(specs) if self.ranks.owns(shard_by(index, spec))]
        single = not self.ranks.distributed
        with self.compute_precision(), self.sharing.gathered(self.model):
            records = play_episodes(
                envs,
                policy,
                [specs[index] for index in mine],
                on_episode_end=writer.write if single and writer is not None else None,
                progress=progress if self.ranks.is_main else None,
            )
        if single:
            return Played(records, records)
        placed: dict[int, EpisodeRecord] = {}
        for indices, shared in self.ranks.gather((mine, [without_tokens(record) for record in records])):
            placed.update(zip(indices, shared))
        everyone = [placed[index] for index in range(len(specs))]
        for record in everyone if writer is not None else ():
            writer.write(record)
        return Played(records, everyone)

    def training_batch(
        self, records: Sequence[EpisodeRecord], everyone: Sequence[EpisodeRecord] | None = None
    ) -> TrainingBatch:
        """Group advantages of this rank's episodes (a group never straddles ranks), the samples
        the update trains on, where they sit among all ranks' samples, and the rollout metrics of
        `everyone` (every rank's episodes; by default these are all)."""
        cfg = self.cfg
        per_step, returns, zero_signal = self._advantages(records)
        keep = ~zero_signal if cfg.skip_zero_signal else torch.ones_like(zero_signal)
        samples = build_samples(records, per_step, keep.tolist(), cfg.context, self._replay, cfg.sample_weighting)
        tags = [self.sample_tag(records[sample.episode].group, sample) for sample in samples]
        layout = sample_layout(self.ranks.gather(tags), self.ranks.rank)
        if everyone is not None and everyone is not records:  # the metrics are the whole batch's
            _, returns, zero_signal = self._advantages(everyone)
        everyone = records if everyone is None else everyone
        metrics = rollout_metrics(everyone, returns, zero_signal) | {"update/samples": layout.count}
        return TrainingBatch(samples, layout, metrics)

    def _advantages(self, records: Sequence[EpisodeRecord]):
        cfg = self.cfg
        return advantages(
            records,
            self.estimator,
            cfg.win_reward,
            cfg.invalid_penalty,
            cfg.gigpo_omega,
            cfg.gigpo_gamma,
            gigpo_std=cfg.gigpo_mode == "mean_std_norm",
            penalty_mode=cfg.invalid_penalty_mode,
            statistics=cfg.grpo_statistics,
        )

    def update(self, samples: list[Sample], iteration: int, p: float, layout: SampleLayout | None = None) -> dict:
        """`epochs` passes of minibatch steps over the batch; the metrics averaged over steps
        ({} when there is nothing to learn from).

        Every rank draws the same minibatches over the whole batch (`layout`; by default the
        batch is `samples`, all held here) and trains on its own samples of each: the gradients
        summed over ranks are the one-process gradients."""
        layout = layout or sample_layout([[self.sample_tag(0, sample) for sample in samples]], 0)
        if not layout.count:
            return {}
        cfg = self.cfg
        ref = self.reference_logprobs(samples) if self.reference is not None else None
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, iteration, 7]))
        minibatches = list(minibatch_indices(layout.count, cfg.minibatch_size, cfg.epochs, rng))
        held = [layout.held(minibatch) for minibatch in minibatches]
        if self.recompute_old_logprobs:
            samples = self.rescored_old_logprobs(samples, held[: len(held) // cfg.epochs])
        sums: dict[str, float] = {}
        steps, norms = 0, 0.0
        for minibatch, mine in tqdm(
            list(zip(minibatches, held)),
            desc="update",
            unit="step",
            leave=False,
            disable=not self.ranks.is_main,
        ):
            step = self.optimizer_step(
                [samples[i] for i in mine],
                [ref[i] for i in mine] if ref else None,
                p,
                total_measure=layout.measure(minibatch),
                total_tokens=layout.token_count(minibatch),
            )
            if step is None:  # a NaN/inf loss on some rank: the step was skipped on all
                continue
            norms += step.pop("loss/grad_norm")
            for key, value in step.items():
                sums[key] = sums.get(key, 0.0) + value
            steps += 1
        totals: dict[str, float] = {}
        for rank_sums in self.ranks.gather(sums):  # each rank's share of the minibatch means
            for key, value in rank_sums.items():
                totals[key] = totals.get(key, 0.0) + value
        means = {key: value / steps for key, value in totals.items()}
        if steps:
            means["loss/grad_norm"] = norms / steps
        return means | {"update/steps": steps}

    def periodic_evaluation(self, run: RunSession) -> dict:
        """Held-out success every `eval_every` iterations (not after the last: the final
        evaluation follows)."""
        done, cfg = self.state.iteration, self.cfg
        if not (self.heldout_games and cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.iterations):
            return {}
        summary, seconds = timed(self.evaluate, run.envs, run.eval_log)
        return {"eval/success_rate": summary["success_rate"], "time/eval": seconds}

    def log(self, run: RunSession, metrics: dict) -> None:
        if self.engine is not None:  # how many weight pushes so far, and the last one's check
            metrics = metrics | {
                "engine/syncs": self.engine.version,
                "engine/sync_logprob_error": self.engine_sync_error,
            }
        if run.logger is not None:  # rank 0's
            run.logger.log(self.state.iteration - 1, metrics)
        self.echo(progress_line(self.state.iteration - 1, self.cfg.iterations, metrics))

    def periodic_checkpoint(self) -> None:
        every = self.cfg.checkpoint_every
        if every and self.state.iteration % every == 0:
            self.save(self.checkpoint_path(self.state.iteration))

    def save_interrupted(self) -> dict:
        self.save(self.checkpoint_path(self.state.iteration))
        self.echo(f"saved; continue with: holderpo train --resume {self.run_dir}")
        return {}

    def report(self, after: dict | None) -> dict:
        """`report.json` (see `holderpo.report.run_report`) and the run's curves, by rank 0; the
        other ranks report nothing."""
        if not self.ranks.is_main:
            return {}
        metrics_path = self.run_dir / "metrics.jsonl"
        metrics = read_metrics(metrics_path) if metrics_path.is_file() else []
        skipped = len(self.train_scan.skipped) + len(self.heldout_scan.skipped)
        report = run_report(self.cfg.to_dict(), self.state.to_dict(), after, metrics[-1] if metrics else {}, skipped)
        (self.run_dir / "report.json").write_text(json.dumps(report, indent=2))
        if metrics:
            plot_metrics(metrics_path, self.run_dir / "curves.png")
        return report

    # -- evaluation and the warm start ----------------------------------------------------------
    def evaluate(self, envs: BatchedEnvs, writer: TranscriptWriter | None, policy=None) -> dict:
        """The evaluator's summary on the held-out games, plus `won` per episode id."""
        specs = make_specs(self.heldout_games, self.cfg.seed, max_episodes=self.cfg.heldout_episodes or None)
        self.engine_in_sync()
        policy = policy or self.eval_policy
        records = self.play(envs, policy, specs, writer, "evaluate", shard_by=lambda index, spec: index).everyone
        return summarize(records).to_json() | {"won": {r.episode_id: int(r.won) for r in records}}

    def warm_start(self) -> None:
        """Behaviour cloning on the training games' walkthroughs, then a checkpoint (iteration 0)."""
        tick = time.time()
        samples = demonstration_samples(
            self.policy,
            self.train_games,
            num_envs=self.cfg.num_envs,
            num_workers=self.cfg.num_workers or None,
            seed=self.cfg.seed,
            env_backend=self.cfg.env_backend,
            ray_address=self.cfg.ray_address or None,
            thoughts=self.cfg.sft_thoughts,
            trust_game_files=self.cfg.trust_game_files,
        )
        losses = clone_behaviour(
            self.model,
            samples,
            list(trainable_parameters(self.model).values()),
            epochs=self.cfg.sft_epochs,
            lr=self.cfg.sft_lr,
            batch_size=self.cfg.sft_batch_size,
            pad_id=self.tokenizer.eos_token_id,
            seed=self.cfg.seed,
            trunk_layers=self.trunk_layers,
            echo=self.echo,
            precision=self.compute_precision,
        )
        if self.reference is not None:
            self.reference.snapshot()  # RL is anchored to the policy it starts from
        state = self.state  # updated in place: `train` and `before_rl` hold it
        state.sft_done, state.sft_losses, state.sft_samples = True, losses, len(samples)
        state.sft_seconds = time.time() - tick
        self.save(self.checkpoint_path(0))

    # -- one optimizer step ---------------------------------------------------------------------
    def optimizer_step(
        self,
        samples: Sequence[Sample],
        ref: Sequence[torch.Tensor] | None,
        p: float,
        total_measure: float | None = None,
        total_tokens: int | None = None,
    ) -> dict[str, float] | None:
        """One minibatch: gradients accumulated over micro-batches, each computing its exact part
        of the minibatch's loss (its share of the samples' `policy_measure`, for the policy loss:
        a sample without loss tokens takes no share, so it cannot inflate its neighbours'; and of
        the loss tokens, for the KL and entropy means), clipped, applied. None if a loss was NaN
        or infinite (skipped).

        Over several ranks `samples` is this rank's part of a minibatch of `total_measure` and
        `total_tokens` (by default these samples are all of it): the ranks' gradients add up to
        the whole minibatch's, and so do their parts of the metrics."""
        self.optimizer.zero_grad(set_to_none=True)
        micro = self.cfg.micro_batch_size
        if total_measure is None:
            total_measure = sum(self.sample_tag(0, sample)[1] for sample in samples)
        total_tokens = sum(sum(s.loss_mask) for s in samples) if total_tokens is None else total_tokens
        metrics: dict[str, float] = {}
        refs = micro_batches(ref, micro) if ref else [None] * len(samples)
        finite = True
        for pair in self.sharing.lockstep(list(zip(micro_batches(samples, micro), refs))):
            if pair is None:  # FSDP2: an idle pass keeps this rank in step with the others
                self.idle_pass()
                continue
            chunk, chunk_ref = pair
            share = sum(self.sample_tag(0, s)[1] for s in chunk) / total_measure if total_measure else 0.0
            token_share = sum(sum(s.loss_mask) for s in chunk) / total_tokens if total_tokens else 0.0
            if self.cfg.loss_shares == "verl":  # every term scaled by the micro-batch's share of the samples
                token_share = share
            loss, chunk_metrics = self.micro_batch_loss(chunk, chunk_ref, p, share, token_share)
            if not torch.isfinite(loss):
                finite = False
                if not self.ranks.distributed:
                    break
            self.scaler.scale(loss * self.sharing.loss_scale).backward()
            for key, value in chunk_metrics.items():  # the minibatch's metrics, weighted as its loss is
                part = token_share if key in TOKEN_MEAN_METRICS else share
                metrics[key] = metrics.get(key, 0.0) + float(value) * part
        if self.ranks.any(not finite):
            self._bad_step()
            return None
        self.state.bad_steps = 0
        parameters = list(trainable_parameters(self.model).values())
        self.sharing.reduce_gradients(parameters)
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(parameters, self.cfg.max_grad_norm or float("inf"))
        self.scaler.step(self.optimizer)  # float16: skipped when a gradient overflowed, and the scale lowered
        self.scaler.update()
        return metrics | {"loss/grad_norm": float(whole(norm))}

    def sample_tag(self, group: int, sample: Sample) -> tuple[int, float, int]:
        """What the ranks tell each other of a sample (`holderpo.distributed.sample_layout`): its
        group, how much it counts in the policy loss's mean (`policy_measure`; under
        loss_shares=verl its loss weight, verl's share of a micro-batch), its loss tokens."""
        tokens = sum(sample.loss_mask)
        if self.cfg.loss_shares == "verl":
            return group, loss_weight(sample), tokens
        return group, policy_measure(self.preset, sample.weight, tokens), tokens

    def idle_pass(self) -> None:
        """A forward and backward that changes no gradient: FSDP2's collectives need every rank
        to run as many as the busiest one."""
        eos = self.tokenizer.eos_token_id
        filler = Sample([eos], [eos], [0.0], [False], [None], 0.0, 0.0, -1)
        (self._score([filler]).logprobs.sum() * 0.0).backward()

    def micro_batch_loss(
        self,
        samples: Sequence[Sample],
        ref: Sequence[torch.Tensor] | None,
        p: float,
        policy_share: float = 1.0,
        token_share: float = 1.0,
    ):
        """(loss, metrics) of one micro-batch: its part of the minibatch's preset loss + KL -
        entropy bonus (`total_loss`'s shares), and what the exponent could change on it
        (`exponent_diagnostics`, whatever the preset)."""
        cfg = self.cfg
        scored = self._score(samples, with_entropy=cfg.entropy_coef > 0)
        batch = Minibatch.from_samples(samples, ref, scored.mask)
        log_ratio = scored.logprobs.detach() - batch.old_logprobs
        diagnostics = exponent_diagnostics(log_ratio, batch.mask)
        loss, metrics = total_loss(
            self.preset,
            scored.logprobs,
            batch.old_logprobs,
            batch.advantages,
            batch.mask,
            p,
            weights=batch.weights,
            ref_logp=batch.ref_logprobs,
            kl_coef=cfg.kl_coef,
            kl_estimator=cfg.kl_estimator,
            entropy=scored.entropy,
            entropy_coef=cfg.entropy_coef,
            policy_share=policy_share,
            token_share=token_share,
        )
        return loss, metrics | {f"exponent/{key}": value for key, value in diagnostics.items()}

    @torch.no_grad()
    def rescored_old_logprobs(self, samples: Sequence[Sample], first_epoch: Sequence[np.ndarray]) -> list[Sample]:
        """The samples with their old log-probs scored by the training forward (same precision,
        temperature, constraints and trunk states) before any step, as verl recomputes them.
        Each is scored in the very micro-batch the first epoch trains it in (`first_epoch`: its
        minibatches, covering every sample once): same shapes, same kernels, so at the first
        minibatch every ratio is exactly 1, in bf16 too."""
        rescored = list(samples)
        with self.sharing.gathered(self.model):  # FSDP2: each rank scores its own samples
            for mb_index in first_epoch:
                for chunk in micro_batches(list(mb_index), self.cfg.micro_batch_size):
                    scored = self._score([samples[i] for i in chunk])
                    for i, row, mask in zip(chunk, scored.logprobs, scored.mask):
                        rescored[i] = with_old_logprobs(samples[i], row[mask].tolist())
        return rescored

    def reference_logprobs(self, samples: Sequence[Sample]) -> list[torch.Tensor]:
        """Log-probs of the frozen reference under the same masks (one tensor per sample)."""
        out = []
        # FSDP2: the reference goes into the shards first, then is gathered (each rank scores its own)
        with self.reference.active(), self.sharing.gathered(self.model):
            for chunk in micro_batches(samples, self.cfg.micro_batch_size):
                scored = self._score(chunk)
                out += [row[mask] for row, mask in zip(scored.logprobs, scored.mask)]
        return out

    def _score(self, samples: Sequence[Sample], with_entropy: bool = False):
        """The training forward: at the compute precision and the rollouts' temperature."""
        with self.compute_precision():
            return score_samples(
                self.model,
                samples,
                pad_id=self.tokenizer.eos_token_id,
                trunk=recorded_trunk(samples, self.trunk_layers),
                with_entropy=with_entropy,
                temperature=self.cfg.temperature,
                single_pass=self.sharing.lockstep_forwards,  # FSDP2: one forward per micro-batch on every rank
            )

    def compute_precision(self) -> contextlib.AbstractContextManager:
        """Forward passes run inside this: autocast to `dtype` (nothing under float32)."""
        return compute_precision(self.device, self.cfg.dtype)

    def _replay(self, admissible: list[str], response_ids: list[int]) -> list:
        if self.cfg.decoding == "free":
            return [None] * len(response_ids)
        return self.policy.constraint(admissible).replay(response_ids)

    def _bad_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.state.bad_steps += 1
        self.state.skipped_steps += 1
        self.echo(f"skipped an update: the loss was NaN or infinite ({self.state.bad_steps} in a row)")
        if self.state.bad_steps >= self.cfg.max_bad_steps:
            self.save(self.checkpoint_path(self.state.iteration))
            raise TrainingDiverged(
                f"{self.state.bad_steps} NaN/inf losses in a row: saved a checkpoint in "
                f"{self.run_dir / 'checkpoints'} and stopped; lower --lr or check the data"
            )

    # -- the generation engine ------------------------------------------------------------------
    def _vllm_engine(self):
        """vLLM in this process, or in `engine_workers` Ray actors (`agents.ray_engine`)."""
        from agents.ray_engine import make_vllm_engine

        if self.trunk_layers:
            self.echo("note: vLLM records no trunk states: updates run the whole model's forward")
            self.trunk_layers = None
        return make_vllm_engine(
            self.model,
            self.tokenizer,
            dtype=self.cfg.dtype,
            workers=self.cfg.engine_workers,
            ray_address=self.cfg.ray_address or None,
        )

    def engine_in_sync(self) -> None:
        """Push the model's weights to a separate engine if they changed since the last push (an
        update, the warm start, a resumed checkpoint), then check that the engine's log-probs of a
        sampled response are the model's: a stale or mangled copy differs by ~1, float32 by ~1e-5."""
        if self.engine is None or self.engine_weights == weights_version(self.model):
            return
        self.engine.sync(self.model)
        probe = self.tokenizer.encode("You are in the middle of a room. Your task is to", add_special_tokens=False)
        with self.compute_precision():
            self.engine_sync_error = self.engine.sync_error(self.model, probe)
        tolerance = SYNC_TOLERANCE[self.cfg.dtype]
        if self.engine_sync_error > tolerance:
            raise RuntimeError(
                f"after a weight sync the vLLM engine's log-probs differ from the model's by "
                f"{self.engine_sync_error:.2e} (allowed {tolerance}): it is not generating with the trained weights"
            )
        self.engine_weights = weights_version(self.model)

    # -- setup and checkpoints ------------------------------------------------------------------
    def _trunk_layers(self) -> int | None:
        """Under finetune=top, rollouts record the frozen trunk's output and updates run only the
        top blocks (`agents.trunk`), if this model's top blocks reproduce its logits that way.
        Step context only: a full-context sample spans many turns, scored in one whole pass."""
        if self.cfg.finetune != "top" or self.cfg.context != "step":
            return None
        if top_blocks_reproduce(self.model, self.cfg.top_layers):
            return self.cfg.top_layers
        self.echo(
            "note: this model's top blocks do not reproduce its logits from recorded trunk states; "
            "updates run the whole model"
        )
        return None

    def checkpoint_path(self, iteration: int) -> Path:
        return self.run_dir / "checkpoints" / f"iter_{iteration:04d}"

    def save(self, target: Path) -> None:
        """A checkpoint of whole tensors (gathered from every rank under FSDP2), written by rank 0:
        the same files whatever the number of ranks, so a run resumes on any number of them."""
        weights = self.sharing.full_weights(self.model)
        optimizer_state = self.sharing.full_optimizer_state(self.optimizer)
        model_state = self.sharing.full_model_state(self.model)
        reference = self.reference and {name: whole(w) for name, w in self.reference.weights.items()}
        if self.ranks.is_main:
            info = {"iteration": self.state.iteration, "config": self.cfg.to_dict(), "run": self.cfg.name}
            save_checkpoint(
                target,
                self.model,
                self.tokenizer,
                optimizer_state,
                {
                    "weights": weights,
                    "reference": reference,
                    "state": self.state.to_dict(),
                    "grad_scaler": self.scaler.state_dict(),  # {} unless float16
                },
                info,
                model_state=model_state,
            )
        self.ranks.barrier()  # no rank goes on (or resumes) before the checkpoint is whole

    def _restore(self) -> None:
        """Resume from the newest intact checkpoint of the run folder; a damaged one (cut short by
        a crash, emptied, crafted, from another model) is reported and the next older one tried."""
        checkpoints = checkpoints_newest_first(self.run_dir)
        if not checkpoints:
            raise FileNotFoundError(f"--resume {self.run_dir}: no checkpoint found in it")
        for checkpoint in checkpoints:
            try:
                self._resume_from(checkpoint)
            except CheckpointError as error:
                self.echo(f"skipped checkpoint {checkpoint}: {error}")
                continue
            self.echo(f"resumed from {checkpoint} at iteration {self.state.iteration}")
            return
        raise CheckpointError(f"--resume {self.run_dir}: every checkpoint in it is damaged (see above)")

    def _resume_from(self, checkpoint: Path) -> None:
        saved = load_trainer_state(checkpoint)
        self._check_weights(checkpoint, saved["weights"])
        try:
            self.sharing.load_optimizer_state(self.optimizer, saved["optimizer"])
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise CheckpointError(f"its optimizer state does not fit this run ({error})") from None
        self._load_weights(saved["weights"])
        if self.reference is not None and saved.get("reference"):
            parameters = trainable_parameters(self.model)
            self.reference.weights = {name: shaped_like(parameters[name], w) for name, w in saved["reference"].items()}
        if self.scaler.is_enabled() and saved.get("grad_scaler"):
            self.scaler.load_state_dict(saved["grad_scaler"])
        self.state = TrainerState.from_dict(saved["state"])

    def _check_weights(self, checkpoint: Path, weights: Any) -> None:
        """Weights that fit the trainable parameters exactly, checked before any is copied."""
        parameters = trainable_parameters(self.model)
        if not isinstance(weights, dict) or weights.keys() != parameters.keys():
            raise CheckpointError(f"{checkpoint}: its weights are not this run's trainable parameters")
        wrong = [
            name
            for name, p in parameters.items()
            if not isinstance(weights[name], torch.Tensor) or weights[name].shape != p.shape
        ]
        if wrong:
            raise CheckpointError(f"{checkpoint}: weights of another shape for {wrong[:3]}")

    def _adopt_warm_start(self, checkpoint: Path) -> None:
        """Start RL from another run's warm-start checkpoint (iteration 0) of the same seed and
        games: `holderpo compare` runs behaviour cloning and the evaluations before RL once per
        seed, and every method starts from that same policy."""
        saved = load_trainer_state(checkpoint)
        self._check_weights(checkpoint, saved["weights"])
        warm = TrainerState.from_dict(saved["state"])
        if warm.iteration != 0 or not warm.sft_done:
            raise ValueError(f"{checkpoint} is not a warm-start checkpoint (iteration 0 after behaviour cloning)")
        self._load_weights(saved["weights"])
        if self.reference is not None:
            self.reference.snapshot()
        for key in TrainerState.WARM_START:
            setattr(self.state, key, getattr(warm, key))
        self.echo(f"warm start taken from {checkpoint}")

    def _load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        parameters = trainable_parameters(self.model)
        with torch.no_grad():
            for name, tensor in weights.items():
                parameters[name].copy_(shaped_like(parameters[name], tensor))
