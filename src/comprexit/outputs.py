"""Writing output files: checked before any work, written atomically, with the permissions the umask gives.

Why each part:
* An output that cannot be written (a folder given as the file, a missing or unwritable folder,
  the input document itself) is refused before a model loads, not after minutes of work.
  No folder is created: a typo in a folder name should not grow a tree.
* Files are written to a temporary name beside the target and renamed, so an interrupted
  write never leaves a half-written file under the real name.
* safetensors creates its files readable by their owner only (0600) and `tempfile.mkdtemp` its
  folders 0700, while every other output is created as the umask says (0644 and 0755 under the
  usual 022); `respect_umask` gives them the same mode as any other new file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import InputError


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (/proc/self/status);
    elsewhere set and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def respect_umask(path: str | Path) -> None:
    """Give `path` (a file or folder) the mode a new one gets under the umask: 0644 / 0755 under 022."""
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~current_umask())


def check_writable(path: str | Path, source: str | Path | None = None, command: str = "comprexit") -> Path:
    """Refuse an output that is a folder, the input `source`, or in a folder that is missing or not
    writable (a file is created there and removed again, so what the OS allows is what is checked)."""
    path = Path(path)
    folder = path.parent
    if source is not None and path.resolve() == Path(source).resolve():
        raise InputError(f"{path} is the input document; choose another output")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name")
    if not folder.is_dir():
        raise InputError(f"folder {folder} does not exist ({command} creates no folders)")
    _probe(folder, path)
    return path


def check_run_folder(path: str | Path, command: str = "comprexit") -> Path:
    """Refuse an output folder (a run folder, made if missing) that is a file, in a folder that is
    missing (only the run folder itself is made, never its parents), or where nothing can be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} is a file; give a folder")
    if not path.exists() and not path.parent.is_dir():
        raise InputError(f"folder {path.parent} does not exist ({command} makes the run folder, not its parents)")
    _probe(path if path.exists() else path.parent, path)
    return path


def _probe(folder: Path, path: Path) -> None:
    """Create a file in `folder` and remove it again: what the OS allows is what is checked."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".comprexit-write-check-"):
            pass
    except OSError as error:
        raise InputError(f"cannot write {path}: {(error.strerror or str(error)).lower()}") from error


def write_safetensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Save `tensors` as safetensors at `path`: a temporary name first, the umask's mode, then renamed."""
    from safetensors.torch import save_file

    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    save_file(tensors, temporary, metadata=metadata)
    respect_umask(temporary)
    temporary.replace(path)
    return path
