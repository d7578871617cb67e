#!/usr/bin/env bash
# The third GPU call of 2026-12-04 (bench/gpu/README.md): the multi-rank paths on a real GPU and NCCL, as far as
# one GPU reaches (torchrun with one process, which gpt2lab runs without a DDP wrapper; FSDP2 on an NCCL group of
# one; checkpoints and resume), then HellaSwag on the checkpoint, then the speedrun with a micro-batch of 64
# (memory and MFU). Needs .gpu/hellaswag_val.jsonl beside .gpu/data. SMOKE=1 DEVICE=cpu: a CPU minute.
OUT="${OUT:-/tmp/gpu_ranks_check}" TAIL=8
source "$(dirname "$0")/common.sh"
RUN=(--recipe gpt2-124m-speedrun) FSDP=(--preset gpt2-124m --set run.micro_batch=16) LIMIT_HS=()
if [ "${SMOKE:-0}" = 1 ]; then
  TINY=(--set model.n_layer=2 --set model.n_embd=64 --set model.n_head=2 --set model.block_size=64
        --set run.micro_batch=2 --set run.batch_tokens=256)
  RUN+=("${TINY[@]}" --set run.compile=off --set run.precision=fp32) FSDP=(--preset tiny "${TINY[@]}" --set run.precision=fp32)
  LIMIT_HS=(--limit 20)
fi
TRAIN=(-m torch.distributed.run --standalone --nproc_per_node=1 -m gpt2lab train --data .gpu/data --device "$DEVICE"
       --set schedule.warmup_steps=2 --set eval.batches=2 --set eval.hellaswag_every=none)
rm -rf /tmp/ddp /tmp/fsdp /tmp/mb64
stage ddp 100 python3 "${TRAIN[@]}" "${RUN[@]}" --out /tmp/ddp --set schedule.max_steps=6 --set eval.every=3 \
  --set checkpoint.every=3 --stop-at 3
stage ddp 70 python3 "${TRAIN[@]}" "${RUN[@]}" --out /tmp/ddp --set schedule.max_steps=6 --set eval.every=3 \
  --set checkpoint.every=3 --resume
stage fsdp 80 python3 "${TRAIN[@]}" "${FSDP[@]}" --out /tmp/fsdp --set run.parallel=fsdp --set schedule.max_steps=4 \
  --set eval.every=4 --set checkpoint.every=4
stage hellaswag 70 python3 -m gpt2lab eval /tmp/ddp --hellaswag .gpu/hellaswag_val.jsonl --tokenizer .gpu/tokenizer \
  --device "$DEVICE" --batch-size 32 --quiet "${LIMIT_HS[@]}"
[ "${SMOKE:-0}" = 1 ] || stage microbatch64 90 python3 -m gpt2lab train "${RUN[@]}" --data .gpu/data --out /tmp/mb64 \
  --device "$DEVICE" --set run.micro_batch=64 --set schedule.max_steps=6 --set schedule.warmup_steps=2 \
  --set eval.every=none --set checkpoint.every=none --set eval.hellaswag_every=none
finish
