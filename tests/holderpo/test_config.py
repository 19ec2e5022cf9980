"""One truth for every option: TrainConfig's defaults are the default run, shipped configs load by
name (also from an installed wheel), `--help` shows the defaults a run uses, and every choice list
equals the registry it names."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from holderpo.cli import make_parser
from holderpo.config import TrainConfig, load_config, shipped_configs
from tests.conftest import FIXTURES

REPO = Path(__file__).parent.parent.parent
BEFORE = json.loads((FIXTURES / "resolved_configs.json").read_text())


def test_the_dataclass_defaults_are_the_default_run():
    assert TrainConfig().to_dict() == BEFORE["default_run"]
    assert load_config().to_dict() == BEFORE["default_run"]


@pytest.mark.parametrize("name", ["debug_cpu", "paper_alfworld_gpu"])
def test_shipped_configs_resolve_as_before_the_defaults_moved(name):
    assert load_config(name).to_dict() == BEFORE[name]


def test_yaml_and_flags_only_override(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("history: 3\nmax_steps: 20\n")
    resolved = load_config(config, {"max_steps": 30, "lr": None})
    expected = dataclasses.replace(TrainConfig(), history=3, max_steps=30)
    assert resolved == expected


def test_an_unknown_config_name_lists_the_shipped_ones():
    assert shipped_configs() == ["debug_cpu", "paper_alfworld_gpu", "reasoning_cpu"]
    with pytest.raises(
        ValueError,
        match=r"--config: expected a YAML file or a shipped config name among "
        r"\['debug_cpu', 'paper_alfworld_gpu', 'reasoning_cpu'\], got 'paper_gpu'",
    ):
        load_config("paper_gpu")


@pytest.mark.parametrize("command", ["train", "sft", "compare"])
def test_help_prints_the_defaults_the_run_uses(command, capsys):
    with pytest.raises(SystemExit):
        make_parser().parse_args([command, "--help"])
    options = " ".join(capsys.readouterr().out.split("options:")[1].split())  # undo argparse's line wrapping
    defaults = TrainConfig()
    for name in ("history", "max_steps", "sft_epochs", "lr", "kl_coef", "heldout_games", "finetune"):
        flag = name.replace("_", "-")
        shown = re.search(rf"--{flag} \S+ .*?\(default: ([^)]*)\)", options)
        assert shown and shown.group(1) == repr(getattr(defaults, name)), name


def test_choice_lists_equal_the_registries():
    from agents.llm_policy import DECODINGS
    from agents.parsing import OUTPUT_FORMATS
    from agents.policy_settings import PolicySettings
    from agents.prompts import CONTEXT_MODES, PROMPT_STYLES
    from envs.generator import SIZES
    from holderpo.advantages import ESTIMATORS
    from holderpo.kl import KL_ESTIMATORS
    from holderpo.losses import PRESETS
    from holderpo.schedules import SHAPES

    registries = {
        "preset": PRESETS,
        "p_schedule": SHAPES,
        "estimator": [*ESTIMATORS, "gigpo"],
        "kl_estimator": KL_ESTIMATORS,
        "decoding": DECODINGS,
        "output_format": OUTPUT_FORMATS,
        "context": CONTEXT_MODES,
        "prompt_style": PROMPT_STYLES,
        "generate_size": SIZES,
    }
    for config in (TrainConfig, PolicySettings):
        choices = {f.name: f.metadata["choices"] for f in dataclasses.fields(config) if "choices" in f.metadata}
        for name, registry in registries.items():
            if name in choices:
                assert sorted(choices[name]) == sorted(registry), f"{config.__name__}.{name}"


def test_a_shipped_config_loads_by_name_from_an_installed_wheel(tmp_path):
    """Configs are package data: `--config paper_alfworld_gpu` works away from a source checkout."""
    source = tmp_path / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".*", "__pycache__", "*.egg-info", "build", "runs", "games", "data", "tests", "docs", "benchmarks"
        ),
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "wheels", source],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next((tmp_path / "wheels").glob("holderpo-*.whl"))
    installed = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", tmp_path / "site", wheel],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    away = tmp_path / "elsewhere"
    away.mkdir()
    code = (
        "import json, holderpo.config as c; "
        "print(json.dumps([c.__file__, c.load_config('paper_alfworld_gpu').to_dict()]))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code],
        cwd=away,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
    )
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    module, config = json.loads(loaded.stdout)
    assert Path(module).is_relative_to(tmp_path / "site")
    assert config == BEFORE["paper_alfworld_gpu"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"grpo_statistics": "steps", "estimator": "rloo"}, "--grpo-statistics steps: expected --estimator grpo"),
        ({"invalid_penalty_mode": "step"}, "expected --grpo-statistics steps"),
        ({"prompt_style": "verl_agent", "output_format": "action"}, "--prompt-style verl_agent"),
        ({"engine_workers": 2}, "--engine-workers 2: engine workers hold vLLM engines, expected --engine vllm"),
        ({"sft_thoughts": True}, "--sft-thoughts: demonstrations think in the react format, expected --output-format"),
        ({"max_think_tokens": 0}, "--max-think-tokens: expected a positive integer, got 0"),
    ],
)
def test_recipe_options_that_do_not_fit_together_are_refused(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(TrainConfig(), **options).validate()


def test_step_penalties_with_step_row_statistics_are_a_valid_recipe():
    dataclasses.replace(TrainConfig(), grpo_statistics="steps", invalid_penalty_mode="step").validate()
