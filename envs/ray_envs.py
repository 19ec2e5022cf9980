"""Batched ALFWorld envs whose workers are Ray actors: on this machine, or spread over a cluster.

`RayBatchedAlfWorld` is `BatchedAlfWorld` with Ray actors in place of local processes; both are
`envs.batched.BatchedEnvs`, so the interface and the guarantees are the same:

- slot i lives on actor i % num_workers, and each actor keeps its slots' AlfWorldEnvs warm;
- `reset(games, seeds)` with None for a slot left alone, no autoreset, `step` on live slots only;
- results depend on the games and seeds only, never on which node or actor played them;
- an actor that dies (killed, crashed, its node lost) or does not answer within `step_timeout`
  is killed and replaced, and each episode it held ends errored with a reason that names what
  happened and the game (`env actor on 10.0.0.7 died (its node has died) while playing ...`).

    batch = RayBatchedAlfWorld(num_envs=8, num_workers=4)                          # Ray on this machine
    batch = RayBatchedAlfWorld(num_envs=64, num_workers=32, ray_address="auto")    # this node's cluster

Connecting. A Ray instance this process already runs or joined is used as it is. Otherwise
`ray_address=None` starts one here: `num_cpus` CPUs, no dashboard, no usage reports, every server
on 127.0.0.1, token authentication on (Ray's default); it stays up until the process exits (or
`ray.shutdown()`), so later batches reuse it. "auto" joins the cluster this machine is a node of,
"HOST:PORT" the one whose head listens there; on a cluster, every node needs this project
installed and the game files at the same paths. Actors ask for `actor_cpus` CPUs each (default 0.5, so two share a core:
an env step waits on the driver's policy most of the time) and are spread over the nodes.
"""

from __future__ import annotations

import os
import sys
import uuid
import warnings
from collections.abc import Mapping
from functools import cache
from types import ModuleType
from typing import Any

from envs.batched import DEFAULT_STEP_TIMEOUT, BatchedEnvs, Reply, Request, answer_requests, check_sizes

DEFAULT_ACTOR_CPUS = 0.5
# Starting an actor imports the engine (seconds on a busy machine) and may wait for a hung
# actor's CPUs to be freed (Ray kills it within about 5 s): not a step, so not `step_timeout`.
DEFAULT_START_TIMEOUT = 120.0
# On Linux, Ray gives a node the machine's routable address and its servers listen there (or on
# every interface); this switch, named after the platforms where it is off by default, makes a
# one-machine instance use 127.0.0.1 instead. Ray reads it once, when first imported.
ONE_MACHINE_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class EnvBackendUnavailable(RuntimeError):
    """The Ray env backend cannot run: Ray is not installed, or no actor could start."""


def import_ray() -> ModuleType:
    """The `ray` module, or an error that says how to install it."""
    try:
        import ray
    except ImportError as error:
        raise EnvBackendUnavailable(f'Ray is not installed ({error}): pip install -e ".[ray]"') from None
    return ray


def _keep_local_ray_on_loopback() -> None:
    """Before Ray is first imported, ask for a loopback-only instance; a Ray imported earlier
    without the switch would listen on the network, which deserves a warning."""
    if "ray" not in sys.modules:
        os.environ.setdefault(ONE_MACHINE_SWITCH, "0")
    elif ONE_MACHINE_SWITCH not in os.environ:
        warnings.warn(
            f"ray was imported before {ONE_MACHINE_SWITCH}=0 was set, so the local Ray instance about to "
            "start will listen on this machine's network address, not only on 127.0.0.1; set that variable "
            "before importing ray to keep it local",
            stacklevel=3,
        )


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> ModuleType:
    """Connect this process to Ray and return the `ray` module: to the instance it already runs or
    joined; else to the cluster at `address` ("auto" or "HOST:PORT"); else (None) to a new local
    instance of `num_cpus` CPUs (default: all), listening on 127.0.0.1 only."""
    if address is None:
        _keep_local_ray_on_loopback()
    ray = import_ray()
    if ray.is_initialized():
        return ray
    if address is not None:
        try:
            ray.init(address=address)
        except ConnectionError as error:
            raise EnvBackendUnavailable(
                f"could not join the Ray cluster at {address!r} ({error}): start one with `ray start --head`, "
                "or, if it runs, give this process its authentication token (RAY_AUTH_TOKEN or ~/.ray/auth_token; "
                "and RAY_AUTH_MODE=token with a HOST:PORT address)"
            ) from None
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline first: nothing leaves the machine
    # "local": a new instance even where RAY_ADDRESS or another Ray on this machine (someone else's,
    # on a shared one) would make ray.init() join that instead
    try:
        ray.init(
            address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, dashboard_host="127.0.0.1"
        )
    except Exception as error:  # Ray raises a bare Exception when its processes do not come up in time
        ray.shutdown()  # whatever did start
        raise EnvBackendUnavailable(
            f"Ray did not start on this machine ({error}); on a busy machine, or beside another Ray instance "
            "that holds Ray's default ports, try again, or start Ray once (`ray start --head`) and join it "
            "with ray address 'auto'"
        ) from None
    return ray


