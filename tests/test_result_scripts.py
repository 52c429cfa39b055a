"""The scripts that turn device runs into decisions and tables: the sweep's choice, the teacher's, the F1 curve."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)


def write_run(folder: Path, lr: float, batch: int, step: int, f1: float, ce: float) -> None:
    (folder / "best").mkdir(parents=True)
    (folder / "train_config.json").write_text(json.dumps({"lr": lr, "global_batch_size": batch}))
    (folder / "best" / "selection.json").write_text(json.dumps({"step": step, "f1": f1, "ce": ce}))


def write_lever_run(folder: Path, compressor: dict, f1: float, ce: float) -> None:
    """A finished lever run at lr 6e-4, batch 256, step 300, whose compressor config adds `compressor`."""
    write_run(folder, 6e-4, 256, 300, f1=f1, ce=ce)
    config = {"lr": 6e-4, "global_batch_size": 256, "compressor": compressor}
    (folder / "train_config.json").write_text(json.dumps(config))


def test_sweep_choice_takes_the_best_f1_and_breaks_near_ties_by_answer_ce(tmp_path):
    write_run(tmp_path / "a", 6e-4, 256, 60, f1=30.1, ce=1.80)
    write_run(tmp_path / "b", 1.2e-3, 256, 60, f1=30.4, ce=1.90)  # best F1, but 'a' is within 0.5 with a lower CE
    write_run(tmp_path / "c", 3e-4, 512, 30, f1=28.0, ce=1.60)  # lowest CE, too far behind on F1
    (tmp_path / "unfinished").mkdir()  # no selection yet: ignored
    done = run_script("scripts/device/best_of_sweep.py", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "--lr 0.0006 --global-batch-size 256"


def test_sweep_choice_refuses_a_sweep_without_finished_runs(tmp_path):
    (tmp_path / "unfinished").mkdir()
    done = run_script("scripts/device/best_of_sweep.py", str(tmp_path))
    assert done.returncode == 1 and done.stdout == "" and "no finished runs" in done.stderr


def test_lever_choice_prints_the_winning_lever_or_nothing_when_no_lever_wins(tmp_path):
    lever_run = lambda name, compressor, f1, ce: write_lever_run(tmp_path / name, compressor, f1, ce)  # noqa: E731
    lever_run("none", {}, f1=30.0, ce=1.80)
    lever_run("reader_tokens_32", {"reader_tokens": 32}, f1=31.5, ce=1.75)
    done = run_script("scripts/device/best_of_sweep.py", "--lever", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == '--compressor-config {"reader_tokens":32}'
    lever_run("reader_tokens_8", {"reader_tokens": 8}, f1=29.0, ce=1.90)
    (tmp_path / "none" / "best" / "selection.json").write_text(json.dumps({"step": 300, "f1": 32.0, "ce": 1.70}))
    done = run_script("scripts/device/best_of_sweep.py", "--lever", str(tmp_path))
    assert done.returncode == 0 and done.stdout.split("\n")[-2] == ""  # no lever beats the run without one


def test_lever_choice_passes_on_a_projector_branch_alone_or_with_reader_tokens(tmp_path):
    lever_run = lambda name, compressor, f1, ce: write_lever_run(tmp_path / name, compressor, f1, ce)  # noqa: E731
    lever_run("none", {}, f1=29.3, ce=1.87)
    lever_run("projector_branch_1024", {"projector_branch": 1024, "reader_tokens": 0}, f1=30.0, ce=1.85)
    lever_run("projector_branch_2048", {"projector_branch": 2048}, f1=31.0, ce=1.84)
    done = run_script("scripts/device/best_of_sweep.py", "--lever", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == '--compressor-config {"projector_branch":2048}'
    lever_run("projector_branch_2048_reader_32", {"projector_branch": 2048, "reader_tokens": 32}, f1=31.2, ce=1.79)
    done = run_script("scripts/device/best_of_sweep.py", "--lever", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == '--compressor-config {"projector_branch":2048,"reader_tokens":32}'


def write_taught_run(folder: Path, f1: float, ce: float) -> None:
    write_run(folder, 6e-4, 256, 120, f1=f1, ce=ce)
    (folder / "train_config.json").write_text(json.dumps({"kl_weight": 0.5, "teacher": "/runs/prompt_tuning/best"}))


def test_the_teacher_is_kept_only_with_a_clear_f1_lead_and_a_lower_answer_ce(tmp_path):
    write_run(tmp_path / "plain", 6e-4, 256, 120, f1=30.0, ce=1.80)
    cases = {"clear": (31.2, 1.75), "close": (30.8, 1.70), "higher_ce": (32.0, 1.85)}
    answers = {}
    for name, (f1, ce) in cases.items():
        write_taught_run(tmp_path / name, f1, ce)
        done = run_script("scripts/device/keep_teacher.py", str(tmp_path / name), str(tmp_path / "plain"))
        assert done.returncode == 0, done.stderr
        answers[name] = done.stdout.split("\n")[-2]  # the last line printed, empty when the teacher is left out
    assert answers["clear"] == "--kl-weight 0.5 --teacher /runs/prompt_tuning/best"
    assert answers["close"] == answers["higher_ce"] == ""


def test_the_teacher_choice_refuses_a_run_that_never_validated(tmp_path):
    write_run(tmp_path / "plain", 6e-4, 256, 120, f1=30.0, ce=1.80)
    (tmp_path / "taught").mkdir()
    done = run_script("scripts/device/keep_teacher.py", str(tmp_path / "taught"), str(tmp_path / "plain"))
    assert done.returncode == 1 and "did not validate" in done.stderr


def test_sft_curve_lays_out_validation_and_eval_points(tmp_path):
    run = tmp_path / "lr6e-4"
    write_run(run / "long_sft", 6e-4, 256, 500, f1=34.0, ce=1.7)
    records = [{"kind": "bounds", "step": 0}, {"kind": "validation", "step": 250, "f1": 28.5, "ce": 1.9},
               {"kind": "validation", "step": 500, "f1": 34.0, "ce": 1.7}]
    (run / "long_sft" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    scores = {"squad_eval": 30.0, "nq_eval": 40.0, "drop_ood": 20.0, "relext_ood": 44.0}
    (run / "final" / "eval").mkdir(parents=True)
    for name, f1 in scores.items():
        (run / "final" / "eval" / f"{name}.json").write_text(json.dumps({"datasets": {name: {"f1": f1, "count": 1000}}}))
    done = run_script("scripts/results/sft_curve.py", str(run), "-o", str(tmp_path / "curve"))
    assert done.returncode == 0, done.stderr
    [curve] = json.loads((tmp_path / "curve.json").read_text())
    assert [p["examples"] for p in curve["validation"]] == [64_000, 128_000]
    counts = {name: 1000 for name in sorted(scores)}
    assert curve["eval"] == [{"step": 500, "examples": 128_000, "in_domain_f1": 35.0, "ood_f1": 32.0, "questions": counts}]
    table = (tmp_path / "curve.md").read_text()
    assert ("| lr6e-4 (lr 0.0006) | 500 (selected) | 128,000 | 34.0 | 1.7 | 35.0 | 32.0 | drop_ood 1000, nq_eval 1000, "
            "relext_ood 1000, squad_eval 1000 |") in table
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_sft_curve_refuses_a_folder_that_is_not_a_run(tmp_path):
    done = run_script("scripts/results/sft_curve.py", str(tmp_path), "-o", str(tmp_path / "curve"))
    assert done.returncode == 2 and "not an SFT run folder" in done.stderr


def test_distractor_build_cost_records_each_cap_in_a_process_of_its_own(tmp_path, shared_data):
    out = tmp_path / "cost"
    done = run_script("scripts/results/distractor_build_cost.py", str(shared_data / "squad_train.jsonl.gz"), str(out),
                      "--caps", "3", "6", "--lengths", "1024")
    assert done.returncode == 0, done.stderr[-2000:]
    written = json.loads(out.with_suffix(".json").read_text())
    assert [row["cap"] for row in written["rows"]] == [3, 6] and written["environment"]["commit"]
    assert all(0 < sum(row["documents"].values()) <= row["cap"] and row["peak_rss_gib"] > 0 for row in written["rows"])
    assert "| 6 |" in out.with_suffix(".md").read_text()


def write_speed_run(folder: Path, batch_size: int, compile: bool, speeds: list[float], finished: bool = True) -> None:
    """A speed run: 8 profiled steps, then one train row per 4 steps at `speeds` examples/s."""
    folder.mkdir(parents=True)
    config = {"lr": 3e-4, "batch_size": batch_size, "global_batch_size": 256, "compile": compile}
    (folder / "train_config.json").write_text(json.dumps(config))
    rows = [{"kind": "profile", "step": 8, "steps": 8, "share_encoder": 0.25}]
    rows += [{"kind": "train", "step": 4 * (i + 1), "examples_per_second": s, "tokens_per_second": 100 * s}
             for i, s in enumerate(speeds)]
    if finished:
        rows.append({"kind": "summary", "status": "finished", "step": 4 * len(speeds)})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_speed_choice_takes_the_fastest_finished_run_past_the_margin(tmp_path):
    # steady = the median after the first window and the profiled steps (steps 12, 16, 20, 24)
    write_speed_run(tmp_path / "eager_b64", 64, False, [90, 100, 200, 200, 200, 200])
    write_speed_run(tmp_path / "eager_b256", 256, False, [90, 100, 300, 300, 300, 300])
    write_speed_run(tmp_path / "compiled_b256", 256, True, [10, 10, 500, 500, 500, 500], finished=False)
    done = run_script("scripts/device/fastest.py", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "compiled_b256: did not finish" in done.stdout  # a run stopped by its time limit is never chosen
    assert done.stdout.splitlines()[-1] == "--batch-size 256"
    write_speed_run(tmp_path / "compiled_b64", 64, True, [5, 5, 320, 320, 320, 320])
    done = run_script("scripts/device/fastest.py", str(tmp_path))
    assert done.stdout.splitlines()[-1] == "--batch-size 64 --compile"


def test_speed_choice_keeps_the_baseline_when_no_run_leads_by_the_margin(tmp_path):
    write_speed_run(tmp_path / "eager_b64", 64, False, [90, 200, 200, 200, 200, 200])
    write_speed_run(tmp_path / "eager_b256", 256, False, [90, 204, 204, 204, 204, 204])  # 2% faster: noise
    done = run_script("scripts/device/fastest.py", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "" and "chosen: eager_b64" in done.stdout


def test_speed_choice_refuses_without_a_finished_baseline(tmp_path):
    write_speed_run(tmp_path / "eager_b256", 256, False, [90, 300, 300, 300])
    done = run_script("scripts/device/fastest.py", str(tmp_path))
    assert done.returncode == 1 and "baseline run eager_b64 did not finish" in done.stderr


def test_answer_types_groups_questions_by_kind_and_position(tmp_path):
    contexts = {"y": "Built in 1912 by the river. A museum in 1936.", "z": "1850 saw the hall open.", "n": "Ada Brenner kept the light for years.",
                "c": "The bridge has twenty-three arches, all of stone, and more text here.", "o": "It was painted red."}
    answers = {"y": ["1912"], "z": ["1850"], "n": ["Ada Brenner"], "c": ["twenty-three"], "o": ["painted blue"]}
    qa = tmp_path / "toy_train.jsonl"
    qa.write_text("\n".join(json.dumps(r) for r in [{"header": {"dataset": "toy", "split": "train"}}] + [
        {"context": contexts[q], "qas": [{"qid": q, "question": "?", "answers": answers[q]}]} for q in contexts]) + "\n")
    runs = (("a", {"y": 0.0, "z": 0.0, "n": 1.0, "c": 0.5, "o": 0.0}, {"y": "in 1936", "z": "1855"}),
            ("b", {"y": 1.0, "z": 1.0, "n": 1.0, "c": 1.0, "o": 0.5}, {"y": "1912", "z": "1850"}))
    for name, f1, said in runs:
        rows = [{"qid": q, "context": "x", "prediction": said.get(q, "p"), "answers": answers[q], "em": 0.0, "f1": f1[q]}
                for q in contexts]
        (tmp_path / f"{name}.json").write_text(json.dumps({"method": {"method": "m"}, "label": name, "datasets": {},
                                                            "predictions": {"toy_train": rows}}))
    from tiny import save_tiny_backbone

    tiny = ["--backbone", str(save_tiny_backbone("llama", tmp_path / "model"))]  # its tokenizer counts positions
    done = run_script("scripts/results/answer_types.py", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                      "--data", str(qa), "-o", str(tmp_path / "types.json"), *tiny)
    assert done.returncode == 0, done.stderr
    found = json.loads((tmp_path / "types.json").read_text())
    kinds = {row["group"]: row for row in found["groups"]["kind"]}
    assert {k: kinds[k]["questions"] for k in kinds} == {"year": 2, "number": 1, "name": 1, "other": 1}
    assert kinds["year"]["f1"] == [0.0, 100.0] and kinds["number"]["f1"] == [50.0, 100.0]
    positions = {row["group"]: row["questions"] for row in found["groups"]["position"]}
    assert positions == {"first third": 4, "middle third": 0, "last third": 0, "absent": 1}
    windows = {row["group"]: row["questions"] for row in found["groups"]["window"]}
    assert windows["window 1 (tokens 0-127)"] == 4 and windows["absent"] == 1
    # a's 1936 is the context's other year (bound to the wrong event), its 1855 a year the context never names
    outcomes = {row["outcome"]: row["questions"] for row in found["year_outcomes"]}
    assert outcomes == {"the gold year": [0, 2], "another year of the context": [1, 0],
                        "a year not in the context, within 10 of the gold": [1, 0],
                        "a year not in the context, further": [0, 0], "no year": [0, 0]}
    table = (tmp_path / "types.md").read_text()
    assert found["f1"] == [30.0, 90.0] and "| year | 2 | 0.00 | 100.00 |" in table
    assert "| another year of the context | 1 | 0 |" in table
    (tmp_path / "b.json").write_text(json.dumps({"method": {"method": "m"}, "datasets": {}, "predictions": {"toy_train": []}}))
    done = run_script("scripts/results/answer_types.py", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                      "--data", str(qa), "-o", str(tmp_path / "types.json"), *tiny)
    assert done.returncode == 1 and "needs its predictions" in done.stderr


def test_capacity_by_position_splits_a_compressed_context_into_thirds():
    """Per third: capacity relative to uniform, own-field share and source offset of the slots whose field starts there."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "scripts" / "results"))
    from capacity_by_position import context_rows

    class Explained:  # 12 tokens, 3 slots of 4-token fields in one window; slot 2 draws half from slot 0's field
        num_tokens = 12
        slot_start = np.zeros(3, dtype=int)
        slot_field = np.array([[0, 4], [4, 8], [8, 12]])
        draws = np.zeros((3, 12))

        def relative_capacity(self):
            return np.array([2.0] * 4 + [1.0] * 4 + [0.0] * 4)

    Explained.draws[0, :4] = Explained.draws[1, 4:8] = 0.25
    Explained.draws[2, :4], Explained.draws[2, 8:] = 0.125, 0.125
    rows = context_rows(Explained())
    assert rows["first third"] == [2.0, 1.0, 0.0] and rows["middle third"] == [1.0, 1.0, 0.0]
    capacity, own, offset = rows["last third"]
    assert capacity == 0.0 and own == 0.5 and offset == 4.0  # sources centred on 5.5, its field on 9.5
