#!/usr/bin/env bash
# The kvpress peer on the GPU machine, in one command (scripts/peers/README.md gives the staging):
#   COMPREXIT_COMMIT=<sha> bash scripts/peers/kvpress_gpu.sh
# after `scripts/device/session.sh setup` ran on this warm machine (it converts the bundled model
# into $STAGE/cache, where kvpress_eval.py finds it) and the kvpress pieces were copied to
# $STAGE/kvpress. It installs kvpress's wheels into their own folder ($KVSITE), then evaluates
# PRESSES at both budgets on the four eval files (LIMIT questions each) and packs the results
# into $OUT/kvpress.tgz. Runs whose results file exists are skipped, so a call cut by the
# 10-minute limit (TIME_LIMIT, default 9 minutes, stops it cleanly) is finished by the next one.
set -euo pipefail
: "${COMPREXIT_COMMIT:?set COMPREXIT_COMMIT=<sha of the carried tree>: the device copy has no .git of its own}"
export COMPREXIT_COMMIT
STAGE=${STAGE:-/root/stage}
KVSITE=${KVSITE:-/root/kvsite}
OUT=${OUT:-$STAGE/out}
RESULTS=$STAGE/runs/kvpress
DATA=$STAGE/data
PRESSES=${PRESSES:-none,knorm,snapkv,expected_attention}
mkdir -p "$RESULTS" "$OUT"
bash scripts/peers/setup_kvpress_venv.sh install "$STAGE/kvpress" "$KVSITE"
status=0
env -u PYTHONPATH PYTHONPATH="$KVSITE" COMPREXIT_CACHE="$STAGE/cache" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    timeout "${TIME_LIMIT:-9m}" python3 scripts/peers/kvpress_eval.py \
    --data "$DATA/squad_eval.jsonl.gz" "$DATA/nq_eval.jsonl.gz" "$DATA/drop_ood.jsonl.gz" "$DATA/relext_ood.jsonl.gz" \
    --limit "${LIMIT:-1000}" --presses "$PRESSES" --budgets positions,bytes --batch-size 64 --no-progress \
    --output-dir "$RESULTS" || status=$?
tar -czf "$OUT/kvpress.tgz" -C "$STAGE/runs" kvpress
ls "$RESULTS"
[ "$status" = 124 ] && echo "stopped at TIME_LIMIT: call again to finish the remaining runs"
exit "$status"
