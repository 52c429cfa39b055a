# Sourced by the device scripts (scale.sh, long_docs.sh): the stage, the data and weights every step
# names, and the ways a step runs `comprexit` on the accelerator machine and packs what it made.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
NPROC=${NPROC:-4}
read -r -a DRY <<< "${DRY:-}"  # a CPU dry run's shrinking options, appended to every training command

WIKI=$DATA/ntp_wikipedia.jsonl.gz
DEBIAN=$DATA/ntp_debian_docs.jsonl.gz
QA_TRAIN="$DATA/squad_v11_train.jsonl.gz $DATA/squad_train.jsonl.gz $DATA/nq_train.jsonl.gz"
QA_WEIGHTS="0.75 0.1 0.15"  # keep NQ-style questions at 15% of the steps (2% in proportion to size)
EVAL_FILES="$DATA/squad_eval.jsonl.gz $DATA/nq_eval.jsonl.gz $DATA/drop_ood.jsonl.gz $DATA/relext_ood.jsonl.gz"
SHIPPED=$PWD/src/comprexit/weights/gemma-3-270m-4x
# the NTP weights of the first 4-GPU lease (committed, bf16): later runs start here, so no NTP is repeated
NTP_INIT=${NTP_INIT:-$PWD/results/training/2026-11-27-h100x4-scale/ntp/best}

launch() {  # launch PROCESSES PORT ARGS...: `comprexit ARGS` data parallel over PROCESSES (torchrun)
  local n=$1 port=$2; shift 2
  if [ "$n" = 1 ]; then $CX "$@"; else
    python3 -m torch.distributed.run --nproc_per_node "$n" --master_port "$port" -m comprexit "$@"; fi
}

logged() {  # logged LOG COMMAND...: the full log to a file, its last lines to the reply
  local log=$1; shift
  mkdir -p "$(dirname "$log")"
  "$@" > "$log" 2>&1 || echo "FAILED ($?): $*"
  { grep -v "it/s\]\|s/it\]" "$log" || true; } | tail -3
}

pack() {  # pack NAME PATH...: one archive per step ($OUT keeps at most 8 files of 16 MiB)
  # PACK_WEIGHTS=0 leaves weights behind (the throughput runs' 8 MB folders made a 64 MB archive)
  local name=$1; shift
  local skip=(--exclude=checkpoints); [ "${PACK_WEIGHTS:-1}" = 0 ] && skip+=(--exclude='*.safetensors')
  tar -czf "$OUT/$name.tgz" "${skip[@]}" -C "$RUNS" "$@" 2>/dev/null || true
  in_parts "$OUT/$name.tgz"
}

in_parts() {  # in_parts ARCHIVE: a file over 16 MiB does not come back (2026-11-28: long_sft.tgz with 4.8M
  # float32 parameters, 17.8 MB); such an archive comes back in parts of 15 MiB, `cat NAME.part* | tar -xz` joins them
  if [ "$(stat -c %s "$1" 2>/dev/null || echo 0)" -gt $(( 15 * 1024 * 1024 )) ]; then
    split -b 15M -d "$1" "$1.part" && rm "$1"
  fi
  ls -la "$1"*
}

# A run paused by its call's time limit lives on in its machine only, and machines are often lost between calls or
# never come in the same session. pack_paused packs what a resume needs, so that a later lease (of any size, in any
# session) goes on with it: the run folder with its latest checkpoint only (sharded by the trainer into files of
# at most 15 MiB), without its snapshots. Coming back: scripts/device/stage_paused.sh puts the parts into staging
# folders, and step `restore` unpacks every paused archive of the stage into $RUNS before the step that resumes.
pack_paused() {  # pack_paused NAME: $OUT/NAME.paused.tgz(.partNN) if $RUNS/NAME is paused, else nothing
  local run=$RUNS/$1 latest
  [ -f "$run/checkpoints/latest" ] && [ ! -d "$run/final" ] || { echo "$1: not paused, nothing to keep"; return 0; }
  latest=$(cat "$run/checkpoints/latest")
  local skip=(--exclude="$1/snapshots") old
  for old in "$run"/checkpoints/step-* "$run"/checkpoints/.saving-*; do
    [ -e "$old" ] && [ "$(basename "$old")" != "$latest" ] && skip+=(--exclude="$1/checkpoints/$(basename "$old")")
  done
  tar -czf "$OUT/$1.paused.tgz" "${skip[@]}" -C "$RUNS" "$1"
  in_parts "$OUT/$1.paused.tgz"
}

step_restore() {  # every paused run staged in $STAGE (NAME.paused.tgz or its parts) back into $RUNS, once
  local archive name
  for archive in "$STAGE"/*.paused.tgz "$STAGE"/*.paused.tgz.part00; do
    [ -f "$archive" ] || continue
    name=$(basename "${archive%.part00}" .paused.tgz)
    if [ -d "$RUNS/$name" ]; then echo "restore: $RUNS/$name exists, kept as it is"; continue; fi
    if [[ $archive == *.part00 ]]; then cat "${archive%00}"[0-9][0-9] | tar -xz -C "$RUNS"; else tar -xzf "$archive" -C "$RUNS"; fi
    echo "restore: $name at $(cat "$RUNS/$name/checkpoints/latest")"
  done
}

phase() {  # phase DIR ARGS...: train into DIR (data parallel), resuming it if an earlier call paused it
  local dir=$1; shift
  [ -d "$dir/final" ] && { echo "$dir is finished"; return 0; }
  local resume=(); [ -d "$dir/checkpoints" ] && resume=(--resume)
  logged "$dir.log" launch "$NPROC" 29610 train "$@" --output-dir "$dir" "${resume[@]}" "${DRY[@]}"
}

on_gpus() {  # on_gpus COMMAND...: one lane per GPU, lane k runs commands k, k+NPROC, ... in turn (list the longest first)
  local lane
  for (( lane = 0; lane < NPROC; lane++ )); do
    ( export CUDA_VISIBLE_DEVICES=$lane
      for (( i = lane + 1; i <= $#; i += NPROC )); do eval "${!i}"; done ) &
  done
  wait
}

evaluation() {  # evaluation WEIGHTS LABEL OUTPUT ARGS...: one `comprexit eval` command line, logged (METHOD= another method)
  local weights=$1 label=$2 output=$3; shift 3
  echo "logged $output.log $CX eval --method ${METHOD:-comprexit} --weights $weights --batch-size 64 --no-progress \
    --label '$label' --output $output.json $*"
}

run_steps() {  # run_steps STEP...: each step_<name> in turn, timed
  for step in "$@"; do
    echo "=== $step $(date -u +%H:%M:%S)"
    "step_$step"
  done
  echo "=== done $(date -u +%H:%M:%S)"
}
