#!/usr/bin/env bash
# A paused run that came back through $OUT (NAME.paused.tgz, or its parts NAME.paused.tgz.partNN; see pack_paused
# in common.sh) goes to the next lease the way the data does: one file per staging folder .device/pK (a part of
# 15 MiB plus the tree fits the 64 MiB a call carries). Run here, from the project root:
#
#   bash scripts/device/stage_paused.sh FOLDER     FOLDER: where the returned files lie (the run's files_at)
#
# then, after the data pieces, one call per printed folder (carry [".device/pK"]):
#   mkdir -p /root/stage && cp .device/pK/* /root/stage/
# and `bash scripts/device/scale.sh restore long_sft` (restore first, then the step that resumes the run).
set -euo pipefail
[ $# = 1 ] && [ -d "$1" ] || { echo "usage: stage_paused.sh FOLDER (the folder the paused run's files came back to)" >&2; exit 2; }
shopt -s nullglob
files=("$1"/*.paused.tgz "$1"/*.paused.tgz.part[0-9][0-9])
[ ${#files[@]} -gt 0 ] || { echo "stage_paused.sh: no *.paused.tgz or *.paused.tgz.partNN in $1" >&2; exit 2; }
into=${DEVICE_DIR:-$(git rev-parse --show-toplevel)/.device}  # DEVICE_DIR: elsewhere (the tests)
rm -rf "$into"/p[0-9]*
k=0
for file in "${files[@]}"; do
  k=$((k + 1)); mkdir -p "$into/p$k"; cp "$file" "$into/p$k/"
  echo ".device/p$k  $(basename "$file")"
done
