"""Reading a data file: one reader for every command, one meaning per file suffix.

| suffix | meaning |
|---|---|
| `.jsonl`, `.jsonl.gz` | JSON lines: MRQA QA contexts, or corpus documents with a "text" field |
| `.json`, `.json.gz` | one JSON document: SQuAD JSON |
| anything else | plain UTF-8 text (gzip-compressed if it starts with the gzip magic bytes) |

Whatever the name says, a file that starts with the gzip magic bytes is decompressed (names
can lie); a corrupt archive, a non-UTF-8 byte or an unreadable path is a `DataError` with one
line naming the file, never an `EOFError` or `UnicodeDecodeError` from deep inside.

A data spec on the command line is such a file or `hf:NAME[:SPLIT]`, a Hugging Face dataset;
`check_source` refuses a bad one before any work (a missing or unreadable file, a corpus given
as .json, a `hf:` spec of bad syntax), leaving only the dataset's existence to its loader.
"""

from __future__ import annotations

import enum
import gzip
import zlib
from pathlib import Path

from ..errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
HF_PREFIX = "hf:"


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


def corpus_format(path: str | Path) -> FileFormat:
    """A corpus file's format: JSON lines or plain text; a .json file (SQuAD JSON) is refused."""
    kind = file_format(path)
    if kind is FileFormat.JSON:
        raise DataError(
            f"{path}: a corpus is JSON lines (.jsonl[.gz]) or plain text; a .json file is read as SQuAD JSON "
            "(give QA files with --extra-ntp to use their contexts as text)"
        )
    return kind


def split_hf_spec(spec: str) -> tuple[str, str | None]:
    """(NAME, SPLIT or None) of `hf:NAME[:SPLIT]`; no name, an empty split or a space is a DataError."""
    name, colon, split = spec[len(HF_PREFIX):].partition(":")
    if not name or (colon and not split) or any(c.isspace() for c in spec):
        raise DataError(f"bad Hugging Face dataset spec {spec!r}: use hf:NAME or hf:NAME:SPLIT")
    return name, split or None


def check_source(spec: str | Path, corpus: bool = False) -> None:
    """Refuse, before any work, a data spec that cannot be read: a `hf:` spec of bad syntax (whether
    the dataset exists is its loader's to find), a path that is missing, not a file or unreadable,
    or a corpus (`corpus`) in a format no corpus has (`corpus_format`)."""
    if str(spec).startswith(HF_PREFIX):
        split_hf_spec(str(spec))
        return
    check_readable(spec)
    if corpus:
        corpus_format(spec)


def check_readable(path: str | Path) -> Path:
    """`path`, refused in one line if it is missing, not a file, or cannot be opened for reading."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"no such file: {path}")
    if not path.is_file():
        raise DataError(f"not a file: {path}")
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise DataError(f"cannot read {path}: {(error.strerror or str(error)).lower()}") from error
    return path


def read_bytes(path: str | Path, max_bytes: int | None = None) -> bytes:
    """A file's bytes, gunzipped when they start with the gzip magic; every failure a one-line DataError."""
    path = check_readable(path)
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
    path = check_readable(path)
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