class _EnvActor:
    """One Ray actor's slots, played as a worker process plays them (`answer_requests`)."""

    def __init__(self, env_kwargs: dict[str, Any]):
        # the engine is imported before the first request, as the local backend's forkserver preloads it
        import textworld.envs  # noqa: F401

        import envs.alfworld_env  # noqa: F401

        self._envs: dict = {}
        self._env_kwargs = env_kwargs

    def play(self, command: str, requests: list[Request]) -> list[Reply]:
        return answer_requests(self._envs, command, requests, self._env_kwargs)

    def where(self) -> tuple[str, str, int]:
        """(node id, node address, process id) of this actor."""
        import ray

        return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address(), os.getpid()


@cache
def _remote_actor_class(ray: ModuleType):
    return ray.remote(_EnvActor)


def _death_cause(error: BaseException) -> str:
    """Ray's reason for an actor's death in a few words ("it was killed by `ray.kill`", "its node
    has died"); for any other error, its type and first line."""
    from ray.exceptions import ActorDiedError

    lines = str(error).splitlines()
    if isinstance(error, ActorDiedError):
        # Ray's message: a heading, tab-indented facts (class, pid, ip), then the reason.
        reason = next((line for line in lines[1:] if line and not line.startswith("\t")), "")
        first_sentence = reason.split(". ")[0].rstrip(".")
        for opening in ("The actor is dead because ", "The actor died because "):
            first_sentence = first_sentence.removeprefix(opening)
        if first_sentence:
            return first_sentence
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:200]


