"""What a method's compressed form of a document costs a user, measured where the evaluation makes it.

Beside F1 a user weighs what each method costs per document (issue "The comparison at the new
budget", item 4). Per document prepared in an evaluation (a resumed run counts only what it prepares):

- compress_ms: wall time of `Method.prepare`, the device synchronised around it (the encoder pass
  included; for a full-context row, looking up the context's embeddings).
- positions: prefix positions the decoder reads before the prompt.
- stored_values: numbers the prefix holds (`Prefix.stored_values`): slots x hidden size for a soft
  prefix, keys and values of every layer for a key/value prefix; a full-context row's prefix is the
  context's own token embeddings.
- cache_values: numbers the decoder's key/value cache holds once it has read the prefix
  (`memory.estimate`: a sliding-window layer keeps at most its window), what a server keeps per
  document to answer later questions without reading the prefix again.

Values, not bytes, so that one results file reads the same at any precision: the tables convert at
2 bytes (bfloat16; `report.kib`). `report.combined_costs` averages them over datasets.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch

from ..memory import estimate

if TYPE_CHECKING:
    from ..backbone import Backbone
    from ..prefix import Prefix



def cache_values(backbone: "Backbone", positions: int) -> int:
    """Numbers in the decoder's key/value cache after reading `positions` prefix positions."""
    element = torch.finfo(backbone.dtype).bits // 8
    return estimate(backbone, positions, rows=1, prompt=0, chunk=None).cache_bytes // element


@dataclass
class CostMeter:
    """Running totals over the documents one dataset's evaluation prepares."""

    backbone: "Backbone"
    documents: int = 0
    seconds: float = 0.0
    positions: int = 0
    stored: int = 0
    cache: int = 0

    @contextmanager
    def timing(self) -> Iterator[None]:
        """Time the work inside, once the device has finished what was queued before it."""
        self._synchronize()
        start = time.perf_counter()
        yield
        self._synchronize()
        self.seconds += time.perf_counter() - start

    def add(self, rows: Sequence["Prefix"]) -> None:
        for row in rows:
            self.documents += 1
            self.positions += len(row)
            self.stored += row.stored_values()
            self.cache += cache_values(self.backbone, len(row))

    def summary(self) -> dict[str, Any] | None:
        """Means per document (None when nothing was prepared: every answer came from a progress file)."""
        if not self.documents:
            return None
        n = self.documents
        return {"documents": n, "compress_ms": round(1000 * self.seconds / n, 3), "positions": round(self.positions / n, 1),
                "stored_values": round(self.stored / n), "cache_values": round(self.cache / n)}

    def _synchronize(self) -> None:
        if self.backbone.device.type == "cuda":
            torch.cuda.synchronize(self.backbone.device)
