"""One weights-folder format for every trained method: a JSON config and a safetensors file.

`comprexit_config.json` records the library version, the method's name, its config, the
backbone's identity and the trainable-parameter count; `comprexit.safetensors` holds only
the trained tensors (never the backbone's). Both are written to temporary names and then
renamed, and every way a folder can be wrong is reported as one `CheckpointError` line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Collection

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from . import __version__
from .backbone import BackboneIdentity
from .errors import CheckpointError
from .outputs import write_safetensors

if TYPE_CHECKING:
    from .backbone import Backbone

CONFIG_FILE = "comprexit_config.json"
WEIGHTS_FILE = "comprexit.safetensors"
# every top-level field a weights folder's JSON may hold; any other is refused, as an unknown field
# inside "config" is (a misspelt "embeding_rms" would otherwise be ignored and its default used)
CONFIG_FIELDS = ("library", "version", "method", "config", "backbone", "embedding_rms", "parameters")


def save_folder(directory: str | Path, module: nn.Module, meta: dict) -> Path:
    """Write `module`'s state dict (float32, on the CPU) and `meta` plus the library fields."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"library": "comprexit", "version": __version__, **meta}
    unknown = sorted(set(meta) - set(CONFIG_FIELDS))
    if unknown:
        raise ValueError(f"save_folder was given fields {unknown} that loading would refuse; add them to CONFIG_FIELDS")
    weights = {k: v.detach().float().contiguous().cpu() for k, v in module.state_dict().items()}
    tmp_config = directory / (CONFIG_FILE + ".tmp")
    write_safetensors(weights, directory / WEIGHTS_FILE, metadata={"format": "pt", "comprexit_version": __version__})
    tmp_config.write_text(json.dumps(meta, indent=2) + "\n")
    tmp_config.replace(directory / CONFIG_FILE)
    return directory


def folder_method(meta: dict) -> str:
    """The method a folder was trained for (folders written before baselines existed are ComprExIT's)."""
    return str(meta.get("method", "comprexit"))


def read_folder_config(
    directory: str | Path,
    method: str | None = None,
    backbone: "Backbone | BackboneIdentity | None" = None,
) -> tuple[dict, BackboneIdentity]:
    """The folder's JSON, refusing one of another method (`method`) or another backbone (`backbone`)."""
    directory = Path(directory)
    meta = read_checkpoint_config(directory)
    if method is not None and folder_method(meta) != method:
        raise CheckpointError(
            f"weights in {directory} are for method {folder_method(meta)!r}, not {method!r} "
            f"(evaluate them with --method {folder_method(meta)})"
        )
    saved = BackboneIdentity.from_dict(meta["backbone"])
    if backbone is not None:
        current = backbone if isinstance(backbone, BackboneIdentity) else backbone.identity
        problems = saved.mismatch(current)
        if problems:
            raise CheckpointError(
                f"compressor in {directory} was trained for backbone {saved.describe()}, "
                f"not for {current.describe()} ({'; '.join(problems)})"
            )
    return meta, saved


def load_state_into(module: nn.Module, directory: str | Path, fresh: Collection[str] = ()) -> None:
    """Load the folder's tensors into `module`, refusing missing, extra, misshapen or non-finite ones.

    fresh: names the folder does not hold and `module` keeps as they are: the parameters of an
        additive option turned on over trained weights (`ConfigFields.with_additions`).
    """
    directory = Path(directory)
    state = read_weights(directory / WEIGHTS_FILE)
    expected = module.state_dict()
    for name in set(fresh) - set(state):
        state[name] = expected[name]
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        raise CheckpointError(
            f"weights in {directory} do not fit the config: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            raise CheckpointError(
                f"weight {name} in {directory} has shape {tuple(state[name].shape)}, expected {tuple(tensor.shape)}"
            )
        if not torch.isfinite(state[name]).all():
            raise CheckpointError(f"weight {name} in {directory} holds NaN or infinite values")
    module.load_state_dict(state)


def read_checkpoint_config(directory: Path) -> dict:
    path = Path(directory) / CONFIG_FILE
    if not Path(directory).is_dir():
        raise CheckpointError(f"compressor folder not found: {directory}")
    if not path.is_file():
        raise CheckpointError(f"no {CONFIG_FILE} in {directory}: not a comprexit compressor folder")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(meta, dict) or "config" not in meta or "backbone" not in meta:
        raise CheckpointError(f"{path} lacks the 'config' or 'backbone' entry")
    unknown = sorted(set(meta) - set(CONFIG_FIELDS))
    if unknown:
        raise CheckpointError(f"{path} has unknown top-level field(s) {unknown}; known fields: {', '.join(CONFIG_FIELDS)}")
    if meta.get("library", "comprexit") != "comprexit":
        raise CheckpointError(f"{path} was written by {meta['library']!r}, not by comprexit")
    return meta


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"weights file {path} is corrupt or unreadable: {error}") from error
