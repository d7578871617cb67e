#!/usr/bin/env bash
# The second GPU call of 2026-12-04 (bench/gpu/README.md): after the first run showed torch 2.11's compiler
# breaking the graph in every attention layer (and, past its recompile limit, running the rest uncompiled), this
# reruns the compiled speedrun recipe for 12 steps with the fix, and the gpt2-124m bench compiled, against
# transformers. SMOKE=1 DEVICE=cpu shrinks both to a CPU minute (the plumbing, not the GPU).
OUT="${OUT:-/tmp/gpu_compile_check}" TAIL=12
source "$(dirname "$0")/common.sh"
SPEEDRUN=(--recipe gpt2-124m-speedrun) BENCH=(--preset gpt2-124m --micro-batch 16 --rounds 3 --steps 5)
if [ "${SMOKE:-0}" = 1 ]; then
  SPEEDRUN+=(--set model.n_layer=2 --set model.n_embd=64 --set model.n_head=2 --set model.block_size=64
             --set run.micro_batch=2 --set run.batch_tokens=256 --set run.precision=bf16)
  BENCH=(--preset tiny --micro-batch 4 --rounds 2 --steps 2 --warmup 1)
fi
rm -rf /tmp/speedrun_compiled
stage speedrun_compiled 150 python3 -m gpt2lab train "${SPEEDRUN[@]}" --data .gpu/data --out /tmp/speedrun_compiled \
  --device "$DEVICE" --set schedule.max_steps=12 --set schedule.warmup_steps=4 --set eval.every=12 --set eval.batches=4 \
  --set checkpoint.every=12 --set eval.hellaswag_every=none
stage bench_compiled 150 python3 -m gpt2lab bench "${BENCH[@]}" --compile on --contender gpt2lab --contender hf \
  --device "$DEVICE" --save "$OUT"
grep -c "recompile_limit\|graph break" "$OUT"/*.log | tee -a "$OUT/summary.txt"
finish
