#!/usr/bin/env bash
# Rebuild the tables of results/training/2026-11-27-h100x4-scale from its committed run files.
set -euo pipefail
cd "$(dirname "$0")/../.."
R=results/training/2026-11-27-h100x4-scale
python -m comprexit summarize $R/ntp $R/sft -o $R/summary.json \
  --title "ComprExIT 4x at scale on 4 H100s: NTP (Wikipedia + Debian docs + QA contexts), then SFT (SQuAD v1.1 train + squad_train + nq_train, weights 0.75/0.1/0.15)" \
  --note "Both runs were stopped by the call's time limit after their last logged step: a per-process schedule plan left the processes waiting for each other (fixed since); their train-seconds column is therefore empty, and the durations are in README.md."
python -m comprexit summarize $R/throughput/before_1gpu $R/throughput/after_1gpu $R/throughput/after_2gpu $R/throughput/after_4gpu \
  --throughput --plot $R/throughput/loss.png -o $R/throughput/summary.json \
  --title "SFT throughput, shipped objective: code of 66215f8 at batch 32 vs the scale recipe on 1/2/4 GPUs"
python -m comprexit table $R/eval/scale_*.json results/qa/comprexit-shipped.json \
  results/baselines/2026-11-23-h100-trained/eval/prompt_tuning.json results/bounds/zero-shot.json results/bounds/no-context.json \
  --relabel "prompt_tuning=Prompt tuning (full context)" \
  --relabel "ComprExIT (extended recipe)=ComprExIT (extended recipe, shipped before)" \
  --title "Gemma-3-270M, 4x: the scale recipe against the compressor shipped before and the bounds (first 1000 questions per file)" \
  -o $R/eval/table.md
python -m comprexit table $R/heldout/new_best.json $R/heldout/old_shipped.json \
  --relabel "new_best=ComprExIT, scale recipe (sft/best, shipped now)" --relabel "old_shipped=ComprExIT, extended recipe (shipped before)" \
  --in-domain squad_v11_train_held_out,squad_train_held_out,nq_train_held_out --ood "" \
  --title "Model selection on train files: held-out questions (validation_permille 30, unseen by both), first 100 per file, CPU float32" \
  -o $R/heldout/table.md
