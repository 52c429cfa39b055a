"""Whether reading a prefix and answering after it will fit in memory, said before the work starts.

Why: a reader that runs out of memory half-way dies with a traceback after minutes of work (the
issue that asked for this: `ask --full-context` under an 8 GB limit, 90 s, then a traceback).
What the work will add to what is already allocated is known in advance from the model's
shape: the key/value cache of the prefix (linear in its length since the prefill is chunked,
decoding/prefill.py; a sliding-window layer keeps only its window), one copy of it per question
answered at once (generate appends to a copy), and the largest transient of one forward pass
(the attention scores of a chunk against every cached position, and the MLP's activations).
The estimate leans high; it is compared with the memory the device has free now: on a GPU
what CUDA reports, on a CPU the least of the kernel's MemAvailable and the room left under the
process's cgroup limit (a container's limit, which MemAvailable does not see). Where neither
can be read, nothing is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .errors import InputError

if TYPE_CHECKING:
    from .backbone import Backbone

GIB = 2**30
TRANSIENT_COPIES = 3  # scores, their softmax, and the mask or the MLP's gate and up projections
CGROUP_V2 = Path("/sys/fs/cgroup")
CGROUP_V1 = Path("/sys/fs/cgroup/memory")


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a read of `positions` positions adds: its cache (`copies` of it) and one pass's transient."""

    positions: int
    cache_bytes: int
    copies: int
    transient_bytes: int

    @property
    def total(self) -> int:
        return self.cache_bytes * self.copies + self.transient_bytes


def estimate(backbone: "Backbone", positions: int, rows: int, prompt: int, chunk: int | None,
             cached: bool = True) -> MemoryEstimate:
    """What reading `positions` prefix positions and answering `rows` prompts of up to `prompt`
    positions (question and answer) after them adds to the memory in use: with `cached`, the prefix
    is read once, `chunk` positions per pass (None: one pass), and each prompt after a copy of its
    cache; without, every batch reads prefix and prompts in one pass of `rows` rows."""
    config = backbone.model.config.get_text_config(decoder=True)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    element = torch.finfo(backbone.dtype).bits // 8
    total = positions + prompt
    held = sum(min(total, window) if kind == "sliding_attention" and window else total for kind in types)
    cache = held * 2 * kv_heads * head_dim * element
    # the largest pass: (queries, keys) of the prefill's chunks, of the prompts after the cache, or of it all
    passes = [(min(chunk or positions, positions), positions), (rows * prompt, total)] if cached else [(rows * total, total)]
    scores = max(heads * queries * keys for queries, keys in passes) * max(element, 4)
    mlp = max(queries for queries, _ in passes) * getattr(config, "intermediate_size", 4 * config.hidden_size) * element
    copies = 1 + rows if cached else rows
    return MemoryEstimate(positions, cache, copies, TRANSIENT_COPIES * max(scores, mlp))


def available_bytes(device: torch.device) -> int | None:
    """Memory free for new allocations on `device` now; None where it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    found = [value for value in (_meminfo_available(), _cgroup_room()) if value is not None]
    return min(found) if found else None


def check_fits(found: MemoryEstimate, device: torch.device, what: str, advice: str) -> None:
    """Refuse, before any of it runs, work whose estimate exceeds the memory available."""
    free = available_bytes(device)
    if free is None or found.total <= free:
        return
    raise InputError(
        f"{what} needs about {found.total / GIB:.1f} GiB more memory than is in use "
        f"({found.cache_bytes / GIB:.2f} GiB of key/value cache x {found.copies}), but {free / GIB:.1f} GiB "
        f"are free on {device}: {advice}"
    )


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """Room left under this process's cgroup memory limit (v2 or v1), counting reclaimable file
    pages as free; None without a limit."""
    for limit_file, usage_file, inactive_key in (
        (CGROUP_V2 / "memory.max", CGROUP_V2 / "memory.current", "inactive_file"),
        (CGROUP_V1 / "memory.limit_in_bytes", CGROUP_V1 / "memory.usage_in_bytes", "total_inactive_file"),
    ):
        try:
            limit_text = limit_file.read_text().strip()
            if limit_text == "max" or int(limit_text) >= 2**60:
                return None
            usage = int(usage_file.read_text().strip())
            stat = dict(line.split() for line in (limit_file.parent / "memory.stat").read_text().splitlines())
            return max(0, int(limit_text) - usage + int(stat.get(inactive_key, 0)))
        except (OSError, ValueError):
            continue
    return None
