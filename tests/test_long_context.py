"""Long documents: gold paragraphs hidden among distractors (benchmark and training), long NTP spans."""

import gzip
import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from comprexit.cli import main
from comprexit.data.distractors import (
    PASS_LIMIT,
    SEPARATOR,
    DistractorBuilder,
    Unit,
    answer_keys,
    token_counter,
    units_of,
    with_distractors,
)
from comprexit.data.long_benchmark import build_benchmark, output_name, select_units
from comprexit.data.long_context import CONTINUATION_LEAD, corpus_articles, held_out_articles, span_splits
from comprexit.data.qa import QAExample, load_qa
from comprexit.data.token_cache import file_digest, holdout_key, tokenized_corpus
from comprexit.errors import InputError
from comprexit.training.data import LongSpans, long_spans

from tiny import char_tokenizer

WORDS = "amber basil cedar dune ember fjord grove heath inlet juniper kelp loam".split()


def paragraph(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def toy_questions(count: int = 30, seed: int = 0, titled: bool = False) -> list[QAExample]:
    """`count` contexts (two questions each, the answers a unique code) plus their text, some titled."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        title = f"Topic {i % 5}\n" if titled else ""
        context = f"{title}{paragraph(rng, 6 + i % 7)} The code of item {i} is Z{i:03d}Q. {paragraph(rng, 5)}"
        out.append(QAExample(f"q{i}a", context, f"Code of item {i}?", (f"Z{i:03d}Q",), "toy"))
        out.append(QAExample(f"q{i}b", context, f"Which item has Z{i:03d}Q?", (f"item {i}",), "toy"))
    return out


def write_mrqa(path, examples, split="eval"):
    rows = [{"header": {"dataset": "toy", "split": split}}]
    for unit in units_of(examples):
        rows.append({"context": unit.context, "qas": [{"qid": q.qid, "question": q.question, "answers": list(q.answers)}
                                                      for q in unit.questions]})
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def count():
    return token_counter(char_tokenizer())


# ------------------------------------------------------------------ hiding a gold paragraph
def test_the_gold_paragraph_is_where_the_position_says(count):
    examples = toy_questions()
    builder = DistractorBuilder([qa.context for qa in examples], count, seed=3)
    units = units_of(examples)
    docs = {p: builder.documents(units, 600, p) for p in ("start", "middle", "end")}
    for k, unit in enumerate(units):
        start, middle, end = docs["start"][k], docs["middle"][k], docs["end"][k]
        assert start.chosen == middle.chosen == end.chosen and len(start.chosen) >= 3  # only the gold moves
        assert start.gold_paragraph == 0 and end.gold_paragraph == len(end.order) - 1
        costs = [int(builder.pool.tokens[i]) + builder.pool.separator_tokens for i in middle.chosen]
        before = sum(costs[: middle.gold_paragraph])
        assert abs(before - sum(costs) / 2) <= max(costs) / 2
        for doc in (start, middle, end):
            text = doc.text(builder.pool)
            assert doc.tokens == count([text])[0] <= 600  # measured on the whole text
            at = doc.gold_char_start(builder.pool)
            assert text[at : at + len(unit.context.strip())] == unit.context.strip()
            assert doc.gold_token_start == count([text[:at]])[0]
            assert text.split(SEPARATOR)[doc.gold_paragraph] == unit.context.strip()


def test_no_distractor_holds_a_gold_answer_but_words_that_merely_contain_it_do_not_count(count):
    contexts = ["The B cell makes antibodies.", "A b-side record.", "Bob baked bread.", "Cells of type B die.",
                "The U.S. Army marched.", "the us army rested", "Nothing here at all."]
    builder = DistractorBuilder(contexts, count, seed=0)
    unit = Unit(contexts[0], (QAExample("q", contexts[0], "Which cell?", ("B", "U.S."), "toy"),))
    chosen = [builder.pool.texts[i] for i in builder.choose(unit, 10_000)]
    assert sorted(chosen) == sorted(["Bob baked bread.", "Nothing here at all."])
    pattern, normal = answer_keys(["the U.S."])[0]
    assert normal == "us" and pattern.search("in the u.s. today") and not pattern.search("bus")


def test_article_mates_come_first_where_contexts_carry_a_title_line(count):
    titled = toy_questions(titled=True)
    builder = DistractorBuilder([qa.context for qa in titled], count)
    assert builder.pool.grouping.startswith("title line")
    unit = units_of(titled)[7]  # "Topic 2", whose mates are items 2, 12, 17, 22, 27
    doc = builder.documents([unit], 1000, "end")[0]
    titles = [builder.pool.articles[i] for i in doc.chosen]
    assert titles[:5] == ["Topic 2"] * 5 and "Topic 2" not in titles[5:] and doc.same_article == 5
    untitled = DistractorBuilder([qa.context for qa in toy_questions()], count)
    assert untitled.pool.grouping.startswith("none") and not untitled.pool.members


def test_documents_are_seeded_and_share_their_candidates_across_lengths(count):
    examples = toy_questions()
    units = units_of(examples)
    one = DistractorBuilder([qa.context for qa in examples], count, seed=1).documents(units, 500, "middle")
    again = DistractorBuilder([qa.context for qa in examples], count, seed=1).documents(units, 500, "middle")
    other = DistractorBuilder([qa.context for qa in examples], count, seed=2).documents(units, 500, "middle")
    longer = DistractorBuilder([qa.context for qa in examples], count, seed=1).documents(units, 1000, "middle")
    assert one == again and one != other
    for short, long in zip(one, longer):
        assert short.chosen[0] == long.chosen[0] and long.tokens > short.tokens


def test_a_tokenizer_that_merges_across_paragraphs_is_measured_and_the_document_trimmed():
    def lying_count(texts):  # a joined document costs more than its paragraphs and separators counted alone
        return [len(t) + 3 * t.count(SEPARATOR) ** 2 for t in texts]

    examples = toy_questions()
    builder = DistractorBuilder([qa.context for qa in examples], lying_count)
    docs = builder.documents(units_of(examples), 400, "middle")
    assert all(d.tokens <= 400 and d.tokens == lying_count([d.text(builder.pool)])[0] for d in docs)
    summed = builder.documents(units_of(examples), 400, "middle", measure=False)  # the fast path trusts the sums
    assert all(d.tokens <= 400 for d in summed) and max(lying_count([d.text(builder.pool)])[0] for d in summed) > 400


def test_filling_stops_after_candidates_in_a_row_that_do_not_fit(count):
    contexts = ["gold text."] + ["x" * 900 + f" {i}" for i in range(PASS_LIMIT)] + ["short one."]
    builder = DistractorBuilder(contexts, count)
    unit = Unit("gold text.", (QAExample("q", "gold text.", "?", ("nothing",), "toy"),))
    chosen = builder.choose(unit, 100)
    assert chosen in ([], [len(contexts) - 1])  # reached only when drawn before PASS_LIMIT misses in a row
    assert builder.choose(Unit("x" * 900 + " 0", unit.questions), 100) is None  # the gold alone is too long


def test_training_questions_get_documents_from_their_own_file_at_random_positions(count):
    examples = toy_questions(40)
    long = with_distractors(examples, count, 700, position="random", seed=5)
    contexts = {qa.context.strip() for qa in examples}
    assert [qa.qid for qa in long] == [qa.qid for qa in examples]
    places = set()
    for original, qa in zip(examples, long):
        paragraphs = qa.context.split(SEPARATOR)
        assert count([qa.context])[0] <= 700 and set(paragraphs) <= contexts
        places.add(paragraphs.index(original.context.strip()) / (len(paragraphs) - 1))
        pattern = answer_keys(original.answers)[0][0]
        assert [bool(pattern.search(p.lower())) for p in paragraphs].count(True) == 1
    assert len(places) >= 5 and min(places) < 0.2 and max(places) > 0.8
    assert with_distractors(examples, count, 700, seed=6) != long
    with pytest.raises(InputError, match="unknown position 'centre'"):
        with_distractors(examples, count, 700, position="centre")


# ------------------------------------------------------------------ the benchmark files
def test_benchmark_files_are_read_by_eval_and_rebuilt_byte_for_byte(tmp_path, count):
    source = write_mrqa(tmp_path / "toy_eval.jsonl.gz", toy_questions(30))
    other = write_mrqa(tmp_path / "other_eval.jsonl.gz", toy_questions(20, seed=9, titled=True))
    args = dict(count_tokens=count, tokenizer_name="chars", tokenizer_fingerprint="f00", limit=11, seed=4, per_context=1)
    written = build_benchmark([source, other], [400, 800], ["start", "end"], tmp_path / "a", **args)
    assert [p.name for p in written[:4]] == [output_name(source, n, p) for n in (400, 800) for p in ("start", "end")]
    again = build_benchmark([source, other], [400, 800], ["start", "end"], tmp_path / "b", **args)
    assert [p.read_bytes() for p in written] == [p.read_bytes() for p in again]
    source_contexts = {qa.context.strip() for qa in load_qa(str(source))}
    qids = None
    for path in written[:4]:
        header = json.loads(gzip.decompress(path.read_bytes()).split(b"\n")[0])["header"]
        recipe = header["long_document"]
        assert header["split"] == "eval" and recipe["source"] == "toy_eval.jsonl.gz" and len(recipe["source_sha256"]) == 64
        assert recipe["questions"] == recipe["documents"] == 11 and recipe["seed"] == 4 and recipe["tokenizer"] == "chars"
        assert recipe["length"] in (400, 800) and recipe["position"] in ("start", "end")
        dataset = load_qa(str(path))  # what `comprexit eval` reads
        assert qids is None or [qa.qid for qa in dataset] == qids
        qids = [qa.qid for qa in dataset]
        assert len(qids) == 11 and max(count([qa.context for qa in dataset])) <= recipe["length"]
        assert all(set(qa.context.split(SEPARATOR)) <= source_contexts for qa in dataset)  # never another file's text
    with pytest.raises(InputError, match="same name"):
        build_benchmark([source, source], [400], ["start"], tmp_path / "c", **args)


def test_the_question_draw_takes_whole_contexts_until_the_limit(count):
    units = units_of(toy_questions(30))
    picked = select_units(units, 7, seed=0)
    assert sum(len(u.questions) for u in picked) == 7 and len(picked) == 4
    assert picked != units[:4] and select_units(units, 7, seed=0) == picked
    assert select_units(units, None, seed=0) == units
    triples = [Unit(u.context, u.questions + (replace(u.questions[0], qid=u.questions[0].qid + "c"),)) for u in units]
    capped = select_units(triples, 9, seed=0, per_context=2)
    assert [len(u.questions) for u in capped] == [2, 2, 2, 2, 1]
    assert all(set(u.questions) <= set(t.questions) for u in capped for t in triples if t.context == u.context)
    assert len({q.qid[-1] for u in capped for q in u.questions}) == 3  # a seeded choice, not always the first two


def test_data_command_writes_the_files_with_a_saved_tokenizer(tmp_path, capsys):
    source = write_mrqa(tmp_path / "toy_eval.jsonl.gz", toy_questions(12))
    folder = tmp_path / "tokenizer"
    char_tokenizer().save_pretrained(folder)
    code = main(["data", "distractors", "--data", str(source), "--lengths", "300", "--positions", "middle",
                 "--limit", "5", "--backbone", str(folder), "-o", str(tmp_path / "out"), "--no-progress"])
    assert code == 0 and (tmp_path / "out" / "toy_eval_300_middle.jsonl.gz").is_file()
    assert capsys.readouterr().out.strip().endswith("toy_eval_300_middle.jsonl.gz")


@pytest.mark.parametrize("options, message", [
    (["--lengths", "1k"], "--lengths wants comma-separated token counts"),
    (["--lengths", "0,512"], "lengths must be positive"),
    (["--positions", "start,centre"], "unknown position(s) centre"),
    (["--limit", "-1"], "--limit must be >= 0"),
    (["--per-context", "-2"], "--per-context must be >= 0"),
    (["--data", "missing.jsonl.gz"], "no such file: missing.jsonl.gz"),
])
def test_data_command_refuses_bad_input_in_one_line_before_any_work(tmp_path, capsys, options, message):
    source = write_mrqa(tmp_path / "toy_eval.jsonl.gz", toy_questions(3))
    argv = ["data", "distractors", "--data", str(source), "-o", str(tmp_path / "out"), "--backbone", "/nonexistent"]
    assert main(argv + options) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not (tmp_path / "out").exists()


def test_data_command_refuses_a_file_as_its_folder_and_an_unknown_backbone_offline_in_one_line(tmp_path, capsys,
                                                                                              monkeypatch):
    from huggingface_hub import constants

    source = write_mrqa(tmp_path / "toy_eval.jsonl.gz", toy_questions(3))
    (tmp_path / "out").write_text("a file")
    argv = ["data", "distractors", "--data", str(source), "--backbone", "nobody/no-such-model", "-q"]
    assert main(argv + ["-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a file; -o names the folder" in err and "\n" not in err
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(argv + ["-o", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err.strip()
    assert "'nobody/no-such-model' is not in the Hugging Face cache" in err and "\n" not in err


def test_the_data_command_needs_a_builder(capsys):
    assert main(["data"]) == 2
    err = capsys.readouterr().err.strip()
    assert "required: {distractors}" in err and "\n" not in err


def test_the_real_eval_files_give_documents_without_leaks(shared_data, tmp_path, count):
    squad, nq = shared_data / "squad_eval.jsonl.gz", shared_data / "nq_eval.jsonl.gz"
    written = build_benchmark([squad, nq], [4096], ["middle"], tmp_path, count, "chars", "-", limit=12, seed=0)
    train = {qa.context.strip() for name in ("squad_train", "nq_train") for qa in load_qa(str(shared_data / f"{name}.jsonl.gz"))}
    for path, source in zip(written, (squad, nq)):
        header = json.loads(gzip.decompress(path.read_bytes()).split(b"\n")[0])["header"]["long_document"]
        assert header["grouping"].startswith("none" if source == squad else "title line")
        contexts = {qa.context.strip() for qa in load_qa(str(source))}
        dataset = load_qa(str(path))
        assert len(dataset) == 12
        for qa in dataset:
            paragraphs = qa.context.split(SEPARATOR)
            assert set(paragraphs) <= contexts and not set(paragraphs) & train and count([qa.context])[0] <= 4096
            holders = [p for p in paragraphs if any(pattern.search(p.lower()) for pattern, _ in answer_keys(qa.answers))]
            assert len(holders) <= 1  # the gold paragraph only (an NQ gold passage may word its answer otherwise)


# ------------------------------------------------------------------ long NTP spans
def test_span_splits_keep_the_continuation_inside_one_chunk():
    lengths, separator, context, continuation = [300, 250, 40, 400, 260], 2, 256, 64
    splits = span_splits(lengths, separator, context, continuation)
    starts = np.concatenate([[0], np.cumsum(np.asarray(lengths) + separator)[:-1]])
    assert len(splits) >= 2
    for previous, split in zip([None] + splits, splits):
        k = int(np.searchsorted(starts, split, side="right")) - 1
        assert starts[k] + CONTINUATION_LEAD <= split and split + continuation <= starts[k] + lengths[k]
        assert split >= context and (previous is None or split - context >= previous + continuation)
    assert span_splits([100, 100], 2, 256, 64) == []  # an article shorter than a span gives none


def write_chunked_corpus(path, articles, rng):
    """A corpus like ntp_wikipedia: each article's chunks open with its title and are shuffled through the file."""
    lines = []
    for title, chunks in articles.items():
        lines += [{"text": f"{title}\n{chunk}", "source": f"dump:wiki_{len(title)}#{title}"} for chunk in chunks]
    lines.append({"text": "A lone page without any article mark.", "source": "debian-doc"})
    rng.shuffle(lines)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(line) + "\n" for line in lines))


