"""The device scripts' `pack` (scripts/device/common.sh): what a step made comes back through $OUT, where a
file over 16 MiB does not; a larger archive comes back in parts that join into the same files."""

import os
import subprocess
from pathlib import Path

COMMON = Path(__file__).resolve().parents[1] / "scripts" / "device" / "common.sh"


def pack(stage: Path, *arguments: str) -> None:
    env = {**os.environ, "STAGE": str(stage), "OUT": str(stage / "out"), "COMPREXIT_COMMIT": "test"}
    subprocess.run(["bash", "-c", f'source "{COMMON}" && pack "$@"', "pack", *arguments],
                   env=env, check=True, capture_output=True)


def test_a_large_archive_comes_back_in_parts_that_join(tmp_path):
    run = tmp_path / "runs" / "long_sft" / "best"
    run.mkdir(parents=True)
    weights = os.urandom(20 * 1024 * 1024)  # random bytes: gzip cannot shrink them under the limit
    (run / "comprexit.safetensors").write_bytes(weights)
    (run / "selection.json").write_text('{"step": 500}\n')
    pack(tmp_path, "long_sft", "long_sft/best")

    out = tmp_path / "out"
    parts = sorted(out.glob("long_sft.tgz.part*"))
    assert len(parts) == 2 and not (out / "long_sft.tgz").exists()
    assert all(part.stat().st_size <= 15 * 1024 * 1024 for part in parts)
    back = tmp_path / "back"
    back.mkdir()
    subprocess.run(["bash", "-c", f"cat {out}/long_sft.tgz.part* | tar -xz -C {back}"], check=True)
    assert (back / "long_sft/best/comprexit.safetensors").read_bytes() == weights
    assert (back / "long_sft/best/selection.json").read_text() == '{"step": 500}\n'


def test_a_small_archive_stays_whole(tmp_path):
    (tmp_path / "runs" / "levers").mkdir(parents=True)
    (tmp_path / "runs" / "levers" / "chosen.txt").write_text("--lr 6e-4\n")
    pack(tmp_path, "levers", "levers")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["levers.tgz"]


def shell(stage: Path, command: str, *arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "STAGE": str(stage), "OUT": str(stage / "out"), "COMPREXIT_COMMIT": "test"}
    return subprocess.run(["bash", "-c", f'source "{COMMON}" && {command} "$@"', command, *arguments],
                          env=env, check=True, capture_output=True, text=True)


def paused_run(stage: Path, checkpoint_bytes: int = 64) -> dict[str, bytes]:
    """A run folder as the trainer leaves it when a call's time limit pauses it; returns what a resume needs."""
    run = stage / "runs" / "long_sft"
    keep = {"metrics.jsonl": b'{"step": 1000}\n', "train_config.json": b"{}\n", "best/comprexit.safetensors": b"best",
            "checkpoints/latest": b"step-0001000\n", "checkpoints/step-0001000/trainer_state.json": b'{"step": 1000}',
            "checkpoints/step-0001000/optimizer.safetensors": os.urandom(checkpoint_bytes)}
    drop = {"checkpoints/step-0000500/trainer_state.json": b'{"step": 500}', "snapshots/step-500/weights": b"w"}
    for name, data in {**keep, **drop}.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(data)
    return keep


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_paused_run_comes_back_with_its_latest_checkpoint_and_is_restored_on_another_stage(tmp_path):
    kept = paused_run(tmp_path / "first", checkpoint_bytes=20 * 1024 * 1024)  # over 16 MiB: comes back in parts
    shell(tmp_path / "first", "pack_paused", "long_sft")
    parts = sorted((tmp_path / "first" / "out").glob("long_sft.paused.tgz.part*"))
    assert len(parts) == 2 and all(part.stat().st_size <= 15 * 1024 * 1024 for part in parts)

    # here: one part per staging folder; there: a fresh machine's stage, as the staging calls copy them
    into = tmp_path / "device"
    done = subprocess.run(["bash", str(COMMON.parent / "stage_paused.sh"), str(tmp_path / "first" / "out")],
                          env={**os.environ, "DEVICE_DIR": str(into)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in into.iterdir()) == ["p1", "p2"]
    second = tmp_path / "second"
    second.mkdir()
    for folder in into.iterdir():
        for part in folder.iterdir():
            (second / part.name).write_bytes(part.read_bytes())
    restored = shell(second, "step_restore")
    assert "restore: long_sft at step-0001000" in restored.stdout
    # the latest checkpoint, the best weights and the metrics; neither the older checkpoint nor the snapshots
    assert files_under(second / "runs" / "long_sft") == kept
    # a run already on the stage is never overwritten
    (second / "runs" / "long_sft" / "metrics.jsonl").write_text("newer\n")
    assert "exists, kept as it is" in shell(second, "step_restore").stdout
    assert (second / "runs" / "long_sft" / "metrics.jsonl").read_text() == "newer\n"


def test_a_finished_run_leaves_nothing_to_resume(tmp_path):
    paused_run(tmp_path)
    (tmp_path / "runs" / "long_sft" / "final").mkdir()
    assert "not paused" in shell(tmp_path, "pack_paused", "long_sft").stdout
    assert not list((tmp_path / "out").glob("*paused*"))


def test_staging_a_paused_run_refuses_a_folder_without_one(tmp_path):
    done = subprocess.run(["bash", str(COMMON.parent / "stage_paused.sh"), str(tmp_path)],
                          env={**os.environ, "DEVICE_DIR": str(tmp_path / "device")}, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no *.paused.tgz" in done.stderr
