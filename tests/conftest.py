from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny import KINDS, tiny_backbone  # noqa: E402

SHARED_DATA = Path(os.environ.get("COMPREXIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="module", params=KINDS)
def tiny(request):
    """A tiny random backbone of each architecture in the test matrix."""
    return tiny_backbone(request.param)


@pytest.fixture(scope="session")
def gemma():
    """The real bundled Gemma-3-270M on the CPU, loaded once per test session."""
    from comprexit import Backbone

    return Backbone.load(device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "squad_eval.jsonl.gz").is_file():
        pytest.skip(f"shared QA data not found at {SHARED_DATA} (set COMPREXIT_SHARED_DATA)")
    return SHARED_DATA
