"""What trains and what stays frozen (full fine-tuning, LoRA, or the top n blocks), and the
precision forward passes compute in.

The reference policy of the KL penalty shares every frozen weight with the trained model:
under LoRA it is the base model (adapters disabled); otherwise we keep copies of only the
trainable tensors as they were at the start and swap them in for the reference pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.distributed.tensor import DTensor

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Every weight is loaded in float32, whatever the compute precision: trained weights need it (a
# bf16 weight drops AdamW steps below its resolution), and frozen ones keep it so that any forward
# outside `compute_precision` still runs (in float32) instead of mixing dtypes.
MASTER_DTYPE = "float32"
COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def compute_precision(device: str | torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """The context in which forward passes run at the compute precision `dtype`: autocast to it
    (matmuls and attention in bf16/fp16, reductions and the float32 master weights untouched),
    or nothing at all for float32, so that a float32 run computes exactly as without it."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=COMPUTE_DTYPES[dtype])


def loss_scaler(device: str | torch.device, dtype: str) -> torch.amp.GradScaler:
    """Dynamic loss scaling for float16 compute, whose narrow range flushes small gradients to 0
    (its smallest normal number is 6e-5); bfloat16 has float32's range and float32 needs none, so
    for them the scaler is off and every call on it passes straight through."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=dtype == "float16")


def prepare_for_training(model, finetune: str, lora_rank: int = 16, lora_alpha: float = 32.0, top_layers: int = 2):
    """Return the model with exactly the chosen parameters requiring gradients."""
    if finetune == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora_rank,
            lora_alpha=lora_alpha,
            target_modules=LORA_TARGETS,
            lora_dropout=0.0,
            bias="none",
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, config)
    if finetune == "full":
        model.requires_grad_(True)
        return model
    if finetune == "top":
        layers = model.model.layers
        if not 1 <= top_layers <= len(layers):
            raise ValueError(f"--top-layers: expected 1..{len(layers)} for this model, got {top_layers}")
        model.requires_grad_(False)
        for block in layers[-top_layers:]:
            block.requires_grad_(True)
        model.model.norm.requires_grad_(True)
        return model
    raise ValueError(f"--finetune: expected full, lora or top, got {finetune!r}")


def trainable_parameters(model) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


class Reference:
    """The frozen reference policy, as a context in which `model` computes reference log-probs.

    Under LoRA it is always the base model. Otherwise it is a snapshot of the trainable tensors,
    taken now or again with `snapshot()` (after a warm start, so that RL is anchored to the
    policy it starts from); `weights` is what a checkpoint stores to restore it.
    """

    def __init__(self, model, finetune: str):
        self.model = model
        self.lora = finetune == "lora"
        self.weights: dict[str, torch.Tensor] = {}
        self.snapshot()

    def snapshot(self) -> None:
        if not self.lora:
            self.weights = {name: p.detach().clone() for name, p in trainable_parameters(self.model).items()}

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Inside this block (no gradients), `model` is the reference model."""
        with torch.no_grad():
            if self.lora:
                with self.model.disable_adapter():
                    yield
                return
            parameters = trainable_parameters(self.model)
            if any(isinstance(p, DTensor) for p in parameters.values()):
                # FSDP2 all-gathers from its shards' own storage: the reference is copied into it
                current = {name: p.detach().clone() for name, p in parameters.items()}
                try:
                    for name, p in parameters.items():
                        p.copy_(self.weights[name])
                    yield
                finally:
                    for name, p in parameters.items():
                        p.copy_(current[name])
                return
            current = {name: p.data for name, p in parameters.items()}
            try:
                for name, p in parameters.items():
                    p.data = self.weights[name]
                yield
            finally:
                for name, p in parameters.items():
                    p.data = current[name]
