#!/usr/bin/env bash
# Issue "Long documents" on the accelerator machine (`device` tool, kind nvidia-h100-x4). Staged and set up as
# scale.sh says (its `setup` step; stage ntp_wikipedia.jsonl.gz too for `long_ntp`), then one step per call:
#
#   bench      the committed benchmark (results/long_documents/benchmark: squad_eval and nq_eval questions with
#              their gold paragraph among distractors at 1k/2k/4k/8k tokens, at the start, middle and end, 64
#              questions a file) read three ways per length: the shipped compressor (chunk by chunk, as `ask`
#              reads a long document), the frozen model reading the whole document (zero-shot), and truncation
#              to the slots' budget (the last quarter of the tokens)
#   long_ntp   NTP continued from the NTP weights over Wikipedia spans of 2k/4k/8k tokens (LONG_SHARE of each
#              epoch), compressed chunk by chunk, the continuation predicted from all their slots (LEVER: e.g.
#              '{"chunk_positions":16}', the cross-chunk lever, one at a time); validated also on spans of
#              held-out articles at each length (ce@2048 ... in metrics.jsonl), best/ by the mean of the plain and
#              long CEs (ce_selection)
#   long_sft   SFT from long_ntp/best over the QA train files, LONG_SHARE of the questions again with their gold
#              paragraph among distractors at 2k/4k/8k tokens, drawn anew each epoch; validated also on the
#              held-out questions among held-out paragraphs at each length (f1@2048 ...), best/ by the mean of the
#              plain and long F1s (f1_selection)
#   long_eval  long_sft/best on the benchmark (as `bench`) and on the four 512-token eval files; the shipping rule
#              on held-out train questions at 512 tokens against the shipped weights
#
#   COMPREXIT_COMMIT=<sha> bash scripts/device/long_docs.sh bench
#
# Every step packs its results into $OUT/<step>.tgz. Long examples hold up to 16 chunks each: LONG_BATCH is their
# passes' size (--long-batch-size); short examples keep the preset's 64 a pass, the global batch its 256.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
BENCH=$PWD/results/long_documents/benchmark
LENGTHS=${LENGTHS:-"8192 4096 2048 1024"}  # longest first: the queue's longest jobs start first
LONG_SHARE=${LONG_SHARE:-0.5}
LONG_BATCH=${LONG_BATCH:-8}
LONG_NTP_MINUTES=${LONG_NTP_MINUTES:-6}
LONG_SFT_MINUTES=${LONG_SFT_MINUTES:-6}
# Documents for at most this many training questions per file: all of squad_v11_train at 2k/4k/8k did not fit
# 24 GiB in one process (results/long_documents/build_cost: killed by the OOM killer; 10,000: 55 s, 4.0 GiB), and a run of minutes reads a
# fraction of them (--distractor-questions; the distractors still come from every training paragraph)
DISTRACTOR_QUESTIONS=${DISTRACTOR_QUESTIONS:-10000}
BENCH_LIMIT=${BENCH_LIMIT:-64}  # questions per benchmark file (all of them)

bench_jobs() {  # bench_jobs FOLDER LABEL WEIGHTS: the benchmark at every length, read by WEIGHTS (and, once, the bounds)
  local folder=$1 label=$2 weights=$3 length files common
  mkdir -p "$folder"
  for length in $LENGTHS; do
    files=$(ls $BENCH/*_${length}_*.jsonl.gz | tr '\n' ' ')
    common="--data $files --context-budget $length --limit $BENCH_LIMIT --no-progress"
    JOBS+=("logged $folder/comprexit-$length.log $CX eval --method comprexit --weights $weights --batch-size 16 \
      $common --label '$label' --output $folder/comprexit-$length.json")
    [ "${BOUNDS:-1}" = 1 ] || continue
    JOBS+=("logged $folder/full-context-$length.log $CX eval --method zero-shot --batch-size 8 $common \
      --label 'full context' --output $folder/full-context-$length.json")
    JOBS+=("logged $folder/truncate-last-$length.log $CX eval --method truncate-last --ratio 4 --batch-size 16 \
      $common --label 'truncation to the slots budget' --output $folder/truncate-last-$length.json")
  done
}
bench_tables() {  # bench_tables FOLDER: one table per length (rows: methods; columns: source x position)
  for length in $LENGTHS; do
    $CX table "$1"/*-$length.json -o "$1/table-$length.md" | tail -1 || echo "FAILED: the $length-token table"
  done
}

step_bench() {  # the shipped compressor and the two bounds on the benchmark
  JOBS=(); bench_jobs $RUNS/bench "ComprExIT, shipped (chunk by chunk)" "$SHIPPED"
  on_gpus "${JOBS[@]}"
  bench_tables $RUNS/bench
  pack bench bench
}

step_long_ntp() {
  local lever=(); [ -n "${LEVER:-}" ] && lever=(--compressor-config "$LEVER")
  phase $RUNS/long_ntp ntp --preset scale --init "$NTP_INIT" --data $WIKI --long-context-tokens 2048 4096 8192 \
    --long-share "$LONG_SHARE" --long-batch-size "$LONG_BATCH" --max-steps 100000 --plan-minutes "$LONG_NTP_MINUTES" \
    --max-minutes "$(( LONG_NTP_MINUTES + 1 ))" --log-every 10 "${lever[@]}"
  pack long_ntp long_ntp/{best,metrics.jsonl,curves.png,train_config.json,bounds.json} long_ntp.log
  pack_paused long_ntp
}

step_long_sft() {
  phase $RUNS/long_sft_docs sft --preset scale --init $RUNS/long_ntp/best --data $QA_TRAIN --data-weights $QA_WEIGHTS \
    --distractor-tokens 2048 4096 8192 --distractor-questions "$DISTRACTOR_QUESTIONS" --long-share "$LONG_SHARE" \
    --long-batch-size "$LONG_BATCH" --max-steps 100000 \
    --plan-minutes "$LONG_SFT_MINUTES" --max-minutes "$(( LONG_SFT_MINUTES + 1 ))" --eval-every 250 --log-every 10
  pack long_sft long_sft_docs/{best,metrics.jsonl,curves.png,train_config.json,bounds.json} long_sft_docs.log
  pack_paused long_sft_docs
}

step_long_eval() {  # the long-trained weights: the benchmark, the 512-token eval files, the held-out decision
  local best=$RUNS/long_sft_docs/best heldout=(--data $QA_TRAIN --held-out 30 --limit "${HELDOUT_LIMIT:-300}")
  JOBS=()
  JOBS+=("$(evaluation $best "ComprExIT, long-trained" $RUNS/long_eval/eval/long_trained --data $EVAL_FILES --limit 1000)")
  BOUNDS=0 bench_jobs $RUNS/long_eval/bench "ComprExIT, long-trained" "$best"
  JOBS+=("$(evaluation $best "ComprExIT, long-trained" $RUNS/long_eval/heldout/long_trained "${heldout[@]}")")
  JOBS+=("$(evaluation $SHIPPED "ComprExIT, shipped" $RUNS/long_eval/heldout/shipped "${heldout[@]}")")
  mkdir -p $RUNS/long_eval/eval $RUNS/long_eval/heldout
  on_gpus "${JOBS[@]}"
  bench_tables $RUNS/long_eval/bench
  $CX table $RUNS/long_eval/heldout/*.json -o $RUNS/long_eval/heldout/table.md | tail -1
  $CX table $RUNS/long_eval/eval/*.json -o $RUNS/long_eval/eval/table.md | tail -1
  pack long_eval long_eval
}

run_steps "$@"
