"""Crash-safe checkpoints: written into a temporary folder, then renamed into place.

A run killed in the middle of a save leaves the previous checkpoint (and the `latest`
pointer to it) intact; `--resume` continues from whatever `latest` names.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import CheckpointError


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = checkpoint_root(run_dir) / "latest"
    if not pointer.is_file():
        return None
    path = checkpoint_root(run_dir) / pointer.read_text().strip()
    return path if (path / "trainer_state.json").is_file() else None


def staging_path(run_dir: Path, step: int) -> Path:
    return checkpoint_root(run_dir) / f".saving-step-{step:07d}"


def staging_dir(run_dir: Path, step: int) -> Path:
    """An empty staging folder for the checkpoint of `step` (a leftover from a killed save is cleared)."""
    path = staging_path(run_dir, step)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def commit_checkpoint(run_dir: Path, staging: Path, step: int, state: dict, keep: int = 2) -> Path:
    """Write the trainer state last, rename the folder into place, move `latest`, prune old ones."""
    (staging / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n")
    final = checkpoint_root(run_dir) / f"step-{step:07d}"
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    pointer = checkpoint_root(run_dir) / "latest"
    tmp = pointer.with_name("latest.tmp")
    tmp.write_text(final.name + "\n")
    tmp.replace(pointer)
    for old in sorted(checkpoint_root(run_dir).glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_state(checkpoint: Path) -> dict:
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text())


# ---------------------------------------------------------------------------- training state
# What a checkpoint holds besides trainer_state.json, every file at most `shard_mb`, so that a
# checkpoint can leave a machine whose transfers cap file sizes (the device returns files of at
# most 16 MiB), and nothing in it depends on the number of processes that wrote it:
#   trainable*.safetensors   the trainable parameters (sharded, with an index, when large)
#   optimizer*.safetensors   the optimizer's tensors, keyed "<param index>.<name>"
#   optimizer.json           the optimizer's parameter groups and non-tensor state
#   scheduler.json           the learning-rate schedule's state
#   rng-<rank>.pt            each process's random generators (restored where the world size matches)


def _save_tensors(tensors: dict, folder: Path, prefix: str, shard_mb: float) -> None:
    from huggingface_hub import save_torch_state_dict
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    quiet_before = are_progress_bars_disabled()
    disable_progress_bars()  # no "Writing model shards" bar on every checkpoint
    try:
        # the limit counts tensor bytes only: keep 5% for each file's header (its JSON table of tensors)
        save_torch_state_dict(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, folder,
            filename_pattern=prefix + "{suffix}.safetensors", max_shard_size=int(shard_mb * 2**20 * 0.95),
        )
    finally:
        if not quiet_before:
            enable_progress_bars()


def _load_tensors(folder: Path, prefix: str) -> dict:
    from safetensors.torch import load_file

    index = folder / f"{prefix}.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = [f"{prefix}.safetensors"]
    tensors = {}
    for name in files:
        if not (folder / name).is_file():
            raise CheckpointError(f"checkpoint {folder} lacks {name}: copy every shard of it back")
        tensors.update(load_file(folder / name))
    return tensors


def save_training_state(folder: Path, parameters: dict, optimizer, scheduler, shard_mb: float) -> None:
    """Trainable parameters, optimizer and schedule into `folder` (call on the main process)."""
    import torch

    _save_tensors(parameters, folder, "trainable", shard_mb)
    state = optimizer.state_dict()
    tensors, plain = {}, {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                plain[f"{index}.{name}"] = value
    _save_tensors(tensors or {"empty": torch.zeros(0)}, folder, "optimizer", shard_mb)
    (folder / "optimizer.json").write_text(json.dumps({"param_groups": state["param_groups"], "plain": plain}) + "\n")
    (folder / "scheduler.json").write_text(json.dumps(scheduler.state_dict()) + "\n")


def load_training_state(folder: Path, parameters: dict, optimizer, scheduler) -> None:
    """Restore what `save_training_state` wrote into live parameters, optimizer and schedule."""
    import torch

    saved = _load_tensors(folder, "trainable")
    missing = sorted(set(parameters) - set(saved))
    if missing:
        raise CheckpointError(f"checkpoint {folder} lacks trainable parameters {missing[:3]}: it belongs to another model")
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(saved[name].to(parameter.device, parameter.dtype))
    tensors = _load_tensors(folder, "optimizer")
    groups = json.loads((folder / "optimizer.json").read_text())
    state: dict = {}
    for key, value in [*tensors.items(), *groups["plain"].items()]:
        if key == "empty":
            continue
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups["param_groups"]})
    scheduler.load_state_dict(json.loads((folder / "scheduler.json").read_text()))


def save_rng(folder: Path, rank: int) -> None:
    import random

    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    torch.save(state, folder / f"rng-{rank}.pt")


def load_rng(folder: Path, rank: int) -> bool:
    """Restore this process's generators; False when the checkpoint has none for `rank` (another world size)."""
    import random

    import numpy as np
    import torch

    path = folder / f"rng-{rank}.pt"
    if not path.is_file():
        return False
    state = torch.load(path, weights_only=False)
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    return True
