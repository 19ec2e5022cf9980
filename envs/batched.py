"""Many ALFWorld episodes side by side, in worker processes that survive crashes and hangs.

GRPO-style training plays G episodes of the same game at once, for several games. Gymnasium's
vector envs autoreset each sub-env into its own next game, which breaks such groups, and one
dead worker stalls the whole batch. `BatchedAlfWorld` is our own small API instead:

- `num_envs` slots spread over `num_workers` processes (slot i lives on worker i % num_workers);
  each worker keeps its engines warm between episodes.
- `reset(games, seeds)` assigns a game to each slot; `None` leaves that slot alone (the mask).
  There is no autoreset: a finished slot stays finished until reset.
- `step({slot: action})` acts only on the slots given, which must be live.
- A worker that crashes, or does not answer within `step_timeout` seconds, is killed and
  restarted; each episode it was running ends with `error` set (reported, never dropped: it
  names the signal or timeout and the game), and the other workers' episodes go on.

    batch = BatchedAlfWorld(num_envs=8, num_workers=2)
    results = batch.reset(group_games(games[:2], group_size=4), seeds=range(8))
    results = batch.step({i: r.info["admissible_commands"][0] for i, r in enumerate(results)})

`BatchedEnvs` holds what every backend shares (slots, the live set, errored episodes); a backend
only moves requests to its workers and replaces a failed one: `BatchedAlfWorld` here with local
processes, `envs.ray_envs.RayBatchedAlfWorld` with Ray actors (`envs.backends.open_envs` picks).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

DEFAULT_STEP_TIMEOUT = 60.0


@dataclass
class StepResult:
    """What one slot returned from reset or step.

    `error` is None for a normal result. Otherwise the episode is over and errored: its worker
    crashed or hung, or the env raised (for example on a malformed game); `observation` is then
    empty and `info` holds only what the parent knows.
    """

    observation: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated or self.error is not None


def group_games(games: Sequence[str], group_size: int) -> list[str]:
    """Each game repeated `group_size` times in a row: slots [g*G, (g+1)*G) share game g."""
    if group_size < 1:
        raise ValueError(f"expected group_size >= 1, got {group_size}")
    return [game for game in games for _ in range(group_size)]


Request = tuple[int, Any, int | None]  # (slot, game or action, seed) sent to a worker
Reply = tuple[int, tuple]  # (slot, (observation, reward, terminated, truncated, info, error))


def answer_requests(envs: dict, command: str, requests: Sequence[Request], env_kwargs: dict) -> list[Reply]:
    """Play one "reset" or "step" request per slot on `envs` (slot -> AlfWorldEnv, created on
    first use and kept warm); what a worker process and a Ray actor both do with a request."""
    from envs.alfworld_env import AlfWorldEnv

    replies = []
    for slot, argument, seed in requests:
        env = envs.setdefault(slot, AlfWorldEnv(**env_kwargs))
        try:
            if command == "reset":
                observation, info = env.reset(seed=seed, options={"game": argument})
                replies.append((slot, (observation, 0.0, False, False, info, None)))
            else:
                replies.append((slot, (*env.step(argument), None)))
        except Exception as error:  # one bad game must not take the other slots down
            message = f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=3)}"
            replies.append((slot, ("", 0.0, False, False, {}, message)))
    return replies


def _worker_main(conn, env_kwargs: dict) -> None:
    """Serve reset/step requests for this worker's slots until told to close."""
    # Ctrl-C reaches the whole process group; the parent decides what to do, workers keep serving.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    envs: dict = {}
    while True:
        command, payload = conn.recv()
        if command == "close":
            return
        conn.send(answer_requests(envs, command, payload, env_kwargs))


def _exit_cause(exitcode: int | None) -> str:
    """How a worker process ended, from its exit code: "SIGSEGV", "exit code 1"."""
    if exitcode is not None and exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


class _Worker:
    """One process and its pipe."""

    def __init__(self, context, env_kwargs: dict):
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child_conn, env_kwargs), daemon=True)
        self.process.start()
        child_conn.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


def check_sizes(num_envs: int, num_workers: int | None) -> None:
    """Refuse a batch without slots, or with more workers than slots (None: not chosen yet)."""
    if num_envs < 1:
        raise ValueError(f"expected num_envs >= 1, got {num_envs}")
    if num_workers is not None and not 1 <= num_workers <= num_envs:
        raise ValueError(f"expected 1 <= num_workers <= num_envs ({num_envs}), got {num_workers}")


