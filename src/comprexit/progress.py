"""Progress of long work, shown where the caller wants it: nowhere (the library's default) or on stderr.

A `Progress` is a factory `progress(total=, desc=, unit=)` that opens a bar with `update(n)` and
`close()` (tqdm's own signature, so `tqdm` itself is one). The library's long loops (compressing
a document chunk by chunk, prefilling a long context, answering batches of questions) open one
bar each through `bar(progress, ...)`; the command line passes `stderr_progress`, whose bars
appear only on a terminal, only after `DELAY` seconds (short work stays silent), never with
`--quiet`, and never on stdout, where the answers go.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Protocol

DELAY = 2.0  # seconds of work before a bar appears


class Bar(Protocol):
    def update(self, n: int = 1) -> object: ...

    def close(self) -> object: ...


Progress = Callable[..., Bar]  # progress(total=int, desc=str, unit=str) -> Bar


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def no_progress(total: int, desc: str, unit: str) -> Bar:
    """Shows nothing: the default of every library call."""
    return _NoBar()


@contextmanager
def bar(progress: Progress | None, total: int, desc: str, unit: str) -> Iterator[Bar]:
    """A bar of `progress` (none if None), closed when the work ends or fails."""
    opened = (progress or no_progress)(total=total, desc=desc, unit=unit)
    try:
        yield opened
    finally:
        opened.close()


def stderr_progress(quiet: bool = False) -> Progress:
    """tqdm bars on stderr, shown only when stderr is a terminal and `quiet` is off."""
    if quiet or not sys.stderr.isatty():
        return no_progress
    from tqdm.auto import tqdm

    def open_bar(total: int, desc: str, unit: str) -> Bar:
        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, delay=DELAY, leave=False, dynamic_ncols=True,
                    unit_scale=unit == "token")

    return open_bar
