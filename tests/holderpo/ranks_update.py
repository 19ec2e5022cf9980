"""The trainer's update on a fixed batch, in one process or under torchrun (each rank holding its
groups' samples). Two updates: one optimizer step on the whole batch (rank 0 saves the gradient it
applied and the weights after it), then two epochs of minibatch steps (rank 0 saves the weights
after them and the metrics). `test_distributed.py` runs it both ways and compares.

    python tests/holderpo/ranks_update.py MODEL_DIR OUT top:default lora:default full:logits
    torchrun --nproc_per_node 2 tests/holderpo/ranks_update.py MODEL_DIR OUT top:default ...

SCORING "logits" scores every token from the model's own logits, the only way FSDP2's sharded
output layer can be used; "default" lets one process use its faster projection of the final
hidden states (`agents.scoring.output_matrix`). The two agree to ~4e-7 in a gradient, but Adam
normalises each step, so over several steps that rounding grows past 1e-6: runs compared over
several steps must score the same way.
"""

from __future__ import annotations

import sys
import tempfile

import torch

import agents.scoring as scoring_module
from holderpo.config import TrainConfig
from holderpo.distributed import join_process_group, leave_process_group, sample_layout
from holderpo.modeling import trainable_parameters
from holderpo.parallel import whole
from holderpo.samples import Sample
from holderpo.trainer import Trainer
from tests.conftest import FIXTURE_GAMES

# samples per group: over 2 ranks, rank 0 holds groups 0 and 2 (7 samples), rank 1 groups 1 and 3
GROUP_SIZES = (3, 2, 4, 3)


def fixed_batch(tokenizer) -> list[tuple[int, Sample]]:
    """(group, sample) pairs: prompts and responses of different lengths, advantages of both
    signs, one sample with no loss token; old log-probs are rescored by the update itself."""
    groups = [group for group, size in enumerate(GROUP_SIZES) for _ in range(size)]
    batch = []
    for index, group in enumerate(groups):
        prompt = tokenizer.encode(f"Room {index}: you see a drawer {index % 5} and a mug.", add_special_tokens=False)
        response = tokenizer.encode(" go to drawer" + " 1" * (1 + index % 4), add_special_tokens=False)
        mask = [index != 7] * len(response)
        advantage = ((index * 37) % 11 - 5) / 3.0
        sample = Sample(prompt, response, [0.0] * len(response), mask, [None] * len(response), advantage, 1.0, index)
        batch.append((group, sample))
    return batch


def update_case(ranks, model_dir: str, finetune: str) -> dict:
    """The two updates of one fine-tuning mode, from the model as saved; what rank 0 keeps."""
    config = TrainConfig(
        train_games=str(FIXTURE_GAMES / "train"),
        heldout_games="",
        model=model_dir,
        finetune=finetune,
        top_layers=1,
        lora_rank=4,
        minibatch_size=sum(GROUP_SIZES),  # the whole batch in one step (then 4 per step over 2 epochs)
        micro_batch_size=2,
        # Adam moves every weight by about lr per step, whatever its gradient: at 1e-4 an agreement
        # to 1e-6 is 1% of a step (a float32 gradient of ~1e-9, rounded differently on two paths,
        # still moves its weight by a fraction of lr: at lr 1e-3, 2.4e-6 was seen)
        lr=1e-4,
        kl_coef=0.0,
        recompute_old_logprobs="always",  # first steps at ratio 1, later ones off it
        games_per_iteration=len(GROUP_SIZES),
    ).validate()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, run_dir, echo=lambda _: None, ranks=ranks)
        mine = [(group, sample) for group, sample in fixed_batch(trainer.tokenizer) if ranks.owns(group)]
        tags = [trainer.sample_tag(group, sample) for group, sample in mine]
        layout = sample_layout(ranks.gather(tags), ranks.rank)
        samples = [sample for _, sample in mine]
        initial = trainer.sharing.full_weights(trainer.model)
        first = trainer.update(samples, 0, 0.5, layout)
        grads = {name: whole(p.grad).clone() for name, p in trainable_parameters(trainer.model).items()}
        stepped = trainer.sharing.full_weights(trainer.model)
        trainer.cfg.minibatch_size, trainer.cfg.epochs = 4, 2
        metrics = trainer.update(samples, 1, 0.5, layout)
        weights = trainer.sharing.full_weights(trainer.model)
    return {
        "initial": initial,
        "grads": grads,
        "stepped": stepped,
        "weights": weights,
        "metrics": [first, metrics],
        "kind": type(trainer.sharing).__name__,
    }


def main(model_dir: str, out: str, *cases: str) -> None:
    """Each case is FINETUNE:SCORING; rank 0 saves {case: what it kept} to OUT."""
    ranks = join_process_group("cpu")
    plain_scoring = scoring_module.output_matrix
    saved = {}
    for case in cases:
        finetune, scoring = case.split(":")
        scoring_module.output_matrix = (lambda model: None) if scoring == "logits" else plain_scoring
        saved[case] = update_case(ranks, model_dir, finetune)
    if ranks.is_main:
        torch.save(saved, out)
    leave_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