def test_long_spans_join_an_articles_shuffled_chunks(tmp_path):
    rng = random.Random(0)
    articles = {"Dresden": [f"<D{k}> " + paragraph(rng, 120) for k in range(6)],
                "Oslo": [f"<O{k}> " + paragraph(rng, 120) for k in range(3)], "Tiny": ["too short."]}
    path = tmp_path / "wiki.jsonl.gz"
    write_chunked_corpus(path, articles, rng)
    tokenizer = char_tokenizer()
    corpus = tokenized_corpus(path, tokenizer, cache_dir=tmp_path / "cache", show_progress=False)
    found = corpus_articles(path, corpus, tokenizer)
    by_key = {a.key.rpartition("#")[2]: a for a in found}
    assert sorted(k for k in by_key if not k.startswith("document-")) == ["Dresden", "Oslo", "Tiny"]
    assert sum(k.startswith("document-") for k in by_key) == 1  # the page without "#" in its source stands alone
    dresden = by_key["Dresden"]
    assert len(dresden.documents) == 6 and dresden.skip[0] == 0 and (dresden.skip[1:] == len("Dresden\n")).all()
    separator = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    spans = LongSpans("wiki", corpus, found, context=1024, continuation=64, separator_ids=separator)
    assert len(spans) >= 2 and set(spans.lengths.tolist()) == {1024 + 64}
    chunk_texts = [c for chunks in articles.values() for c in chunks]
    for i in range(len(spans)):
        example = spans[i]
        context, target = tokenizer.decode(list(example.context)), tokenizer.decode(list(example.targets))
        assert len(example.context) == 1024 == 2 * 512 and len(example.targets) == 64  # two 512-token chunks to compress
        holder = next(c for c in chunk_texts if target in c)  # the continuation is text of one chunk ...
        lead = holder[: holder.index(target)][-CONTINUATION_LEAD:]
        assert len(lead) == CONTINUATION_LEAD and context.endswith(lead)  # ... right after its own text
        assert context.count("Dresden\n") + context.count("Oslo\n") <= 1  # a title line at most once
    held = held_out_articles(found, 500)
    assert held.tolist() == [holdout_key(a.key) % 1000 < 500 for a in found]  # every chunk of an article on one side


