"""Reading a data file: one reader for every command, one meaning per file suffix.

| suffix | meaning |
|---|---|
| `.jsonl`, `.jsonl.gz` | JSON lines: MRQA QA contexts, or corpus documents with a "text" field |
| `.json`, `.json.gz` | one JSON document: SQuAD JSON |
| anything else | plain UTF-8 text (gzip-compressed if it starts with the gzip magic bytes) |

Whatever the name says, a file that starts with the gzip magic bytes is decompressed (names
can lie); a corrupt archive, a non-UTF-8 byte or an unreadable path is a `DataError` with one
line naming the file, never an `EOFError` or `UnicodeDecodeError` from deep inside.
"""

from __future__ import annotations

import enum
import gzip
import zlib
from pathlib import Path

from ..errors import DataError

GZIP_MAGIC = b"\x1f\x8b"


class FileFormat(enum.Enum):
    JSON_LINES = "JSON lines"
    JSON = "JSON"
    TEXT = "plain text"


def file_format(path: str | Path) -> FileFormat:
    """What a file's name says it holds (see the module docstring's table)."""
    name = Path(path).name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return FileFormat.JSON_LINES
    if name.endswith((".json", ".json.gz")):
        return FileFormat.JSON
    return FileFormat.TEXT


def read_bytes(path: str | Path, max_bytes: int | None = None) -> bytes:
    """A file's bytes, gunzipped when they start with the gzip magic; every failure a one-line DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"no such file: {path}")
    if not path.is_file():
        raise DataError(f"not a file: {path}")
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise DataError(f"{path} is larger than {max_bytes // 2**20} MiB")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from error
    if raw.startswith(GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path}: corrupt gzip data ({error})") from error
    return raw


def read_text(path: str | Path, max_bytes: int | None = None) -> str:
    """A file's whole text (UTF-8, a leading byte-order mark dropped)."""
    raw = read_bytes(path, max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {error.start})") from error
    return text.removeprefix("\ufeff")


def stream_lines(path: str | Path):
    """(line number, line) of a text file's non-blank lines, read as a stream (gzip or plain).

    For files too large to hold in memory; failures mid-stream are `DataError`s like `read_text`'s.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}" if not path.exists() else f"not a file: {path}")
    with open(path, "rb") as probe:
        compressed = probe.read(2) == GZIP_MAGIC
    opener = gzip.open if compressed else open
    number = 0
    try:
        with opener(path, "rt", encoding="utf-8", newline="\n") as handle:
            for number, line in enumerate(handle, start=1):
                line = line.rstrip("\n")
                if number == 1:
                    line = line.removeprefix("\ufeff")
                if line.strip():
                    yield number, line
    except UnicodeDecodeError as error:
        raise DataError(f"{path} line {number + 1}: not UTF-8 text") from error
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: corrupt gzip data ({error})") from error


def json_lines(text: str):
    """(line number, line) of the non-blank lines of a JSON-lines text.

    Split on "\\n" only: str.splitlines() would also break on U+2028 inside JSON strings.
    """
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield number, line
