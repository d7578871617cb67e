#!/usr/bin/env bash
# The first GPU run, as one short script for a lent device machine (bench/gpu/README.md): the device report,
# `gpt2lab selftest`, `gpt2lab bench` on gpt2-124m against transformers, and the gpt2-124m-speedrun recipe
# paused and resumed. Every stage has its own time limit and its own log under $OUT; a stage that fails is
# reported and the next one still runs. SMOKE=1 shrinks every stage to something a CPU finishes in minutes
# (how this script is tested where there is no GPU); it proves the plumbing, not the GPU.
OUT="${OUT:-/tmp/gpu_first_run}"
source "$(dirname "$0")/common.sh"

stage environment 20 bash -c 'nvidia-smi || true; python3 -c "import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"; python3 -m gpt2lab --version || true'
if [ "${SMOKE:-0}" = 1 ]; then
  SMOKE_LIMIT=240
  stage selftest 300 python3 -m gpt2lab selftest --device "$DEVICE"
  stage bench 300 python3 -m gpt2lab bench --preset tiny --micro-batch 4 --rounds 2 --steps 2 --warmup 1 \
    --contender gpt2lab --contender hf --device "$DEVICE" --save "$OUT"
  SPEEDRUN=(--recipe gpt2-124m-speedrun --set model.n_layer=2 --set model.n_embd=64 --set model.n_head=2
            --set model.block_size=64 --set run.micro_batch=2 --set run.batch_tokens=256 --set run.compile=off
            --set run.precision=fp32)
else
  stage selftest 120 python3 -m gpt2lab selftest --device "$DEVICE"
  stage bench 140 python3 -m gpt2lab bench --preset gpt2-124m --micro-batch 16 --rounds 3 --steps 5 \
    --contender gpt2lab --contender hf --device "$DEVICE" --save "$OUT"
  SPEEDRUN=(--recipe gpt2-124m-speedrun)
fi
# (the stages' limits add up to 540 s on a GPU: one device call of 590 s, most of a 15-minute lease; at most 8
# files come back from $OUT, and this writes 8)
# the speedrun recipe, 24 steps: paused at 12 (a checkpoint), resumed to 24; the schedule is shortened to match
COMMON=(--data .gpu/data --out /tmp/speedrun --device "$DEVICE" --set schedule.max_steps=24
        --set schedule.warmup_steps=4 --set eval.every=12 --set eval.batches=4 --set checkpoint.every=12
        --set eval.hellaswag_every=none)
rm -rf /tmp/speedrun
stage speedrun_to_12 "${SMOKE_LIMIT:-150}" python3 -m gpt2lab train "${SPEEDRUN[@]}" "${COMMON[@]}" --stop-at 12
stage speedrun_resumed "${SMOKE_LIMIT:-110}" python3 -m gpt2lab train "${SPEEDRUN[@]}" "${COMMON[@]}" --resume
cp /tmp/speedrun/metrics.jsonl "$OUT/speedrun_metrics.jsonl" 2>/dev/null
finish