def test_long_spans_of_a_file_are_split_by_article(tmp_path, monkeypatch):
    rng = random.Random(1)
    articles = {f"Page {k}": [paragraph(rng, 50) for _ in range(4)] for k in range(12)}
    path = tmp_path / "wiki.jsonl.gz"
    write_chunked_corpus(path, articles, rng)
    monkeypatch.setenv("COMPREXIT_CACHE", str(tmp_path / "cache"))
    train, validation = long_spans(char_tokenizer(), str(path), context_tokens=512, continuation_tokens=32,
                                   validation_permille=300, show_progress=False)
    train_keys = {train.articles[int(o)].key for o in train.owner}
    val_keys = {validation.articles[int(o)].key for o in validation.owner}
    assert train_keys and val_keys and not train_keys & val_keys
    assert train.name == "wiki.jsonl.gz@512" and all(len(train[i].context) == 512 for i in range(len(train)))


def test_real_wikipedia_chunks_are_grouped_by_article_and_lose_their_repeated_titles(shared_data, tmp_path):
    wanted, chosen = 3, {}
    with gzip.open(shared_data / "ntp_wikipedia.jsonl.gz", "rt", encoding="utf-8") as handle:
        lines = [json.loads(line) for _, line in zip(range(4000), handle)]
    counts = {}
    for line in lines:
        counts[line["source"]] = counts.get(line["source"], 0) + 1
    keep = [s for s, n in counts.items() if n >= 3][:wanted]
    assert len(keep) == wanted, "the first 4000 chunks should hold three articles of >= 3 chunks"
    subset = tmp_path / "wiki.jsonl"
    subset.write_text("".join(json.dumps(line) + "\n" for line in lines if line["source"] in keep))
    tokenizer = char_tokenizer()
    corpus = tokenized_corpus(subset, tokenizer, cache_dir=tmp_path / "cache", show_progress=False)
    found = corpus_articles(subset, corpus, tokenizer)
    assert sorted(a.key for a in found) == sorted(keep)
    for article in found:
        title = article.key.rpartition("#")[2]
        assert article.skip[0] == 0 and (article.skip[1:] == len(title) + 1).all()
        chosen[title] = len(article.documents)
    assert all(n >= 3 for n in chosen.values())


