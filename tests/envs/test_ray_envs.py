"""RayBatchedAlfWorld on real Ray processes: the same results as the local backend on a two-node
cluster, survival of killed and hung actors, the local backend's interface errors, and every
server Ray opens listening on 127.0.0.1 only.

One simulated cluster (`ray.cluster_utils.Cluster`: two nodes of one CPU each, as separate raylets
on this machine) serves the whole module; starting one costs about 8 s.
"""

import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.baselines import ExpertPolicy, RandomAdmissiblePolicy
from envs.backends import open_envs
from eval.evaluate import evaluate, summarize
from eval.results import results_json
from eval.sweep import sweep
from rollouts.runner import play_episodes
from rollouts.specs import make_specs

if importlib.util.find_spec("ray") is None:
    pytest.skip('ray is not installed (pip install -e ".[ray]"): nothing to test', allow_module_level=True)

REPO = Path(__file__).parent.parent.parent
LOOPBACK = ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]")


@pytest.fixture(scope="module")
def cluster(ray_env):
    """Two Ray nodes on this machine, with this process connected as the driver."""
    import ray
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address)
    yield nodes
    ray.shutdown()
    nodes.shutdown()


@pytest.fixture
def games(fixture_game_files):
    return [g for g in fixture_game_files if "legacy" not in g]


