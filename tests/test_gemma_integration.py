"""Integration tests with the real bundled Gemma-3-270M on the CPU."""

import warnings
from pathlib import Path

import pytest
import torch

from comprexit.decoding import EagerDecoder, get_answer_rule
from comprexit.document import CompressedDocument
from comprexit.prefix import SoftPrefix
from comprexit.prompting import DEFAULT_TEMPLATE, PromptTemplate
from comprexit.reader import Reader, UntrainedCompressorWarning
from comprexit.weights import shipped_compressor_dir

pytestmark = pytest.mark.slow

DOCUMENT = (
    "Marie Curie was born in Warsaw in 1867. She moved to Paris in 1891 to study physics at the "
    "Sorbonne, where she met Pierre Curie. In 1903 she shared the Nobel Prize in Physics."
)


# A made-up station, so the answer can only come from the document (the model cannot know it).
FICTION = (
    "The Harrowby Point lighthouse stands on a granite headland at the northern end of Keel Bay. "
    "The light was fully automated in 1989, and the last keeper, Thomas Reed, left the headland that autumn. "
    "Since 2004 the keepers' cottages have housed a small museum."
)


@pytest.fixture(scope="module")
def reader(gemma):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedCompressorWarning)  # the shipped weights must be found
        return Reader.load(backbone=gemma)


def test_shipped_compressor_is_the_trained_default(reader):
    folder = shipped_compressor_dir(reader.backbone.identity)
    assert folder is not None and (folder / "comprexit.safetensors").is_file()
    assert reader.compressor.config.embedding_skip  # the recipe the results describe
    weights = reader.compressor.projector.net[2].weight
    assert weights.abs().sum() > 0  # trained: the skip's zero-initialised output layer has moved


def test_shipped_compressor_answers_from_the_compressed_document(reader):
    question = "Who was the last keeper?"
    assert reader.ask(reader.compress(FICTION), [question]) == ["Thomas Reed"]
    prompt = reader.backbone.tokenize(PromptTemplate(DEFAULT_TEMPLATE).render(question))
    nothing = SoftPrefix.of_tokens(reader.backbone, [])
    without = get_answer_rule("paper")(EagerDecoder(reader.backbone).answers([nothing], [prompt])[0])
    assert "reed" not in without.lower()  # the frozen model alone does not know it


LIGHTHOUSE = Path(__file__).resolve().parents[1] / "examples" / "lighthouse.txt"


def test_shipped_compressor_keeps_a_name_a_place_and_a_count(reader):
    """The shipped weights carry exact content: on the README's made-up document (so the frozen
    model cannot know the answers) it gives the designer's name, where the lens was made and a
    count exactly. Of eight such questions it answers four exactly; years still blur (1994 for 1989:
    results/training/2026-12-07-eighth/documents/answers.txt)."""
    document = reader.compress(LIGHTHOUSE.read_text())
    questions = ["Who designed the lighthouse?", "Where was the lens made?",
                 "How many assistants did the keeper have?"]
    assert reader.ask(document, questions) == ["Agnes Mallory", "Paris", "two"]


def test_bundled_backbone_is_a_frozen_dense_model(gemma):
    assert gemma.identity.name == "gemma-3-270m" and gemma.num_hidden_states == 19
    assert getattr(gemma.model, "hf_quantizer", None) is None
    assert all(type(m).__name__ != "GgufLinear" for m in gemma.model.modules())
    assert not any(p.requires_grad for p in gemma.model.parameters())
    assert gemma.tokenize("Hello world") == [9259, 1902]  # a mis-converted GGUF tokenizer splits differently


def test_hidden_states_show_gemmas_residual_growth(gemma):
    states = gemma.encode([gemma.tokenize(DOCUMENT)]).hidden_states[0]
    norms = states.norm(dim=-1).mean(0)
    assert 15 < norms[0] < 40  # sqrt(640)-scaled embeddings
    assert norms[-2] > 100 * norms[0]  # the raw residual stream grows by orders of magnitude
    assert norms[-1] < norms[-2] / 10  # the last state comes after the final norm


def test_full_context_answers_are_right(reader):
    answers = reader.ask_full_context(DOCUMENT, ["Where was Marie Curie born?", "In which year did she move to Paris?"])
    assert "Warsaw" in answers[0]
    assert "1891" in answers[1]


def test_compress_save_load_answer_end_to_end(reader, tmp_path):
    document = reader.compress(DOCUMENT)
    assert document.num_slots == -(-document.context_tokens // 4)
    loaded = CompressedDocument.load(document.save(tmp_path / "doc.ctx"))
    assert torch.equal(loaded.slots, document.slots)
    assert reader.ask(loaded, ["Where was Marie Curie born?"]) == reader.ask(document, ["Where was Marie Curie born?"])
