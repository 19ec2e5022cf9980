"""Shared test fixtures: the hand-written games under tests/fixtures (laid out like $ALFWORLD_DATA)."""

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_DATA = FIXTURES / "alfworld_data"
FIXTURE_GAMES = FIXTURE_DATA / "json_2.1.1"

# The training options the tests were written against: TrainConfig's defaults before the default
# run moved into it (tests/fixtures/resolved_configs.json). Tests that build small runs pass them,
# so retuning the default run changes no test; no held-out games and no generation unless asked.
TEST_RUN_OPTIONS = {
    "heldout_games": "",
    "heldout_episodes": 0,
    "generate_train": 0,
    "generate_heldout": 0,
    "finetune": "lora",
    "top_layers": 2,
    "sft_epochs": 0,
    "sft_lr": 1e-4,
    "max_steps": 50,
    "num_envs": 16,
    "history": 2,
    "kl_coef": 0.01,
    "micro_batch_size": 8,
    "lr": 1e-5,
    "checkpoint_every": 0,
}


def run_flags(options: dict) -> list[str]:
    """Command-line tokens `--name value` of training options (underscores or hyphens in names)."""
    return [token for name, value in options.items() for token in (f"--{name.replace('_', '-')}", str(value))]


# Tolerances for two float32 paths that agree mathematically, over one forward (and backward)
# pass with no optimizer step between them: Adam's normalised steps would turn the rounding into
# CPU-dependent weight differences (compare in float64 there, as test_sft.py does).
# float32 eps is 1.2e-7; log-probs are ~ -11 (a 49k vocabulary) on the random 2-3 layer test
# models and logits reach ~40 on the 30-layer embedded model, so an ulp of either is 1e-6 to 4e-6.
#
# Log-probs recorded while sampling (token by token on cached keys and values, rows padded into
# batches) against one teacher-forced pass, or against the same sampling batched otherwise.
# Measured worst: 1.9e-6 on the tiny models, 1.0e-5 on the embedded model (a few ulps of its
# logits, through 30 layers): a 10-fold margin.
FLOAT32_LOGPROB_ATOL = 1e-4
# Two teacher-forced passes over the same tokens (shared prompt starts, or recorded trunk states,
# against the whole model): the same kernels on other shapes. Measured worst 9.5e-7, one ulp of
# a log-prob near -11: a 10-fold margin.
FLOAT32_SCORING_ATOL = 1e-5
# Hidden states and parameter gradients of those passes, elementwise. Measured worst 1.9e-6 on
# gradients (3% of this tolerance) and 1.5e-8 on recorded trunk states.
FLOAT32_TENSOR_TOL = {"atol": 1e-5, "rtol": 1e-4}


@pytest.fixture(scope="session")
def fixture_game_files() -> list[str]:
    """Every fixture game file, sorted (seven games, all six task types, one legacy grammar)."""
    return sorted(str(p) for p in FIXTURE_GAMES.rglob("game.tw-pddl"))


@pytest.fixture
def games_copy(tmp_path: Path) -> Path:
    """A writable copy of the fixture data, for tests that break or add games."""
    target = tmp_path / "games"
    shutil.copytree(FIXTURE_GAMES, target)
    return target


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded model's tokenizer (converted from the GGUF file once, then cached)."""
    from transformers import AutoTokenizer

    from agents.models import embedded_checkpoint

    return AutoTokenizer.from_pretrained(embedded_checkpoint())


def random_llama(tokenizer, **sizes):
    """A randomly initialised Llama (seed 0) with the embedded model's vocabulary, by default 2
    layers of width 64: fast and real. `sizes` overrides any LlamaConfig setting."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    settings = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
    }
    tokens = {
        "vocab_size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    return LlamaForCausalLM(LlamaConfig(**settings | sizes, **tokens)).eval()


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    """The shared test model: `random_llama` at its default sizes."""
    return random_llama(tokenizer)


def scripted_model(tokenizer, transitions: dict[int, int], default: int):
    """A real Llama whose next token depends only on the current one: `transitions[token]`, else
    `default`. Its layers are zeroed, so the residual stream is the token's one-hot embedding and
    the LM head maps it to the chosen successor. Lets tests make a model emit exactly the bad
    outputs they need (nothing but EOS, endless text, broken UTF-8, the prompt again)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    keys = sorted(transitions)
    hidden = 2 * (len(keys) // 2 + 2)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.model.norm.weight.fill_(1.0)
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        embed[:, hidden - 1] = 1.0  # every other token: the "default" direction
        head[default, hidden - 1] = 50.0
        for column, token in enumerate(keys):
            embed[token].zero_()
            embed[token, column] = 1.0
            head[transitions[token], column] = 50.0
    return model


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model, tokenizer, tmp_path_factory) -> str:
    """The tiny model saved as a local checkpoint folder (what `--model PATH` takes)."""
    folder = tmp_path_factory.mktemp("tiny-model")
    tiny_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


# Ray reads these once, when first imported (vLLM imports it too, for its distributed executor):
# they are set before any test runs. Servers on 127.0.0.1, token authentication with a token of
# the session's own (nothing written to ~/.ray), no usage reports, and session folders (with the
# "current cluster" file that `ray.init("auto")` reads) of our own rather than those of other
# Ray users of a shared machine.
RAY_SETTINGS: dict[str, str] = {}


def pytest_configure(config):
    from envs.ray_envs import ONE_MACHINE_SWITCH

    RAY_SETTINGS.update(
        {
            ONE_MACHINE_SWITCH: "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray-"),  # short: Ray's socket paths must fit in 107 bytes
        }
    )
    os.environ.update(RAY_SETTINGS)


def pytest_unconfigure(config):
    if "RAY_TMPDIR" in RAY_SETTINGS:
        shutil.rmtree(RAY_SETTINGS["RAY_TMPDIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def ray_env() -> dict[str, str]:
    """The Ray settings of this test session (see RAY_SETTINGS), for tests that start processes."""
    return RAY_SETTINGS
