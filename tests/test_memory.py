"""The memory check before a long read (memory.py): what it counts, where it reads what is free, what it refuses."""

import pytest
import torch

from comprexit import memory
from comprexit.errors import InputError

from tiny import tiny_backbone

GIB = 2**30


def test_the_cache_counts_each_layer_type_and_the_copies():
    """Tiny hybrid model: layers sliding (window 16), full, sliding; 2 key/value heads of 8, float32."""
    found = memory.estimate(tiny_backbone("gemma3-hybrid"), positions=100, rows=3, prompt=20, chunk=32)
    assert found.cache_bytes == (16 + 120 + 16) * 2 * 2 * 8 * 4
    assert found.copies == 4  # the prefix's cache and one per question answered at once
    assert found.total == found.cache_bytes * 4 + found.transient_bytes


def test_chunks_keep_the_transient_linear_in_the_length():
    backbone = tiny_backbone("llama")
    one_pass = [memory.estimate(backbone, n, 1, 20, chunk=None).transient_bytes for n in (8_000, 16_000)]
    chunked = [memory.estimate(backbone, n, 1, 20, chunk=512).transient_bytes for n in (8_000, 16_000)]
    assert one_pass[1] == pytest.approx(4 * one_pass[0], rel=0.01)  # the square of the length
    assert chunked[1] == pytest.approx(2 * chunked[0], rel=0.01)  # linear
    uncached = memory.estimate(backbone, 8_000, 4, 20, chunk=None, cached=False)
    assert uncached.copies == 4 and uncached.transient_bytes == pytest.approx(4 * one_pass[0], rel=0.02)


def test_work_that_does_not_fit_is_refused_with_what_it_needs(monkeypatch):
    found = memory.MemoryEstimate(positions=30_000, cache_bytes=GIB, copies=3, transient_bytes=GIB)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2 * GIB)
    with pytest.raises(InputError, match=r"reading it needs about 4\.0 GiB more memory than is in use \(1\.00 GiB of "
                                         r"key/value cache x 3\), but 2\.0 GiB are free on cpu: do less"):
        memory.check_fits(found, torch.device("cpu"), "reading it", "do less")
    monkeypatch.setattr(memory, "available_bytes", lambda device: None)  # unknown: nothing is refused
    memory.check_fits(found, torch.device("cpu"), "reading it", "do less")


def test_a_cgroup_limit_counts_reclaimable_file_pages_as_free(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "CGROUP_V2", tmp_path)
    monkeypatch.setattr(memory, "CGROUP_V1", tmp_path / "v1")
    (tmp_path / "memory.max").write_text(f"{8 * GIB}\n")
    (tmp_path / "memory.current").write_text(f"{6 * GIB}\n")
    (tmp_path / "memory.stat").write_text(f"anon {5 * GIB}\ninactive_file {GIB}\n")
    assert memory._cgroup_room() == 3 * GIB
    (tmp_path / "memory.max").write_text("max\n")
    assert memory._cgroup_room() is None
    assert memory.available_bytes(torch.device("meta")) is None
