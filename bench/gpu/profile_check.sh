#!/usr/bin/env bash
# Where a small model's GPU step goes: the WikiText-103 recipe (gpt2-25m, fp16, 8,192 tokens per step) took 16 ms
# per step on an H200 eager and compiled alike (MFU 6%), while compile halved the 15M model's step. Each stage
# profiles 10 steps (gpt2lab's --profile: the GPU's busy time against the wall time, then the costliest
# operators) and appends the summary to its log. SMOKE=1 DEVICE=cpu proves the plumbing on a CPU.
OUT="${OUT:-/tmp/gpu_profile_check}" TAIL=6
source "$(dirname "$0")/common.sh"
HALF=fp16 LIMIT=1
WIKI=(--recipe gpt2-25m-wikitext103) SMALL=(--preset gpt2-15m --set run.micro_batch=64 --set schedule.max_steps=100000)
if [ "${SMOKE:-0}" = 1 ]; then
  HALF=bf16 LIMIT=3
  TINY=(--set model.n_layer=2 --set model.n_embd=64 --set model.n_head=2 --set model.block_size=64 --set run.micro_batch=2)
  WIKI+=("${TINY[@]}") SMALL+=("${TINY[@]}")
fi
COMMON=(--data .gpu/data --device "$DEVICE" --set eval.hellaswag_every=none --set eval.every=none
        --set checkpoint.every=none --profile 10 --stop-at 14)
profiled() {  # profiled NAME LIMIT ARGS...: one stage, its profile summary appended to its log
  local name=$1 limit=$2; shift 2
  rm -rf "/tmp/$name"
  stage "$name" "$limit" python3 -m gpt2lab train "$@" "${COMMON[@]}" --out "/tmp/$name"
  { echo "--- profile summary"; cat "/tmp/$name/profile/summary.txt"; } >> "$OUT/$name.log" 2>&1
  head -n 1 "/tmp/$name/profile/summary.txt" | tee -a "$OUT/summary.txt"
}
profiled wiki_eager $((50 * LIMIT)) "${WIKI[@]}" --set run.precision="$HALF" --set run.compile=off
profiled wiki_compiled $((70 * LIMIT)) "${WIKI[@]}" --set run.precision="$HALF" --set run.compile=on
profiled wiki_micro64 $((70 * LIMIT)) "${WIKI[@]}" --set run.precision="$HALF" --set run.compile=on --set run.micro_batch=64
profiled small_compiled $((60 * LIMIT)) "${SMALL[@]}" --set run.compile=on
finish
