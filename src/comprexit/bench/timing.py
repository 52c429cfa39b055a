"""Wall-clock timing that is honest on a GPU: warm-up, device synchronisation, median of repeats."""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(run: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of `run()` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        run()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextmanager
def peak_memory(device: torch.device, record: dict, key: str = "peak_memory_bytes"):
    """Record the peak GPU memory allocated inside the block (None on a CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    record[key] = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


class SectionTimer:
    """Accumulates synchronised wall time per named section (for breaking a forward pass down)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextmanager
    def section(self, name: str):
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    @contextmanager
    def module(self, module: torch.nn.Module, name: str):
        """Time every forward call of `module` inside the block, through hooks removed afterwards."""
        starts: list[float] = []

        def before(*_):
            synchronize(self.device)
            starts.append(time.perf_counter())

        def after(*_):
            synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - starts.pop()

        handles = [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
