"""Behaviour cloning: demonstrations use RL's prompts and masks, and learning them lowers the loss."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.llm_policy import DecodingConfig, LLMPolicy
from agents.parsing import parse_output
from agents.prompts import PromptConfig
from holderpo.modeling import compute_precision, prepare_for_training, trainable_parameters
from holderpo.sft import clone_behaviour, demonstration_samples, grouped_order
from tests.conftest import FIXTURE_GAMES, TEST_RUN_OPTIONS, run_flags

REPO = Path(__file__).parent.parent.parent


def test_demonstrations_follow_the_walkthrough_with_rl_masks(tiny_model, tokenizer, fixture_game_files):
    policy = LLMPolicy(tiny_model, tokenizer, decoding=DecodingConfig())
    games = fixture_game_files[:2]
    samples = demonstration_samples(policy, games, num_envs=2, num_workers=1)
    walkthroughs = [json.loads(Path(g).read_text())["walkthrough"] for g in games]
    assert len(samples) == sum(len(w) for w in walkthroughs)
    commands = [tokenizer.decode(s.response_ids, skip_special_tokens=True) for s in samples]
    assert sorted(commands) == sorted(c for w in walkthroughs for c in w)
    for sample in samples:
        assert sample.response_ids[-1] == tokenizer.eos_token_id
        assert all(not (m and a is not None and len(a) == 1) for m, a in zip(sample.loss_mask, sample.allowed))
        assert tokenizer.decode(sample.prompt_ids).count("<|im_start|>") == 3  # system, user, assistant
    starts = {tuple(s.prompt_ids[: s.prefix_length]) for s in samples}
    assert len(starts) == 2 and all(s.prefix_length > 20 for s in samples)  # one shared start per game
    order = grouped_order(samples, np.random.default_rng(0))
    assert sorted(order) == list(range(len(samples)))
    game_of = [tuple(samples[i].prompt_ids[: samples[i].prefix_length]) for i in order]
    assert sum(a != b for a, b in zip(game_of, game_of[1:])) == 1  # each game's turns stay together


def test_react_demonstrations_think_then_act_and_the_loss_covers_the_thought(tiny_model, tokenizer, fixture_game_files):
    prompt = PromptConfig(history=2, output_format="react")
    policy = LLMPolicy(tiny_model, tokenizer, prompt, DecodingConfig(max_think_tokens=48))
    games = fixture_game_files[:2]
    thinking = demonstration_samples(policy, games, num_envs=2, num_workers=1, thoughts=True)
    silent = demonstration_samples(policy, games, num_envs=2, num_workers=1)
    assert len(thinking) == len(silent) and [s.prompt_ids for s in thinking] == [s.prompt_ids for s in silent]
    for with_thought, without in zip(thinking, silent):
        text = tokenizer.decode(with_thought.response_ids, skip_special_tokens=True)
        parsed = parse_output(text, "react", [])
        command = tokenizer.decode(without.response_ids, skip_special_tokens=True).split("<action>")[1]
        assert parsed.thought and text.endswith(f"</think>\n<action>{command}")  # the same command, after a thought
        close = tokenizer.encode("</think>", add_special_tokens=False)
        assert text.startswith(parsed.thought) and without.response_ids[: len(close)] == close  # an empty thought
        thought_ids = with_thought.response_ids[: len(with_thought.response_ids) - len(without.response_ids)]
        assert tokenizer.decode(thought_ids) == parsed.thought and with_thought.response_ids[len(thought_ids) :] == (
            without.response_ids
        )
        # the thought is written freely, so every one of its tokens is in the loss, as the command's are
        assert with_thought.loss_mask == [True] * len(thought_ids) + without.loss_mask

    capped = LLMPolicy(tiny_model, tokenizer, prompt, DecodingConfig(max_think_tokens=4))
    with pytest.raises(ValueError, match="over max_think_tokens 4: raise --max-think-tokens"):
        demonstration_samples(capped, games[:1], num_envs=1, num_workers=1, thoughts=True)
    with pytest.raises(ValueError, match="react output format"):
        demonstration_samples(LLMPolicy(tiny_model, tokenizer), games[:1], num_envs=1, num_workers=1, thoughts=True)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cloning_lowers_the_demonstration_loss(tokenizer, fixture_game_files, tiny_model_dir, dtype):
    # every forward runs inside `precision` (a bf16 run passes bf16 autocast); the weights it
    # trains stay float32 and learn either way
    from transformers import AutoModelForCausalLM

    model = prepare_for_training(AutoModelForCausalLM.from_pretrained(tiny_model_dir), "full")
    policy = LLMPolicy(model, tokenizer, decoding=DecodingConfig())
    samples = demonstration_samples(policy, fixture_game_files[:1], num_envs=1, num_workers=1)
    logits_dtypes = set()
    model.lm_head.register_forward_hook(lambda module, inputs, output: logits_dtypes.add(output.dtype))
    losses = clone_behaviour(
        model,
        samples,
        list(trainable_parameters(model).values()),
        epochs=4,
        lr=3e-3,
        batch_size=4,
        pad_id=tokenizer.eos_token_id,
        echo=lambda _: None,
        precision=lambda: compute_precision("cpu", dtype),
    )
    assert logits_dtypes == {getattr(torch, dtype)}
    assert {p.dtype for p in trainable_parameters(model).values()} == {torch.float32}
    assert losses[-1] < 0.7 * losses[0]


def test_cloning_on_recorded_trunk_states_equals_cloning_the_whole_model(tokenizer, fixture_game_files, tiny_model_dir):
    """Both paths are the same mathematics summed in a different order. In float32, Adam's
    normalised steps turn that rounding into weight differences of up to lr where a gradient
    is near zero, and which weights depend on the CPU's kernels. In float64 the rounding of a
    gradient is ~1e-16 of its summands, and Adam (eps 1e-8) can amplify it at most lr / eps
    times: ~1e-11 after two epochs, far below the tolerance here on any CPU."""
    from transformers import AutoModelForCausalLM

    def fresh():
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
        return prepare_for_training(model, "top", top_layers=1)

    samples = demonstration_samples(
        LLMPolicy(fresh(), tokenizer, decoding=DecodingConfig()), fixture_game_files[:2], num_envs=2, num_workers=1
    )
    results, trunk_passes_with_grad = [], []
    for trunk_layers in (None, 1):
        model = fresh()
        passes = []  # the frozen block's forward passes while gradients are on, i.e. in the epochs
        model.model.layers[0].register_forward_hook(lambda *_, passes=passes: passes.append(torch.is_grad_enabled()))
        losses = clone_behaviour(
            model,
            samples,
            list(trainable_parameters(model).values()),
            epochs=2,
            lr=3e-3,
            batch_size=4,
            pad_id=tokenizer.eos_token_id,
            trunk_layers=trunk_layers,
            echo=lambda _: None,
        )
        results.append((losses, {n: p.detach().clone() for n, p in trainable_parameters(model).items()}))
        trunk_passes_with_grad.append(sum(passes))
    (whole_losses, whole), (top_losses, top) = results
    assert trunk_passes_with_grad[0] > 0 and trunk_passes_with_grad[1] == 0  # recorded once, then top only
    assert top_losses[1] < top_losses[0]  # the weights moved, so the second epoch compares trained blocks
    np.testing.assert_allclose(top_losses, whole_losses, rtol=1e-9)
    assert top.keys() == whole.keys() and len(top) > 0
    for name, weight in whole.items():
        assert weight.dtype == torch.float64, name
        torch.testing.assert_close(top[name], weight, atol=1e-9, rtol=1e-9, msg=name)


def test_sft_command_saves_a_checkpoint(tiny_model_dir, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "holderpo.cli",
            "sft",
            *run_flags(
                TEST_RUN_OPTIONS
                | {
                    "train_games": FIXTURE_GAMES / "valid_seen",
                    "model": tiny_model_dir,
                    "sft_epochs": 1,
                    "runs_dir": tmp_path,
                    "name": "warm",
                    "finetune": "top",
                    "top_layers": 1,
                    "num_workers": 1,
                }
            ),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "behaviour cloning epoch 1/1" in result.stdout
    assert (tmp_path / "warm" / "final" / "holderpo_checkpoint.json").is_file()


def test_sft_command_needs_an_epoch(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "holderpo.cli", "sft", "--sft-epochs", "0", "--runs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "--sft-epochs: behaviour cloning needs at least 1 epoch, got 0" in result.stdout
    assert not any(tmp_path.iterdir())
