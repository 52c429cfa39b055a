from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Tests write their caches (token ids, converted models of tiny backbones) into a temporary
# folder, never into the user's ~/.cache/comprexit. The bundled model's converted copy, only
# read, is linked in from the user's cache when it is there: a minute saved per session.
_USER_CACHE = Path(os.environ.get("COMPREXIT_CACHE", Path.home() / ".cache" / "comprexit"))
_TEST_CACHE = Path(tempfile.mkdtemp(prefix="comprexit-test-cache-"))
for _converted in _USER_CACHE.glob("gemma-3-270m-*"):
    if _converted.is_dir() and not _converted.name.startswith("."):
        (_TEST_CACHE / _converted.name).symlink_to(_converted.resolve(), target_is_directory=True)
os.environ["COMPREXIT_CACHE"] = str(_TEST_CACHE)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_TEST_CACHE, ignore_errors=True)

from tiny import KINDS, tiny_backbone  # noqa: E402

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
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


# ---------------------------------------------------------------- tiny data files
def write_corpus(path: Path, documents: int, words: int, seed: int) -> Path:
    """A gzipped JSON-lines corpus of `documents` texts of `words` random words each."""
    rng = random.Random(seed)
    with gzip.open(path, "wt") as handle:
        for _ in range(documents):
            handle.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(words))}) + "\n")
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl.gz", documents=80, words=40, seed=0)


@pytest.fixture(scope="session")
def qa_file(tmp_path_factory):
    rng = random.Random(1)
    path = tmp_path_factory.mktemp("qa") / "qa_train.jsonl"
    lines = [json.dumps({"header": {"dataset": "toy", "split": "train"}})]
    for i in range(60):
        name = rng.choice(WORDS)
        context = f"The code word of box {i} is {name}. " + " ".join(rng.choice(WORDS) for _ in range(10))
        lines.append(json.dumps({"context": context, "qas": [{"qid": f"q{i}", "question": f"Code word of box {i}?", "answers": [name]}]}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def qa_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("qa") / "toy_eval.jsonl"
    rows = [{"header": {"dataset": "Toy", "split": "dev"}}]
    for i in range(6):
        rows.append({"context": f"Box {i} holds a {'red' if i % 2 else 'blue'} ball. " * (i + 1),
                     "qas": [{"qid": f"q{i}a", "question": f"What does box {i} hold?", "answers": ["a ball", "ball"]},
                             {"qid": f"q{i}b", "question": "Which colour?", "answers": ["red" if i % 2 else "blue"]}]})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path
