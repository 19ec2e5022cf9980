"""The batched envs by backend name, for callers that let the user choose: `local` worker
processes on this machine (`envs.batched`), or `ray` actors on this machine or a Ray cluster
(`envs.ray_envs`). Both give the same results for the same games and seeds.

    with open_envs("ray", num_envs=16, num_workers=8, ray_address="auto", max_steps=50) as batch:
        records = play_episodes(batch, policy, specs)
"""

from __future__ import annotations

from typing import Any

from envs.batched import BatchedAlfWorld, BatchedEnvs

ENV_BACKENDS = ("local", "ray")


def _check_choice(backend: str, ray_address: str | None) -> None:
    if backend not in ENV_BACKENDS:
        raise ValueError(f"expected an env backend among {list(ENV_BACKENDS)}, got {backend!r}")
    if ray_address and backend != "ray":
        raise ValueError(f"a Ray address ({ray_address!r}) needs the ray env backend, got backend {backend!r}")


def prepare_env_backend(backend: str, ray_address: str | None = None) -> None:
    """Check the choice and, for ray, connect now: a missing Ray or a wrong address is then found
    before a caller clears earlier results or loads a model, not when the first episode starts."""
    _check_choice(backend, ray_address)
    if backend == "ray":
        from envs.ray_envs import connect_ray

        connect_ray(ray_address or None)


def open_envs(
    backend: str,
    num_envs: int,
    num_workers: int | None = None,
    ray_address: str | None = None,
    **env_kwargs: Any,
) -> BatchedEnvs:
    """A batch of `num_envs` slots over `num_workers` workers of `backend`.

    `ray_address` ("auto", "HOST:PORT"; None or "" for a local Ray instance) applies to the ray
    backend only. `env_kwargs` go to the backend's class (`step_timeout`, and for ray `num_cpus`,
    `actor_cpus`) and on to every AlfWorldEnv (`max_steps`, `expert`, `trust_game_files`).
    """
    _check_choice(backend, ray_address)
    if backend == "local":
        return BatchedAlfWorld(num_envs, num_workers, **env_kwargs)
    from envs.ray_envs import RayBatchedAlfWorld  # Ray is imported only when asked for

    return RayBatchedAlfWorld(num_envs, num_workers, ray_address=ray_address or None, **env_kwargs)
