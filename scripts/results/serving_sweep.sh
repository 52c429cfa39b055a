#!/usr/bin/env bash
# Rebuild results/bench/serving-sweep.{json,md,png} from the committed bench runs (run from the repository root):
# per-question serving of (a), (b), (c) on the compiled `graph` path, one serving length per bench run,
# (c) in slot-sized caches.
set -euo pipefail
R=results/bench
python -m comprexit bench-sweep --decode graph -o $R/serving-sweep.json \
  --title "Per-question serving on the compiled graph path: H200 at 512, 2048 and 8192 tokens (batch 8); H100 at 2048 tokens (batch 8 and 32)" \
  $R/h200-512.json $R/h200-2048.json $R/h200-8192.json $R/h100-graph-2048.json $R/h100-graph-2048-batch32.json