class RayBatchedAlfWorld(BatchedEnvs):
    """`num_envs` AlfWorldEnv slots over `num_workers` Ray actors (see the module docstring).

    Args:
        num_envs: number of slots (episodes played at once).
        num_workers: actors; default min(num_envs, the Ray cluster's CPU count).
        step_timeout: seconds an actor may take to answer one reset or step request.
        ray_address: None (this process's Ray, else a new local one), "auto" or "HOST:PORT".
        num_cpus: CPUs of a local instance started here (default: all of this machine's).
        actor_cpus: CPUs Ray reserves for each actor (fractions let several share a core).
        start_timeout: seconds the actors may take to start (imports, waiting for free CPUs).
        **env_kwargs: passed to every AlfWorldEnv (max_steps, expert, trust_game_files).
    """

    def __init__(
        self,
        num_envs: int,
        num_workers: int | None = None,
        step_timeout: float = DEFAULT_STEP_TIMEOUT,
        *,
        ray_address: str | None = None,
        num_cpus: int | None = None,
        actor_cpus: float = DEFAULT_ACTOR_CPUS,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        **env_kwargs: Any,
    ):
        check_sizes(num_envs, num_workers or None)  # before connecting: a wrong size costs no Ray start
        if actor_cpus <= 0:
            raise ValueError(f"expected actor_cpus > 0, got {actor_cpus}")
        self._ray = connect_ray(ray_address, num_cpus)
        cluster_cpus = int(self._ray.cluster_resources().get("CPU", 1))
        super().__init__(num_envs, num_workers or min(num_envs, max(cluster_cpus, 1)), step_timeout, env_kwargs)
        self.actor_cpus = actor_cpus
        self.start_timeout = start_timeout
        self._name = f"alfworld-envs-{uuid.uuid4().hex[:8]}"  # names the actors in `ray list actors`
        self._spawned = 0
        self._actors: list = []
        self._where: list[tuple[str, str, int]] = []  # (node id, node address, pid) per worker
        try:
            for index in range(self.num_workers):
                self._actors.append(self._spawn(index))  # one by one: `close` ends those started if one fails
            self._where = self._await_start(self._actors)
        except BaseException:
            self.close()
            raise

    @property
    def actors(self) -> list:
        """The actor handle of each worker, in worker order."""
        return list(self._actors)

    def worker_pids(self) -> list[int]:
        return [pid for _, _, pid in self._where]

    def worker_nodes(self) -> list[str]:
        """The Ray node id of each worker, in worker order."""
        return [node for node, _, _ in self._where]

    def _spawn(self, index: int):
        self._spawned += 1
        return (
            _remote_actor_class(self._ray)
            .options(
                num_cpus=self.actor_cpus,
                scheduling_strategy="SPREAD",  # over the nodes: one node's loss costs the fewest episodes
                name=f"{self._name}-worker{index}-{self._spawned}",
            )
            .remote(self._env_kwargs)
        )

    def _await_start(self, actors: list) -> list[tuple[str, str, int]]:
        """Wait until `actors` run and say where; refuse with the likely cause if they do not."""
        ray = self._ray
        try:
            return ray.get([actor.where.remote() for actor in actors], timeout=self.start_timeout)
        except ray.exceptions.GetTimeoutError:
            total = ray.cluster_resources().get("CPU", 0)
            raise EnvBackendUnavailable(
                f"{len(actors)} env actor(s) did not start within {self.start_timeout:g} s: each asks for "
                f"{self.actor_cpus:g} CPU and the Ray cluster has {total:g} CPU(s) for all of its tasks; "
                "use fewer workers, a smaller actor_cpus, or more nodes"
            ) from None
        except ray.exceptions.RayError as error:
            raise EnvBackendUnavailable(f"an env actor failed to start: {_death_cause(error)}") from None

    def _ask(
        self, command: str, shares: Mapping[int, list[Request]]
    ) -> tuple[dict[int, list[Reply]], dict[int, BaseException]]:
        if not shares:
            return {}, {}
        ray = self._ray
        calls = {index: self._actors[index].play.remote(command, share) for index, share in shares.items()}
        # one deadline for all: the actors work in parallel, as the local workers do
        ready, _ = ray.wait(list(calls.values()), num_returns=len(calls), timeout=self.step_timeout)
        ready = set(ready)
        answers: dict[int, list[Reply]] = {}
        failures: dict[int, BaseException] = {}
        for index, call in calls.items():
            if call not in ready:
                failures[index] = TimeoutError(f"no answer within {self.step_timeout:g} s")
                continue
            try:
                answers[index] = ray.get(call)
            except ray.exceptions.RayError as error:
                failures[index] = error
        return answers, failures

    def _replace_worker(self, index: int, failure: BaseException) -> str:
        address = self._where[index][1]
        self._kill(self._actors[index])
        self._actors[index] = self._spawn(index)
        self._where[index] = self._await_start([self._actors[index]])[0]
        if isinstance(failure, TimeoutError):
            return f"env actor on {address} hung (no answer within {self.step_timeout:g} s)"
        return f"env actor on {address} died ({_death_cause(failure)})"

    def _kill(self, actor) -> None:
        """End an actor for good (Ray kills a hung one's process within seconds)."""
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception:  # already gone with its node, or Ray shut down: nothing left to end
            pass

    def close(self) -> None:
        """Kill the actors; Ray itself stays up for the next batch (see the module docstring)."""
        for actor in self._actors:
            self._kill(actor)
        self._actors = []
