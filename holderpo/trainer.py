"""The HölderPO training loop.

Each iteration: draw games, play G episodes of each (collect), turn returns into group
advantages, then run `epochs` passes of minibatch updates of the Hölder-mean policy loss at the
scheduled p, plus a KL penalty to the frozen reference. Evaluation on held-out games, metrics,
checkpoints and exact resume sit around that loop.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from agents.baselines import RandomAdmissiblePolicy
from agents.llm_policy import DecodingConfig, LLMPolicy
from agents.models import load_model
from agents.prompts import PromptConfig
from agents.scoring import TrunkStates, response_logprobs
from agents.trunk import top_blocks_reproduce
from envs.batched import BatchedAlfWorld
from envs.games import resolve_games
from eval.evaluate import summarize
from eval.stats import paired_difference
from holderpo.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint
from holderpo.config import TrainConfig
from holderpo.kl import kl_penalty, masked_mean
from holderpo.losses import get_preset, holder_policy_loss, ppo_token_loss
from holderpo.modeling import Reference, prepare_for_training, trainable_parameters
from holderpo.run_logging import RunLogger, plot_metrics
from holderpo.samples import Sample, advantages, build_samples, right_aligned
from holderpo.schedules import make_schedule
from holderpo.sft import clone_behaviour, demonstration_samples
from rollouts.records import EpisodeRecord
from rollouts.runner import play_episodes
from rollouts.specs import iteration_games, iteration_specs, make_specs
from rollouts.transcripts import TranscriptWriter


class TrainingDiverged(RuntimeError):
    """The loss was NaN or infinite too many times in a row; the run saved and stopped."""


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


def progress_line(iteration: int, iterations: int, metrics: dict) -> str:
    """One console line per iteration. An iteration whose groups all won or all lost together
    has nothing to learn from and makes no update; it says so instead of printing a NaN loss."""
    update = (f"loss={metrics['loss/policy']:+.4f}" if "loss/policy" in metrics
              else "no update (every group won or lost together)")
    return (f"iteration {iteration + 1}/{iterations}  p={metrics['schedule/p']:+.3f}  "
            f"success={metrics['rollout/success_rate']:.2f}  return={metrics['rollout/return_mean']:+.2f}  "
            f"samples={metrics['update/samples']}  {update}")


# -- the trainer ----------------------------------------------------------------------------------
class Trainer:
    def __init__(self, config: TrainConfig, run_dir: Path, resume: bool = False, echo: Callable[[str], None] = print,
                 warm_start_from: Path | None = None):
        self.cfg, self.run_dir, self.echo = config, Path(run_dir), echo
        self.train_games = resolve_games(config.train_games)
        self.heldout_games = resolve_games(config.heldout_games) if config.heldout_games else []
        self.preset = get_preset(config.preset)
        self.schedule = (make_schedule(config.p_schedule, config.p_start, config.p_end)
                         if config.preset == "holderpo" else self.preset.schedule)
        self.clip_low = config.clip_low if config.clip_low != -1.0 else self.preset.clip_low
        self.clip_high = config.clip_high if config.clip_high != -1.0 else self.preset.clip_high

        torch.manual_seed(config.seed)  # LoRA's initialisation
        base, self.tokenizer = load_model(config.model, config.dtype, config.device)
        self.model = prepare_for_training(base, config.finetune, config.lora_rank, config.lora_alpha, config.top_layers)
        self.reference = Reference(self.model, config.finetune) if config.kl_coef > 0 else None
        self.optimizer = torch.optim.AdamW(trainable_parameters(self.model).values(), lr=config.lr,
                                           weight_decay=config.weight_decay)
        prompt = PromptConfig(config.context, config.history, config.output_format)
        decoding = DecodingConfig(config.decoding, config.max_new_tokens, temperature=config.temperature)
        self.trunk_layers = self._trunk_layers()
        self.policy = LLMPolicy(self.model, self.tokenizer, prompt, decoding, name=config.name,
                                trunk_layers=self.trunk_layers)
        self.eval_policy = LLMPolicy(self.model, self.tokenizer, prompt,
                                     replace(decoding, temperature=config.eval_temperature), name=config.name)
        self.state: dict[str, Any] = {"iteration": 0, "heldout_before": None, "bad_steps": 0, "wall_seconds": 0.0}
        if resume:
            self._restore()
        elif warm_start_from is not None:
            self._adopt_warm_start(Path(warm_start_from))
        self._stop_requested = False

    # -- setup, checkpoints ---------------------------------------------------------------------
    def _trunk_layers(self) -> int | None:
        """Under finetune=top, rollouts record the frozen trunk's output and updates run only the
        top blocks (`agents.trunk`), if this model's top blocks reproduce its logits that way.
        Step context only: a full-context sample spans many turns, scored in one whole pass."""
        if self.cfg.finetune != "top" or self.cfg.context != "step":
            return None
        if top_blocks_reproduce(self.model, self.cfg.top_layers):
            return self.cfg.top_layers
        self.echo("note: this model's top blocks do not reproduce its logits from recorded trunk states; "
                  "updates run the whole model")
        return None

    def _restore(self) -> None:
        checkpoint = latest_checkpoint(self.run_dir)
        if checkpoint is None:
            raise FileNotFoundError(f"--resume {self.run_dir}: no checkpoint found in it")
        saved = load_trainer_state(checkpoint)
        self._load_weights(saved["weights"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.reference is not None and saved.get("reference"):
            self.reference.weights = saved["reference"]
        self.state = saved["state"]
        self.echo(f"resumed from {checkpoint} at iteration {self.state['iteration']}")

    def _load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        parameters = trainable_parameters(self.model)
        with torch.no_grad():
            for name, tensor in weights.items():
                parameters[name].copy_(tensor)

    # what a warm start leaves in the state: its record, and the evaluations made before RL
    WARM_START_STATE = ("sft_done", "sft_losses", "sft_samples", "sft_seconds", "heldout_random",
                        "heldout_untrained", "heldout_before")

    def _adopt_warm_start(self, checkpoint: Path) -> None:
        """Start RL from another run's warm-start checkpoint (iteration 0) of the same seed and
        games: `holderpo compare` runs behaviour cloning and the evaluations before RL once per
        seed, and every method starts from that same policy."""
        saved = load_trainer_state(checkpoint)
        if saved["state"].get("iteration") != 0 or not saved["state"].get("sft_done"):
            raise ValueError(f"{checkpoint} is not a warm-start checkpoint (iteration 0 after behaviour cloning)")
        self._load_weights(saved["weights"])
        if self.reference is not None:
            self.reference.snapshot()
        self.state |= {key: saved["state"][key] for key in self.WARM_START_STATE if key in saved["state"]}
        self.echo(f"warm start taken from {checkpoint}")

    def save(self, target: Path) -> None:
        weights = {name: p.detach().clone() for name, p in trainable_parameters(self.model).items()}
        info = {"iteration": self.state["iteration"], "config": self.cfg.to_dict(), "run": self.cfg.name}
        reference = self.reference.weights if self.reference is not None else None
        save_checkpoint(target, self.model, self.tokenizer, self.optimizer,
                        {"weights": weights, "reference": reference, "state": dict(self.state)}, info)

    def _request_stop(self, signum, frame) -> None:
        if self._stop_requested:  # a second Ctrl-C: stop now; the last checkpoint stays usable
            raise KeyboardInterrupt
        self._stop_requested = True
        self.echo("stopping after this iteration (Ctrl-C again to stop at once)")

    # -- the stages -----------------------------------------------------------------------------
    def collect(self, batch: BatchedAlfWorld, iteration: int, writer: TranscriptWriter) -> list[EpisodeRecord]:
        games = iteration_games(self.train_games, iteration, self.cfg.games_per_iteration, self.cfg.seed)
        specs = iteration_specs(games, iteration, self.cfg.group_size, self.cfg.seed)
        return play_episodes(batch, self.policy, specs, on_episode_end=writer.write, progress="collect")

    def evaluate(self, batch: BatchedAlfWorld, writer: TranscriptWriter | None, policy=None) -> dict:
        """The evaluator's summary on the held-out games, plus `won` per episode id: every
        evaluation plays the same episodes (games and seeds), so any two of them pair up."""
        specs = make_specs(self.heldout_games, self.cfg.seed, max_episodes=self.cfg.heldout_episodes or None)
        records = play_episodes(batch, policy or self.eval_policy, specs, progress="evaluate",
                                on_episode_end=writer.write if writer is not None else None)
        return summarize(records) | {"won": {r.episode_id: int(r.won) for r in records}}

    def warm_start(self) -> None:
        """Behaviour cloning on the training games' walkthroughs, then a checkpoint (iteration 0)."""
        tick = time.time()
        samples = demonstration_samples(self.policy, self.train_games, num_envs=self.cfg.num_envs,
                                        num_workers=self.cfg.num_workers or None, seed=self.cfg.seed,
                                        trust_game_files=self.cfg.trust_game_files)
        losses = clone_behaviour(self.model, samples, list(trainable_parameters(self.model).values()),
                                 epochs=self.cfg.sft_epochs, lr=self.cfg.sft_lr, batch_size=self.cfg.sft_batch_size,
                                 pad_id=self.tokenizer.eos_token_id, seed=self.cfg.seed,
                                 trunk_layers=self.trunk_layers, echo=self.echo)
        if self.reference is not None:
            self.reference.snapshot()  # RL is anchored to the policy it starts from
        self.state |= {"sft_done": True, "sft_losses": losses, "sft_samples": len(samples),
                       "sft_seconds": time.time() - tick}
        self.save(self.run_dir / "checkpoints" / "iter_0000")

    def _replay(self, admissible: list[str], response_ids: list[int]) -> list:
        if self.cfg.decoding == "free":
            return [None] * len(response_ids)
        return self.policy.constraint(admissible).replay(response_ids)

    def _score(self, samples: Sequence[Sample], with_entropy: bool = False):
        trunk = None
        if self.trunk_layers and all(s.trunk_states is not None for s in samples):
            trunk = TrunkStates(self.trunk_layers, [s.prefix_states for s in samples],
                                [s.trunk_states for s in samples])
        return response_logprobs(self.model, [s.prompt_ids for s in samples], [s.response_ids for s in samples],
                                 [s.allowed for s in samples], pad_id=self.tokenizer.eos_token_id,
                                 with_entropy=with_entropy, prefix_lengths=[s.prefix_length for s in samples],
                                 trunk=trunk)

    def reference_logprobs(self, samples: Sequence[Sample]) -> list[torch.Tensor]:
        """Log-probs of the frozen reference under the same masks (one tensor per sample)."""
        out = []
        with self.reference.active():
            for start in range(0, len(samples), self.cfg.micro_batch_size):
                chunk = samples[start: start + self.cfg.micro_batch_size]
                scored = self._score(chunk)
                out += [row[mask] for row, mask in zip(scored.logprobs, scored.mask)]
        return out

    def objective(self, samples: Sequence[Sample], ref: Sequence[torch.Tensor] | None, p: float):
        """(loss, metrics) of one micro-batch: policy loss + KL - entropy bonus."""
        scored = self._score(samples, with_entropy=self.cfg.entropy_coef > 0)
        width = scored.logprobs.shape[1]
        old = right_aligned([s.old_logprobs for s in samples], width, 0.0, torch.float32)
        mask = right_aligned([s.loss_mask for s in samples], width, False, torch.bool) & scored.mask.cpu()
        advantages = torch.tensor([s.advantage for s in samples], dtype=torch.float32)
        weights = torch.tensor([s.weight for s in samples], dtype=torch.float32)
        device = scored.logprobs.device
        old, mask, advantages, weights = old.to(device), mask.to(device), advantages.to(device), weights.to(device)
        if self.preset.aggregation is not None:  # plain PPO: its own token reduction, no sample weights
            loss, metrics = ppo_token_loss(scored.logprobs, old, advantages, mask, self.clip_low, self.clip_high,
                                           self.preset.aggregation)
        else:
            loss, metrics = holder_policy_loss(scored.logprobs, old, advantages, mask, p, self.clip_low,
                                               self.clip_high, self.preset.clip, weights=weights,
                                               log_space_clip=self.preset.log_space_clip)
        metrics = {f"loss/{k}": v for k, v in metrics.items()}
        metrics["loss/policy"] = loss.detach()
        total = loss
        if ref is not None:
            ref_logp = right_aligned([r.tolist() for r in ref], width, 0.0, torch.float32).to(device)
            kl = masked_mean(kl_penalty(scored.logprobs, ref_logp, mask, self.cfg.kl_estimator), mask)
            total = total + self.cfg.kl_coef * kl
            metrics["loss/kl"] = kl.detach()
        if scored.entropy is not None:
            entropy = masked_mean(scored.entropy, mask)
            total = total - self.cfg.entropy_coef * entropy
            metrics["loss/entropy"] = entropy.detach()
        return total, metrics

    def update(self, samples: list[Sample], iteration: int, p: float) -> dict:
        """`epochs` passes of minibatch steps over the samples; returns averaged metrics."""
        ref = self.reference_logprobs(samples) if self.reference is not None else None
        rng = np.random.default_rng(np.random.SeedSequence([self.cfg.seed, iteration, 7]))
        sums: dict[str, float] = {}
        steps = 0
        minibatches = -(-len(samples) // self.cfg.minibatch_size) * self.cfg.epochs
        bar = tqdm(total=minibatches, desc="update", unit="step", leave=False)
        for _ in range(self.cfg.epochs):
            order = rng.permutation(len(samples))
            for start in range(0, len(order), self.cfg.minibatch_size):
                bar.update(1)
                mb_index = order[start: start + self.cfg.minibatch_size]
                mb_weight = sum(samples[i].weight for i in mb_index)
                self.optimizer.zero_grad(set_to_none=True)
                finite, mb_metrics = True, {}
                for micro in range(0, len(mb_index), self.cfg.micro_batch_size):
                    index = mb_index[micro: micro + self.cfg.micro_batch_size]
                    loss, metrics = self.objective([samples[i] for i in index],
                                                   [ref[i] for i in index] if ref else None, p)
                    if not torch.isfinite(loss):
                        finite = False
                        break
                    (loss * sum(samples[i].weight for i in index) / mb_weight).backward()
                    for key, value in metrics.items():
                        mb_metrics[key] = mb_metrics.get(key, 0.0) + float(value) * len(index) / len(mb_index)
                if not finite:
                    self._bad_step()
                    continue
                self.state["bad_steps"] = 0
                parameters = list(trainable_parameters(self.model).values())
                norm = torch.nn.utils.clip_grad_norm_(parameters, self.cfg.max_grad_norm or float("inf"))
                self.optimizer.step()
                mb_metrics["loss/grad_norm"] = float(norm)
                for key, value in mb_metrics.items():
                    sums[key] = sums.get(key, 0.0) + value
                steps += 1
        bar.close()
        return {key: value / max(steps, 1) for key, value in sums.items()} | {"update/steps": steps}

    def _bad_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.state["bad_steps"] += 1
        self.state["skipped_steps"] = self.state.get("skipped_steps", 0) + 1
        self.echo(f"skipped an update: the loss was NaN or infinite ({self.state['bad_steps']} in a row)")
        if self.state["bad_steps"] >= self.cfg.max_bad_steps:
            self.save(self.run_dir / "checkpoints" / f"iter_{self.state['iteration']:04d}")
            raise TrainingDiverged(f"{self.state['bad_steps']} NaN/inf losses in a row: saved a checkpoint in "
                                   f"{self.run_dir / 'checkpoints'} and stopped; lower --lr or check the data")

    # -- the loop ---------------------------------------------------------------------------------
    def train(self) -> dict:
        cfg, started = self.cfg, time.time() - self.state["wall_seconds"]
        logger = RunLogger(self.run_dir)
        transcripts = self.run_dir / "transcripts"
        previous_handler = signal.signal(signal.SIGINT, self._request_stop)
        try:
            with BatchedAlfWorld(min(cfg.num_envs, cfg.games_per_iteration * cfg.group_size), cfg.num_workers or None,
                                 max_steps=cfg.max_steps, trust_game_files=cfg.trust_game_files) as batch, \
                    TranscriptWriter(transcripts / "train.jsonl", policy=cfg.preset, model=cfg.model) as train_log, \
                    TranscriptWriter(transcripts / "eval.jsonl", policy=cfg.preset, model=cfg.model) as eval_log:
                if self.heldout_games and "heldout_untrained" not in self.state:
                    self.state["heldout_random"] = self.evaluate(batch, None, RandomAdmissiblePolicy())
                    self.state["heldout_untrained"] = self.evaluate(batch, eval_log)
                    self.echo(f"held-out success, random admissible policy: "
                              f"{self.state['heldout_random']['success_rate']:.3f}; untrained model: "
                              f"{self.state['heldout_untrained']['success_rate']:.3f}")
                if cfg.sft_epochs and not self.state.get("sft_done"):
                    self.warm_start()
                if self.heldout_games and self.state["heldout_before"] is None:
                    self.state["heldout_before"] = (self.evaluate(batch, eval_log) if cfg.sft_epochs
                                                    else self.state["heldout_untrained"])
                    self.echo(f"held-out success before RL: {self.state['heldout_before']['success_rate']:.3f}")
                    if cfg.sft_epochs:  # the warm-start checkpoint also keeps its evaluation (compare reuses both)
                        self.save(self.run_dir / "checkpoints" / "iter_0000")
                while self.state["iteration"] < cfg.iterations and not self._stop_requested:
                    iteration = self.state["iteration"]
                    p = self.schedule(iteration, cfg.iterations)
                    tick = time.time()
                    records = self.collect(batch, iteration, train_log)
                    per_step, returns, zero_signal = advantages(records, cfg.estimator, cfg.win_reward,
                                                                cfg.invalid_penalty, cfg.gigpo_omega, cfg.gigpo_gamma)
                    keep = ~zero_signal if cfg.skip_zero_signal else torch.ones_like(zero_signal)
                    samples = build_samples(records, per_step, keep.tolist(), cfg.context, self._replay,
                                            cfg.sample_weighting)
                    metrics = rollout_metrics(records, returns, zero_signal) | {"schedule/p": p,
                                                                                "update/samples": len(samples)}
                    metrics["time/rollout"] = (tock := time.time()) - tick
                    if samples:
                        metrics |= self.update(samples, iteration, p)
                    metrics["time/update"] = time.time() - tock
                    self.state["iteration"] = iteration + 1
                    if self.heldout_games and cfg.eval_every and (iteration + 1) % cfg.eval_every == 0 \
                            and iteration + 1 < cfg.iterations:
                        tick = time.time()
                        metrics["eval/success_rate"] = self.evaluate(batch, eval_log)["success_rate"]
                        metrics["time/eval"] = time.time() - tick
                    self.state["wall_seconds"] = time.time() - started
                    logger.log(iteration, metrics)
                    self.echo(progress_line(iteration, cfg.iterations, metrics))
                    if cfg.checkpoint_every and (iteration + 1) % cfg.checkpoint_every == 0:
                        self.save(self.run_dir / "checkpoints" / f"iter_{iteration + 1:04d}")
                if self._stop_requested and self.state["iteration"] < cfg.iterations:
                    self.save(self.run_dir / "checkpoints" / f"iter_{self.state['iteration']:04d}")
                    self.echo(f"saved; continue with: holderpo train --resume {self.run_dir}")
                    return {}
                after = self.evaluate(batch, eval_log) if self.heldout_games else None
        finally:
            signal.signal(signal.SIGINT, previous_handler)
            logger.close()
        self.state["wall_seconds"] = time.time() - started
        self.save(self.run_dir / "final")
        return self._report(after)

    def _report(self, after: dict | None) -> dict:
        before = self.state["heldout_before"]
        metrics_path = self.run_dir / "metrics.jsonl"
        final = json.loads(metrics_path.read_text().splitlines()[-1]) if metrics_path.read_text().strip() else {}
        untrained, random_policy = self.state.get("heldout_untrained"), self.state.get("heldout_random")
        report = {
            "run": self.cfg.name,
            "heldout_success_random": random_policy["success_rate"] if random_policy else None,
            "heldout_success_untrained": untrained["success_rate"] if untrained else None,
            "heldout_success_before": before["success_rate"] if before else None,
            "heldout_success_after": after["success_rate"] if after else None,
            # the RL phase's effect: after - before on the same episodes, with its 95% interval
            "rl_gain": paired_difference(before["won"], after["won"])._asdict() if before and after else None,
            "heldout_before": before, "heldout_after": after,
            "wall_seconds": self.state["wall_seconds"],
            "sft": {k: self.state[k] for k in ("sft_losses", "sft_samples", "sft_seconds") if k in self.state},
            "final_metrics": final, "config": self.cfg.to_dict(),
        }
        (self.run_dir / "report.json").write_text(json.dumps(report, indent=2))
        if final:
            plot_metrics(metrics_path, self.run_dir / "curves.png")
        return report
