"""`comprexit compare`: the paired bootstrap over contexts (evaluation/paired.py) and its command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny import cli

from comprexit.errors import InputError
from comprexit.evaluation.paired import bootstrap, compare_files, paired_sets


def results(predictions: dict[str, list[tuple[str, str | None, float, float]]], label: str = "x") -> dict:
    """A results file as `comprexit eval --predictions` writes it, from (qid, context, f1, em) per question;
    a context of None leaves the key out, as files written before eval stored it."""
    rows = {name: [{"qid": qid, "prediction": "p", "answers": ["p"], "f1": f1, "em": em,
                    **({"context": context} if context is not None else {})}
                   for qid, context, f1, em in questions]
            for name, questions in predictions.items()}
    datasets = {name: {"count": len(r), "em": 0.0, "f1": 0.0} for name, r in rows.items()}
    return {"method": {"method": label}, "label": label, "settings": {}, "datasets": datasets,
            "average": {"count": 0, "em": 0.0, "f1": 0.0}, "predictions": rows}


def write(path, data: dict):
    path.write_text(json.dumps(data))
    return path


def scores(seed: int, contexts: int, per_context: int, shift: float):
    """(qid, context, f1, em) of `contexts` x `per_context` questions; F1 noisy around 0.5 + shift."""
    rng = np.random.default_rng(seed)
    f1 = np.clip(rng.normal(0.5 + shift, 0.2, contexts * per_context), 0, 1)
    return [(f"q{i}", f"c{i // per_context}", float(f), float(f > 0.5)) for i, f in enumerate(f1)]


def test_a_clearly_better_has_its_interval_above_zero(tmp_path):
    a = write(tmp_path / "a.json", results({"squad": scores(0, 100, 3, 0.25), "nq": scores(1, 50, 1, 0.25)}, "a"))
    b = write(tmp_path / "b.json", results({"squad": scores(0, 100, 3, 0.0), "nq": scores(1, 50, 1, 0.0)}, "b"))
    comparison = compare_files(a, b, resamples=500)
    pooled = comparison.rows[-1]
    assert [row.name for row in comparison.rows] == ["squad", "nq", "pooled"]
    assert (pooled.questions, pooled.contexts) == (350, 150) and comparison.rows[0].contexts == 100
    assert pooled.f1.diff > 15 and pooled.f1.low > 0 and pooled.f1.p_a_better == 1.0
    assert pooled.f1.low < pooled.f1.diff < pooled.f1.high and pooled.em.diff > 0
    assert compare_files(b, a, resamples=500).rows[-1].f1.high < 0  # the other way round: below 0


def test_identical_files_differ_by_zero(capsys, tmp_path):
    a = write(tmp_path / "a.json", results({"squad": scores(0, 40, 3, 0.0)}))
    code, out, err = cli(capsys, "compare", a, a, "--resamples", 200, "-o", tmp_path / "same.json")
    assert code == 0, err
    written = json.loads((tmp_path / "same.json").read_text())
    assert written["pooled"]["f1"]["diff"] == 0 and written["pooled"]["f1"]["ci"] == [0, 0]
    assert written["pooled"]["f1"]["p_a_better"] == 0  # a tie counts for neither
    assert written["resamples"] == 200 and written["seed"] == 0 and written["datasets"]["squad"]["contexts"] == 40
    assert (tmp_path / "same.md").read_text() in out  # the table printed is the one written
    assert "cannot be told apart (the interval holds 0)" in out
    assert out.rstrip().splitlines()[-2:] == [str(tmp_path / "same.json"), str(tmp_path / "same.md")]


def test_questions_of_one_context_widen_the_interval():
    """Five copies of each question under one context carry one question's information, not five."""
    base = scores(3, 60, 1, 0.0)
    other = scores(4, 60, 1, 0.0)

    def width(shared: bool) -> float:
        def copies(rows):
            return [(f"{qid}-{k}", context if shared else f"{context}-{k}", f1, em)
                    for qid, context, f1, em in rows for k in range(5)]

        sets = paired_sets(results({"d": copies(base)}), results({"d": copies(other)}))
        row = bootstrap(sets, resamples=1000)[0]
        assert row.contexts == (60 if shared else 300)
        return row.f1.high - row.f1.low

    assert width(shared=True) > 1.8 * width(shared=False)  # about sqrt(5) = 2.2 times


