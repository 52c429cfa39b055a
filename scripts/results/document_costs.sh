#!/usr/bin/env bash
# What each method's compressed form of a document costs (evaluation/costs.py), beside its F1, on the first
# LIMIT questions of squad_eval and nq_eval (DATA: other files): the shipped ComprExIT, prompt tuning at the new budget, the full context,
# truncation to the slots' budget and no context, one `comprexit eval` each, then `comprexit table --costs`.
#   bash scripts/results/document_costs.sh OUT_DIR [DEVICE]     (LIMIT=100 by default)
set -euo pipefail
out=${1:?usage: document_costs.sh OUT_DIR [DEVICE]}
device=${2:-cpu}
limit=${LIMIT:-100}
read -r -a data <<< "${DATA:-../shared/data/squad_eval.jsonl.gz ../shared/data/nq_eval.jsonl.gz}"
mkdir -p "$out"
common=(--data "${data[@]}" --limit "$limit" --device "$device" --batch-size 16 --no-progress)
comprexit eval --method comprexit "${common[@]}" --label "ComprExIT 4x (shipped)" -o "$out/comprexit.json"
comprexit eval --method prompt-tuning --weights results/training/2026-11-27-h100x4-third/prompt_tuning/best \
  "${common[@]}" --label "prompt tuning, full context" -o "$out/prompt_tuning.json"
comprexit eval --method zero-shot "${common[@]}" --label "full context (zero-shot)" -o "$out/full_context.json"
comprexit eval --method truncate-last --ratio 4 "${common[@]}" --label "last quarter of the context" -o "$out/truncate_last.json"
comprexit eval --method no-context "${common[@]}" --label "no context" -o "$out/no_context.json"
comprexit table --costs "$out"/comprexit.json "$out"/prompt_tuning.json "$out"/full_context.json \
  "$out"/truncate_last.json "$out"/no_context.json --title "Cost per document beside F1 (first $limit questions a file, $device)" \
  -o "$out/table.md"
