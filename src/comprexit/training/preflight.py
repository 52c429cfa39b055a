"""What a training run reads and writes, checked before the backbone loads (one line each, exit 2 at the CLI).

A typo in a data path should not cost the minutes a backbone takes to load: every data file
is checked to exist and be readable (and a corpus to be in a corpus's format, `data.files`),
`hf:` specs for their syntax (whether the dataset exists is its loader's to find), the
`--init` and `--teacher` folders for a readable config of a fitting method (`--init`'s also for
the method config fields added over it), `--resume` for a checkpoint to resume from, and the
run folder for a parent that exists (only the run folder itself is made) and room to write.
"""

from __future__ import annotations

from pathlib import Path

from ..data.files import check_source
from ..errors import CheckpointError, ConfigError
from ..methods.trainable import encoder_class
from ..outputs import check_run_folder
from ..saving import folder_method, read_checkpoint_config, read_folder_config
from . import checkpoints
from .config import TrainConfig


def check_inputs(config: TrainConfig, resume: bool = False) -> None:
    """Refuse, before any work, a run whose files or folders cannot be read or written."""
    for spec in config.data:
        check_source(spec, corpus=config.phase == "ntp")
    for spec in config.extra_ntp:
        check_source(spec)
    if config.init is not None:
        _prefixed("init", lambda: check_init(config))
    if config.teacher is not None:
        check_teacher(config.teacher)
    run_dir = check_run_folder(config.output_dir, "train")
    if resume and checkpoints.latest_checkpoint(run_dir) is None:
        raise CheckpointError(f"--resume: no checkpoint in {checkpoints.checkpoint_root(run_dir)}")


def check_init(config: TrainConfig) -> None:
    """An init folder of another method, or whose config the given additive fields contradict."""
    meta, _ = read_folder_config(config.init, method=config.method)
    if config.compressor:
        encoder_class(config.method).config_class.from_dict(meta["config"]).with_additions(config.compressor)


def check_teacher(folder: str) -> None:
    """A KL teacher folder that is missing, unreadable or of an untrainable method, refused in one line."""
    _prefixed("teacher", lambda: encoder_class(folder_method(read_checkpoint_config(Path(folder)))))


def _prefixed(option: str, check) -> None:
    """Run `check`, naming the option in the one line of any error it raises."""
    try:
        check()
    except (CheckpointError, ConfigError) as error:
        raise type(error)(f"{option}: {error}") from error