def test_pooled_weighs_every_question_the_same():
    big = [(f"q{i}", f"c{i}", 0.5, 0.0) for i in range(990)]
    small = [(f"q{i}", f"c{i}", 1.0, 1.0) for i in range(10)]
    a = results({"big": big, "small": small})
    b = results({"big": big, "small": [(q, c, 0.0, 0.0) for q, c, _, _ in small]})
    rows = bootstrap(paired_sets(a, b), resamples=200)
    assert rows[1].f1.diff == 100 and rows[-1].f1.diff == pytest.approx(1.0)  # not 50, the mean of 0 and 100


def test_the_same_seed_draws_the_same_resamples(tmp_path):
    a = write(tmp_path / "a.json", results({"d": scores(0, 30, 2, 0.05)}))
    b = write(tmp_path / "b.json", results({"d": scores(0, 30, 2, 0.0)}))
    assert compare_files(a, b, 300, seed=7) == compare_files(a, b, 300, seed=7)
    assert compare_files(a, b, 300, seed=7).rows[-1].f1 != compare_files(a, b, 300, seed=8).rows[-1].f1


def test_files_without_contexts_or_em_resample_each_question(capsys, tmp_path):
    old = results({"d": [(f"q{i}", None, 1.0, 0.0) for i in range(20)]})
    for row in old["predictions"]["d"]:
        del row["em"]  # written before eval stored EM: scored again from the prediction
    a = write(tmp_path / "old.json", old)
    b = write(tmp_path / "b.json", results({"d": [(f"q{i}", None, 0.0, 0.0) for i in range(20)]}))
    row = compare_files(a, b, 200).rows[0]
    assert not row.by_context and row.contexts == 20 and row.em.a == 100  # "p" against "p"
    code, out, _ = cli(capsys, "compare", a, b, "--resamples", 100)
    assert code == 0 and "Contexts not recorded for d" in out and "re-run `comprexit eval --predictions`" in out


