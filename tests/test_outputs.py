"""Output files: the umask's permissions for every file we write, no folders made, a short document repr."""

import os
import stat

import pytest
import torch

from comprexit import ComprExIT, ComprExITConfig
from comprexit.backbone import BackboneIdentity
from comprexit.document import CompressedDocument
from comprexit.errors import InputError
from comprexit.outputs import check_writable, current_umask, respect_umask

from tiny import tiny_backbone


def _document() -> CompressedDocument:
    identity = BackboneIdentity("gemma-3-270m", "gemma3_text", 8, 2, 100)
    return CompressedDocument(slots=torch.randn(63, 8), mask=torch.ones(63, dtype=torch.bool), backbone=identity,
                              context_tokens=252, ratio=4, compressor="shipped")


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_saved_files_respect_the_umask(tmp_path, umask):
    """safetensors creates 0600 files; ours get what any new file gets: 0644 under 022, 0640 under 027."""
    assert current_umask() == umask
    expected = 0o666 & ~umask
    assert _mode(_document().save(tmp_path / "doc.ctx")) == expected
    folder = ComprExIT.for_backbone(tiny_backbone("llama"), ComprExITConfig(window=16)).save_pretrained(tmp_path / "c")
    assert {_mode(path) for path in folder.iterdir()} == {expected}
    assert not list(tmp_path.rglob("*.tmp"))
    made = tmp_path / "made"
    made.mkdir(mode=0o700)
    respect_umask(made)
    assert _mode(made) == 0o777 & ~umask


def test_save_creates_no_folders_and_refuses_what_it_cannot_write(tmp_path):
    document = _document()
    with pytest.raises(InputError, match="does not exist"):
        document.save(tmp_path / "missing" / "dir" / "doc.ctx")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(InputError, match="is a folder"):
        document.save(tmp_path)
    with pytest.raises(InputError, match="is the input document"):
        check_writable(tmp_path / "doc.txt", tmp_path / "doc.txt")
    assert list(tmp_path.iterdir()) == []  # the write check leaves nothing behind


def test_a_document_prints_as_one_short_line():
    document = _document()
    assert repr(document) == "CompressedDocument(252 tokens -> 63 slots, 4x, backbone gemma-3-270m, compressor shipped)"
    assert str(document) == repr(document)