def descendants(root: int) -> set[int]:
    """`root` and every process it started, directly or not (Ray's servers, raylets, workers)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # ended while we looked
    found, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return found


def listeners(root: int) -> list[tuple[str, str]]:
    """(local address, process name) of each TCP socket that `root` or its descendants listen on."""
    ours = descendants(root)
    output = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in output.splitlines():
        pids = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if pids & ours:
            found.append((line.split()[3], re.search(r'\(\("([^"]*)"', line).group(1)))
    return found


def env_actors() -> dict[int, str]:
    """worker index -> name of the live env actor of that index (the module runs one batch at a time)."""
    import ray

    names = [name for name in ray.util.list_named_actors() if name.startswith("alfworld-envs-")]
    return {int(re.search(r"-worker(\d+)-", name).group(1)): name for name in names}


class Meddler:
    """A scripted policy that does something to the envs before chosen turns of a sweep: the fault
    (or the look) arrives mid-sweep, from the same thread that plays it."""

    def __init__(self, policy, actions):
        self.policy, self.actions, self.calls = policy, actions, 0
        self.name, self.needs_expert = policy.name, policy.needs_expert

    def act(self, turns):
        self.calls += 1
        if self.calls in self.actions:
            self.actions[self.calls]()
        return self.policy.act(turns)


def _trace(records):
    return [(r.episode_id, r.outcome, r.error, [(t.observation, t.action) for t in r.turns]) for r in records]


def test_two_node_sweep_matches_the_local_backend_and_listens_on_loopback(cluster, games):
    import ray

    placed = []

    def look():
        placed.extend(ray.get([ray.get_actor(name).where.remote() for name in env_actors().values()]))
        placed.append(listeners(os.getpid()))

    settings = {"seed": 3, "samples": 2, "max_steps": 10, "num_envs": 4, "num_workers": 2}
    records = {
        "local": evaluate(RandomAdmissiblePolicy(), games, **settings),
        "ray": evaluate(Meddler(RandomAdmissiblePolicy(), {1: look}), games, env_backend="ray", **settings),
    }
    *where, sockets = placed
    assert {node for node, _, _ in where} == {node["NodeID"] for node in ray.nodes() if node["Alive"]}, where
    assert len(where) == 2
    results = {
        backend: results_json(
            summarize(played, k=2), played, policy="random", games="fixtures", seed=3, samples=2, max_steps=10
        )
        for backend, played in records.items()
    }
    assert json.dumps(results["ray"], sort_keys=True) == json.dumps(results["local"], sort_keys=True)
    assert _trace(records["ray"]) == _trace(records["local"])
    assert results["ray"]["episodes"] == 2 * len(games)
    # every server of both nodes and of this driver, the env actors' own included
    names = {name for _, name in sockets}
    assert {"gcs_server", "raylet"} <= names and any("EnvActor" in name for name in names), sockets
    assert all(address.rsplit(":", 1)[0] in LOOPBACK for address, _ in sockets), sockets


def test_killed_actor_mid_sweep_errors_its_episodes_and_is_replaced(cluster, games):
    import ray

    seen = {}

    def kill_worker_0():
        seen["before"] = env_actors()
        ray.kill(ray.get_actor(seen["before"][0]))

    def look_again():
        seen["after"] = env_actors()
        seen["alive"] = ray.get(ray.get_actor(seen["after"][0]).where.remote(), timeout=30)

    policy = Meddler(ExpertPolicy(), {3: kill_worker_0, 8: look_again})
    records = evaluate(policy, games, seed=0, samples=2, num_envs=4, num_workers=2, env_backend="ray")
    assert [r.episode_id for r in records] == [s.episode_id for s in make_specs(games, 0, samples=2)]
    errored = [r for r in records if r.outcome == "errored"]
    # worker 0 holds slots 0 and 2, both playing when it died (episodes were still waiting)
    assert len(errored) == 2, [(r.episode_id, r.outcome, r.error) for r in records]
    for record in errored:
        assert record.error == f"env actor on 127.0.0.1 died (it was killed by `ray.kill`) while playing {record.game}"
    finished = [r.outcome for r in records if r.outcome != "errored"]
    assert set(finished) <= {"won", "step-limit"} and finished.count("won") >= 8  # the expert ran in the actors
    assert seen["after"][0] != seen["before"][0] and seen["after"][1] == seen["before"][1]


def test_hung_actor_times_out_and_the_sweep_finishes(cluster, games):
    from envs.ray_envs import RayBatchedAlfWorld

    specs = make_specs(games, seed=1)
    with RayBatchedAlfWorld(num_envs=2, num_workers=2, step_timeout=4, max_steps=6) as batch:
        stopped = batch.worker_pids()[1]
        policy = Meddler(RandomAdmissiblePolicy(), {2: lambda: os.kill(stopped, signal.SIGSTOP)})
        try:
            records = play_episodes(batch, policy, specs)
        finally:
            with contextlib.suppress(ProcessLookupError):  # Ray kills it; if not yet, it must not stay frozen
                os.kill(stopped, signal.SIGCONT)
        assert batch.restarts == 1 and batch.worker_pids()[1] != stopped
        assert [r.episode_id for r in records] == [s.episode_id for s in specs]
        errored = [r for r in records if r.outcome == "errored"]
        assert len(errored) == 1  # slot 1's episode; slot 0's went on
        assert errored[0].error == f"env actor on 127.0.0.1 hung (no answer within 4 s) while playing {errored[0].game}"
        assert all(r.outcome in ("won", "step-limit") for r in records if r is not errored[0])
    deadline = time.time() + 20
    while Path(f"/proc/{stopped}").exists() and time.time() < deadline:
        time.sleep(0.5)
    assert not Path(f"/proc/{stopped}").exists() or "Z" in Path(f"/proc/{stopped}/stat").read_text().split()[2]


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_both_backends_refuse_the_same_misuse(backend, request, games):
    if backend == "ray":
        request.getfixturevalue("cluster")
    for kwargs, message in [({"num_envs": 0}, "num_envs"), ({"num_envs": 2, "num_workers": 3}, "num_workers")]:
        with pytest.raises(ValueError, match=message):
            open_envs(backend, **kwargs)
    with open_envs(backend, num_envs=2, num_workers=2, max_steps=2) as batch:
        with pytest.raises(ValueError, match=r"expected one game \(or None\) per slot, 2, got 1"):
            batch.reset([games[0]])
        batch.reset([games[0], None])
        with pytest.raises(ValueError, match=r"slots \[1\] have no running episode"):
            batch.step({0: "look", 1: "look"})
        assert batch.step({0: "look"})[0].info["step"] == 1 and batch.live == {0}


def test_backend_choice_is_checked(fixture_game_files, tmp_path):
    with pytest.raises(ValueError, match="needs the ray env backend"):
        open_envs("local", 2, ray_address="auto")
    with pytest.raises(ValueError, match=r"expected an env backend among \['local', 'ray'\], got 'docker'"):
        open_envs("docker", 2)
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(ValueError, match="needs the ray env backend"):  # before the sweep clears OUT
        sweep("random", fixture_game_files[0], {}, ray_address="auto", out=tmp_path, overwrite=True, echo=print)
    assert (tmp_path / "results.json").read_text() == "{}"


LOCAL_START = """
import json, os
from envs.ray_envs import RayBatchedAlfWorld
from tests.envs.test_ray_envs import listeners
with RayBatchedAlfWorld(num_envs=2, num_workers=2, num_cpus=1) as batch:
    import ray  # imported by the backend first, as a user of it would
    print(json.dumps({"sockets": listeners(os.getpid()), "nodes": len(ray.nodes())}))
"""


def test_a_local_instance_listens_on_loopback_only(cluster, ray_env, tmp_path):
    """The default (no address): Ray started by the backend itself in a fresh process, even
    though another Ray instance (the module's cluster) runs on this machine."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    env |= {name: ray_env[name] for name in ("RAY_AUTH_TOKEN", "RAY_TMPDIR")}
    env |= {"HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", LOCAL_START], capture_output=True, text=True, timeout=120, cwd=REPO, env=env
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    names = {name for _, name in report["sockets"]}
    assert {"gcs_server", "raylet"} <= names and report["nodes"] == 1, report  # its own, not the cluster
    assert all(address.rsplit(":", 1)[0] in LOOPBACK for address, _ in report["sockets"]), report
    assert "Token authentication is enabled" in done.stderr  # Ray's own default, kept
