"""vLLM engines in Ray actors: separate generation workers (`--engine vllm --engine-workers N`).

Each of N actors (one per GPU, or per node) holds its own `agents.vllm_engine.VLLMEngine`;
`RayVLLMEngine` drives them under the contract of `agents.engines`:

- The model travels once: pickled by `torch.save` into Ray's object store, loaded by each actor
  on its CPU, where the actor builds its engine from it. The object store reaches every node
  (a scratch folder would need a shared file system), and the pickle keeps what a folder of
  weights drops: which tensors train, tied embeddings, a peft model's adapters.
- `sync(model)` puts the tensors that train into the object store once; every actor copies them
  into its model and calls its engine's own `sync`, so a push is exactly the in-process one (all
  weights at the start, then only the trained ones; a LoRA adapter served by request).
- `generate` cuts a lock-step call's rows into contiguous chunks, one per actor, runs them at
  once and joins the results in order. Each row samples with its own seed, so the responses are
  the in-process engine's whatever the split (the tests hold it exactly).
- Each actor counts its syncs. A generation names the version the driver expects, and an actor
  holding another refuses: one rollout never mixes two policies, and a sync that reached only
  some actors stops generation.

Ray: the instance this process already runs or joined (the env backend's, say), else the cluster
`ray_address` names ("auto", HOST:PORT), else a new one on this machine, listening on 127.0.0.1
only, without dashboard, with Ray's token authentication on (its default). Actors ask for one
GPU each when the model is on CUDA. CPU actors (what the tests run) share this machine's torch
threads between them: they try the setup out, and cannot beat the in-process engine on one CPU.

Install with `pip install -e ".[ray]"` beside the vllm extra; on a cluster every node needs the
toolkit installed (actors import `agents`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import torch

from agents.constrained import ActionConstraint
from agents.generation import Generation
from agents.vllm_engine import EngineUnavailable, VLLMEngine, sampled_logprob_error
from envs.ray_envs import EnvBackendUnavailable, connect_ray

RAY_INSTALL = 'pip install -e ".[ray]"'
# a CPU actor's share of a CPU in Ray's books, as env actors take: vLLM's CPU build runs the
# threads it is given whatever Ray counts, and a whole CPU each would starve env actors of a
# small machine's slots
CPU_SHARE = 0.5
# starting loads the model and builds an engine (minutes for a large model); past this, Ray has
# most likely found no GPU for an actor and would leave it pending for ever
START_TIMEOUT = 900.0
# an actor has its GPU to itself: vLLM may take most of it (in process it leaves 60% to training)
WORKER_GPU_FRACTION = 0.9


def connect(address: str | None = None):
    """Ray, connected as the env backend connects (`envs.ray_envs.connect_ray`: the instance this
    process runs or joined, else the cluster at `address`, else a new one on 127.0.0.1 only);
    EngineUnavailable, saying how to install Ray, where it cannot be."""
    try:
        return connect_ray(address)
    except EnvBackendUnavailable as error:
        raise EngineUnavailable(f"engine workers run in Ray actors: {error}") from None


def make_vllm_engine(
    model, tokenizer, *, dtype: str = "float32", workers: int = 0, ray_address: str | None = None
) -> VLLMEngine | RayVLLMEngine:
    """The vLLM engine a run asks for: in this process when `workers` is 0, else in that many
    Ray actors (`ray_address`: "auto" or HOST:PORT of a cluster to join; None or "": Ray on this
    machine, see `connect`)."""
    if workers < 0:
        raise ValueError(f"engine workers: expected 0 (in this process) or more, got {workers}")
    if workers == 0:
        return VLLMEngine.for_model(model, tokenizer, dtype=dtype)
    return RayVLLMEngine.for_model(model, tokenizer, workers=workers, dtype=dtype, ray_address=ray_address or None)


def row_chunks(rows: int, parts: int) -> list[slice]:
    """`parts` contiguous slices covering `range(rows)`, their sizes within one of each other
    (the larger first); with fewer rows than parts the last slices are empty."""
    size, extra = divmod(rows, parts)
    bounds = [0]
    for part in range(parts):
        bounds.append(bounds[-1] + size + (part < extra))
    return [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]


class EngineWorker:
    """What one actor runs: a CPU copy of the trainer's model and a `VLLMEngine` built from it
    (the copy is what the engine's `sync` reads: trained tensors and adapters)."""

    def __init__(self, model_pickle: bytes, tokenizer, dtype: str, device: str, memory_fraction: float, max_model_len):
        # our own pickle, written by the driver that started this actor
        self.model = torch.load(io.BytesIO(model_pickle), map_location="cpu", weights_only=False)
        self.engine = VLLMEngine.for_model(
            self.model,
            tokenizer,
            dtype=dtype,
            device=device,
            memory_fraction=memory_fraction,
            max_model_len=max_model_len,
        )

    def version(self) -> int:
        return self.engine.version

    def sync(self, trained: dict[str, torch.Tensor]) -> int:
        """Copy the trainer's trained tensors into this model (it holds the others already), mark
        them as the ones that train, and push them as the in-process engine does."""
        with torch.no_grad():
            for name, parameter in self.model.named_parameters():
                parameter.requires_grad_(name in trained)
                if name in trained:
                    parameter.copy_(trained[name])
        self.engine.sync(self.model)
        return self.engine.version

    def generate(
        self,
        version: int,
        prompts: list[list[int]],
        seeds: list[int],
        specs: list[dict | None],
        options: dict,
    ) -> list[Generation]:
        """The engine's generations for these rows, if it holds the weights of `version`;
        constraints arrive as their specs and are rebuilt here."""
        if self.engine.version != version:
            raise RuntimeError(
                f"an engine worker holds weights version {self.engine.version} where the rollout expects "
                f"{version}: a sync missed it, so generation is refused"
            )
        constraints = [None if spec is None else ActionConstraint(**spec) for spec in specs]
        return self.engine.generate(prompts, seeds, constraints, **options)


class RayVLLMEngine:
    """vLLM engines in Ray actors (see the module docstring). Build it with `for_model`; the
    constructor takes running `EngineWorker` actors (any subset of another engine's)."""

    name = "vllm"  # each actor runs the in-process engine: the same seeds draw the same responses
    separate_weights = True

    def __init__(self, workers: Sequence):
        import ray  # running actors: Ray is there and connected

        self.ray = ray
        self.workers = list(workers)
        self.version = _agreed(self.ray.get([worker.version.remote() for worker in self.workers]))

    @classmethod
    def for_model(
        cls,
        model,
        tokenizer,
        *,
        workers: int,
        dtype: str = "float32",
        ray_address: str | None = None,
        max_model_len: int | None = None,
    ) -> RayVLLMEngine:
        """`workers` actors, each with an engine holding `model`'s weights: one GPU each when the
        model is on CUDA (the engine then runs there), else a share of a CPU."""
        if workers < 1:
            raise ValueError(f"engine workers: expected at least 1 actor, got {workers}")
        ray = connect(ray_address)
        on_gpu = next(model.parameters()).device.type == "cuda"
        actor = ray.remote(**_actor_options(on_gpu, workers))(EngineWorker)
        model_pickle, tokenizer_ref = ray.put(_pickled(model)), ray.put(tokenizer)
        device = "cuda" if on_gpu else "cpu"
        handles = [
            actor.remote(model_pickle, tokenizer_ref, dtype, device, WORKER_GPU_FRACTION, max_model_len)
            for _ in range(workers)
        ]
        try:
            ray.get([worker.version.remote() for worker in handles], timeout=START_TIMEOUT)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as error:
            for worker in handles:
                ray.kill(worker)
            if isinstance(error, ray.exceptions.GetTimeoutError):
                raise EngineUnavailable(
                    f"{workers} engine workers did not start within {START_TIMEOUT:.0f} s: does the Ray cluster "
                    f"have {'a free GPU' if on_gpu else 'room'} for each? (`ray status` shows its resources)"
                ) from None
            raise EngineUnavailable(f"an engine worker could not start: {error}") from None
        return cls(handles)

    # -- weights ------------------------------------------------------------------------------
    def sync(self, model) -> None:
        """Make every actor generate with `model`'s current weights: its trained tensors go into
        Ray's object store once and each actor loads them (see `EngineWorker.sync`)."""
        trained = {name: tensor.detach().cpu() for name, tensor in model.named_parameters() if tensor.requires_grad}
        weights = self.ray.put(trained)
        self.version = _agreed(self.ray.get([worker.sync.remote(weights) for worker in self.workers]))

    def sync_error(self, model, probe: Sequence[int], new_tokens: int = 16) -> float:
        """The largest |engine - model| log-prob over one response per actor sampled for `probe`
        (as many rows as actors: one each), so that every actor's copy is checked."""
        return sampled_logprob_error(self, model, probe, copies=len(self.workers), new_tokens=new_tokens)

    # -- generation ---------------------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        seeds: Sequence[int],
        constraints: Sequence[ActionConstraint | None],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop_strings: Sequence[str],
        prefix_lengths: Sequence[int] | None,
    ) -> list[Generation]:
        """Contiguous chunks of the rows, one per actor, generated at once and joined in order."""
        options = {
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stop_strings": list(stop_strings),
        }
        specs = [None if constraint is None else constraint.spec for constraint in constraints]
        calls = []
        for worker, rows in zip(self.workers, row_chunks(len(prompts), len(self.workers))):
            if rows.start == rows.stop:
                continue
            chunk = options | {"prefix_lengths": None if prefix_lengths is None else list(prefix_lengths[rows])}
            prompt_ids = [list(prompt) for prompt in prompts[rows]]
            calls.append(
                worker.generate.remote(self.version, prompt_ids, [int(s) for s in seeds[rows]], specs[rows], chunk)
            )
        return [generation for chunk in self.ray.get(calls) for generation in chunk]

    def prefix_states(self, prefix: tuple[int, ...]) -> torch.Tensor | None:
        return None  # vLLM keeps no trunk states

    def close(self) -> None:
        """Stop the actors (they also stop when this engine and every handle to them are gone)."""
        for worker in self.workers:
            self.ray.kill(worker)


def _actor_options(on_gpu: bool, workers: int) -> dict:
    """Ray options of an engine actor: a GPU of its own, or a share of a CPU and of this process's
    torch threads (CPU actors share this machine: without a count of their own they would inherit
    whatever OMP_NUM_THREADS the driver had and, together, run more threads than it has cores)."""
    if on_gpu:
        return {"num_gpus": 1, "num_cpus": CPU_SHARE}
    threads = max(1, torch.get_num_threads() // workers)
    return {"num_cpus": CPU_SHARE, "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(threads)}}}


def _pickled(model) -> bytes:
    """`model` as `torch.save` writes it: CUDA tensors go through host copies one at a time, and
    the loader puts them on its CPU."""
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()


def _agreed(versions: list[int]) -> int:
    """The one weights version every actor holds, or a RuntimeError."""
    if len(set(versions)) != 1:
        raise RuntimeError(
            f"the engine workers hold different weights (versions {versions}): a sync reached only some "
            "of them, so generation is refused"
        )
    return versions[0]