# ------------------------------------------------------------------ the committed benchmark
BENCHMARK = Path(__file__).resolve().parents[1] / "results" / "long_documents" / "benchmark"


def test_the_committed_benchmark_files_keep_their_promises(shared_data):
    files = sorted(BENCHMARK.glob("*.jsonl.gz"))
    assert len(files) == 2 * 4 * 3, f"expected 24 files in {BENCHMARK}"
    questions = {}
    for path in files:
        rows = [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()]
        recipe = rows[0]["header"]["long_document"]
        source = shared_data / recipe["source"]
        assert path.name == output_name(source, recipe["length"], recipe["position"]) and rows[0]["header"]["split"] == "eval"
        assert recipe["source_sha256"] == file_digest(source), f"{path.name}: its source file has changed"
        contexts = {qa.context.strip() for qa in load_qa(str(source))}
        questions.setdefault(recipe["source"], set()).add(tuple(q["qid"] for row in rows[1:] for q in row["qas"]))
        for row in rows[1:]:
            gold, paragraphs = row["gold"], row["context"].split(SEPARATOR)
            assert gold["tokens"] <= recipe["length"] and len(paragraphs) == gold["paragraphs"] and set(paragraphs) <= contexts
            expected = {"start": 0, "end": len(paragraphs) - 1}.get(recipe["position"], gold["paragraph"])
            assert gold["paragraph"] == expected and row["context"][gold["char_start"]:].startswith(paragraphs[expected])
            keys = answer_keys(answer for q in row["qas"] for answer in q["answers"])
            others = paragraphs[: gold["paragraph"]] + paragraphs[gold["paragraph"] + 1 :]
            assert not any(pattern.search(p.lower()) for p in others for pattern, _ in keys)
    assert all(len(draws) == 1 for draws in questions.values())  # every file of a source asks the same questions


@pytest.mark.slow
def test_the_committed_benchmark_is_rebuilt_byte_for_byte(shared_data, tmp_path):
    from transformers import AutoTokenizer

    from comprexit.bundled import ensure_dense_copy
    from comprexit.data.token_cache import tokenizer_fingerprint

    tokenizer = AutoTokenizer.from_pretrained(ensure_dense_copy())
    recipe = json.loads(gzip.decompress((BENCHMARK / "nq_eval_1024_end.jsonl.gz").read_bytes()).split(b"\n")[0])
    recipe = recipe["header"]["long_document"]
    sources = [shared_data / "squad_eval.jsonl.gz", shared_data / "nq_eval.jsonl.gz"]
    written = build_benchmark(sources, [1024, 8192], ["middle", "end"], tmp_path, token_counter(tokenizer),
                              "gemma-3-270m", tokenizer_fingerprint(tokenizer), limit=recipe["limit"],
                              per_context=recipe["per_context"], seed=recipe["seed"])
    for path in written:
        assert path.read_bytes() == (BENCHMARK / path.name).read_bytes(), f"{path.name} differs from the committed file"
