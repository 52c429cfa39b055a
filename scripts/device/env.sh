# Sourced by the device scripts: where the stage lives on the accelerator machine, and the environment
# every command there runs in (the carried transformers first on the path, offline, one cache).
: "${COMPREXIT_COMMIT:?set COMPREXIT_COMMIT=<sha of the carried tree>: the device copy has no .git of its own}"
export COMPREXIT_COMMIT
STAGE=${STAGE:-/root/stage}
RUNS=$STAGE/runs
DATA=$STAGE/data
export PYTHONPATH=/root/site:$PWD/src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
export COMPREXIT_CACHE=$STAGE/cache PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
OUT=${OUT:-$STAGE/out}
CX="python3 -m comprexit"
mkdir -p "$RUNS" "$OUT"