class BatchedEnvs(ABC):
    """The slots, their live episodes and the errored ones, whatever runs the workers.

    Slot i lives on worker i % num_workers. A backend implements `_ask` (deliver each worker its
    share of a request and collect the replies or the failures) and `_replace_worker`; everything
    a caller sees (`reset`, `step`, `live`, `restarts`, the errored results) is decided here, so
    every backend gives the same results for the same games and seeds.
    """

    def __init__(self, num_envs: int, num_workers: int, step_timeout: float, env_kwargs: dict[str, Any]):
        check_sizes(num_envs, num_workers)
        self.num_envs = num_envs
        self.num_workers = num_workers
        self.step_timeout = step_timeout
        self.restarts = 0
        self._env_kwargs = env_kwargs
        self._live: set[int] = set()
        self._games: dict[int, str] = {}

    @property
    def live(self) -> set[int]:
        """Slots whose episode is running."""
        return set(self._live)

    @abstractmethod
    def worker_pids(self) -> list[int]:
        """The process id of each worker, in worker order (on its own machine, for a Ray actor)."""

    @abstractmethod
    def close(self) -> None:
        """Stop every worker; the batch cannot be used afterwards."""

    @abstractmethod
    def _ask(
        self, command: str, shares: Mapping[int, list[Request]]
    ) -> tuple[dict[int, list[Reply]], dict[int, BaseException]]:
        """Send worker `index` its requests `shares[index]` and wait for it: (replies by worker,
        failures by worker). A worker that does not answer within `step_timeout` fails with a
        TimeoutError."""

    @abstractmethod
    def _replace_worker(self, index: int, failure: BaseException) -> str:
        """Kill worker `index` after `failure` and start a fresh one in its place; return what
        happened to it, for the reason its episodes give ("worker crashed (SIGSEGV)")."""

    def reset(self, games: Sequence[str | None], seeds: Iterable[int | None] | None = None) -> list[StepResult | None]:
        """Start an episode of `games[i]` in slot i (None: leave slot i as it is).

        Returns a list with a StepResult for each slot reset and None for the others.
        """
        if len(games) != self.num_envs:
            raise ValueError(f"expected one game (or None) per slot, {self.num_envs}, got {len(games)}")
        seeds = list(seeds) if seeds is not None else [None] * self.num_envs
        requests = {slot: (game, seeds[slot]) for slot, game in enumerate(games) if game is not None}
        self._games.update({slot: game for slot, (game, _) in requests.items()})  # a crash names it
        results = self._exchange("reset", requests)
        for slot, result in results.items():
            (self._live.discard if result.done else self._live.add)(slot)
        return [results.get(slot) for slot in range(self.num_envs)]

    def step(self, actions: Mapping[int, str]) -> dict[int, StepResult]:
        """Play `actions[slot]` in each given slot; every slot given must be live."""
        not_live = sorted(set(actions) - self._live)
        if not_live:
            raise ValueError(f"slots {not_live} have no running episode: reset them first")
        results = self._exchange("step", {slot: (action, None) for slot, action in actions.items()})
        for slot, result in results.items():
            if result.done:
                self._live.discard(slot)
        return results

    def _exchange(self, command: str, requests: Mapping[int, tuple[Any, Any]]) -> dict[int, StepResult]:
        """Give each worker its share of the requests, then turn the answers (or failures) into results."""
        shares: dict[int, list[Request]] = {}
        for slot, (argument, seed) in requests.items():
            shares.setdefault(slot % self.num_workers, []).append((slot, argument, seed))
        answers, failures = self._ask(command, shares)
        results: dict[int, StepResult] = {}
        for replies in answers.values():
            for slot, (observation, reward, terminated, truncated, info, error) in replies:
                results[slot] = StepResult(observation, float(reward), bool(terminated), bool(truncated), info, error)
        for index, failure in failures.items():
            results.update(self._restart(index, failure, [slot for slot, _, _ in shares[index]]))
        return results

    def _restart(self, index: int, failure: BaseException, asked: list[int]) -> dict[int, StepResult]:
        """Replace worker `index`; the slots asked of it and every live episode it held end errored,
        each with a reason naming what happened to the worker and the game it was playing."""
        cause = self._replace_worker(index, failure)
        self.restarts += 1
        lost = sorted(set(asked) | {slot for slot in self._live if slot % self.num_workers == index})
        self._live.difference_update(lost)
        return {slot: self._errored(slot, f"{cause} while playing {self._games.get(slot)}") for slot in lost}

    def _errored(self, slot: int, reason: str) -> StepResult:
        return StepResult("", 0.0, False, False, {"gamefile": self._games.get(slot)}, reason)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class BatchedAlfWorld(BatchedEnvs):
    """`num_envs` AlfWorldEnv slots over `num_workers` local processes (see the module docstring).

    Args:
        num_envs: number of slots (episodes played at once).
        num_workers: processes; default min(num_envs, CPU count).
        step_timeout: seconds a worker may take to answer one reset or step request.
        **env_kwargs: passed to every AlfWorldEnv (max_steps, expert, trust_game_files).
    """

    def __init__(
        self,
        num_envs: int,
        num_workers: int | None = None,
        step_timeout: float = DEFAULT_STEP_TIMEOUT,
        **env_kwargs: Any,
    ):
        super().__init__(num_envs, num_workers or min(num_envs, os.cpu_count() or 1), step_timeout, env_kwargs)
        # forkserver: workers start from a clean process that already imported the engine, so a
        # restart is quick and never inherits the parent's torch threads.
        self._context = mp.get_context("forkserver")
        self._context.set_forkserver_preload(["envs.alfworld_env", "textworld.envs"])
        self._workers = [_Worker(self._context, env_kwargs) for _ in range(self.num_workers)]

    def worker_pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    def _ask(
        self, command: str, shares: Mapping[int, list[Request]]
    ) -> tuple[dict[int, list[Reply]], dict[int, BaseException]]:
        for index, share in shares.items():
            try:
                self._workers[index].conn.send((command, share))
            except (BrokenPipeError, OSError):
                pass  # a dead worker is found when its answer is collected
        answers: dict[int, list[Reply]] = {}
        failures: dict[int, BaseException] = {}
        for index in shares:
            worker = self._workers[index]
            try:
                if not worker.conn.poll(self.step_timeout):
                    raise TimeoutError(f"no answer within {self.step_timeout:g} s")
                answers[index] = worker.conn.recv()
            except (TimeoutError, EOFError, OSError) as failure:
                failures[index] = failure
        return answers, failures

    def _replace_worker(self, index: int, failure: BaseException) -> str:
        worker = self._workers[index]
        worker.kill()
        self._workers[index] = _Worker(self._context, self._env_kwargs)
        if isinstance(failure, TimeoutError):
            return f"worker hung (no answer within {self.step_timeout:g} s)"
        return f"worker crashed ({_exit_cause(worker.process.exitcode)})"

    def close(self) -> None:
        for worker in self._workers:
            try:
                worker.conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.kill()
        self._workers = []
