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
