"""Crash-safe checkpoints: written into a temporary folder, then renamed into place.

A run killed in the middle of a save leaves the previous checkpoint (and the `latest`
pointer to it) intact; `--resume` continues from whatever `latest` names.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


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