def one_line_error(code: int, err: str, pattern: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert pattern in lines[0], lines[0]


def test_other_questions_are_refused(capsys, tmp_path):
    same = scores(0, 5, 2, 0.0)
    a = write(tmp_path / "a.json", results({"d": same}))
    cases = {
        "qid.json": results({"d": [("other", *same[0][1:]), *same[1:]]}),
        "count.json": results({"d": same[:9]}),
        "datasets.json": results({"e": same}),
        "context.json": results({"d": [(q, c + "x", f1, em) for q, c, f1, em in same]}),
    }
    expected = {
        "qid.json": "d question 0 is 'q0' in",
        "count.json": "holds 10 questions and",
        "datasets.json": "holds the datasets d and",
        "context.json": "asks about another context",
    }
    for name, data in cases.items():
        code, _, err = cli(capsys, "compare", a, write(tmp_path / name, data))
        one_line_error(code, err, expected[name])
    with pytest.raises(InputError, match="do not hold the same questions"):
        paired_sets(results({"d": same}), cases["qid.json"])


def test_missing_predictions_are_refused(capsys, tmp_path):
    a = write(tmp_path / "a.json", results({"d": scores(0, 5, 2, 0.0)}))
    plain = results({"d": scores(0, 5, 2, 0.0)})
    del plain["predictions"]
    code, _, err = cli(capsys, "compare", a, write(tmp_path / "plain.json", plain))
    one_line_error(code, err, "plain.json holds no predictions: re-run `comprexit eval` with --predictions")
    broken = results({"d": scores(0, 5, 2, 0.0)})
    broken["predictions"]["d"][3] = {"qid": "q3"}
    code, _, err = cli(capsys, "compare", a, write(tmp_path / "broken.json", broken))
    one_line_error(code, err, "d question 3 is not a prediction row of `comprexit eval`")


@pytest.mark.parametrize(("argv", "pattern"), [
    (["missing.json", "bad.json"], "results file not found: missing.json"),
    (["bad.json", "bad.json", "--resamples", "99"], "--resamples must be in 100..1000000, got 99"),
    (["bad.json", "bad.json", "--seed", "-1"], "--seed must be >= 0, got -1"),
    (["bad.json", "bad.json", "-o", "nowhere/c.json"], "folder nowhere does not exist (compare creates no folders)"),
    (["bad.json", "bad.json", "-o", "c.md"], "--output names the comparison JSON"),
    (["bad.json", "bad.json", "-o", "bad.json"], "bad.json would overwrite a results file compared"),
    (["bad.json", "bad.json", "--resamples", "many"], "argument --resamples: invalid int value: 'many'"),
    (["bad.json"], "the following arguments are required: B.json"),
])
def test_arguments_are_checked_before_any_file_is_read(argv, pattern, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text("not JSON")  # read, it would be refused for that
    code, _, err = cli(capsys, "compare", *argv)
    one_line_error(code, err, pattern)
    assert not list(tmp_path.glob("c.*"))


def test_bad_results_files_are_one_line(capsys, tmp_path):
    (tmp_path / "bad.json").write_text("not JSON")
    code, _, err = cli(capsys, "compare", tmp_path / "bad.json", tmp_path / "bad.json")
    one_line_error(code, err, "bad.json is not valid JSON")
    code, _, err = cli(capsys, "compare", tmp_path, tmp_path / "bad.json")
    one_line_error(code, err, "is a folder; give a results file")


@pytest.mark.slow
def test_two_real_evaluations_compared(capsys, tmp_path, shared_data):
    """The bundled Gemma-3-270M, the shipped compressor against the full context, on the held-out questions of two
    train files: the rows name their contexts, and compare pairs them."""
    common = ["--data", shared_data / "squad_train.jsonl.gz", shared_data / "nq_train.jsonl.gz", "--held-out", 30,
              "--limit", 2, "--batch-size", 4, "--max-new-tokens", 4, "--device", "cpu", "--quiet", "--predictions"]
    for method in ("comprexit", "zero-shot"):
        code, _, err = cli(capsys, "eval", "--method", method, *common, "-o", tmp_path / f"{method}.json")
        assert code == 0, err
    written = json.loads((tmp_path / "comprexit.json").read_text())
    row = written["predictions"]["squad_train_held_out"][0]
    assert set(row) == {"qid", "context", "prediction", "answers", "em", "f1"} and len(row["context"]) == 16
    code, out, err = cli(capsys, "compare", tmp_path / "comprexit.json", tmp_path / "zero-shot.json",
                         "-o", tmp_path / "c.json")
    assert code == 0, err
    compared = json.loads((tmp_path / "c.json").read_text())
    squad, nq = (compared["datasets"][f"{name}_held_out"] for name in ("squad_train", "nq_train"))
    assert (squad["questions"], squad["contexts"], nq["questions"], nq["contexts"]) == (2, 1, 2, 2)
    assert compared["pooled"]["questions"] == 4 and squad["by_context"] and nq["by_context"]
    for name in ("comprexit", "zero-shot"):
        side = "a" if name == "comprexit" else "b"
        pooled = json.loads((tmp_path / f"{name}.json").read_text())["datasets"]
        f1 = sum(d["f1"] * d["count"] for d in pooled.values()) / 4
        assert compared["pooled"]["f1"][side] == pytest.approx(f1, abs=0.01)
    assert "Few contexts in squad_train_held_out (1), nq_train_held_out (2)" in out
