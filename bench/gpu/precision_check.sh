#!/usr/bin/env bash
# fp16 on a GPU, the path the CPU cannot run (gpt2lab refuses fp16 on a CPU, so no CPU test ever trained in it):
# the WikiText-103 recipe (gpt2-25m, fp16 with a grad scaler, compiled) paused and resumed, beside the same run in
# bf16; the speedrun recipe (Muon) in fp16; FSDP2 in fp16, eager; and the 15M model of the RTX 4050 report
# benchmarked (its MFU on a big GPU). Carries .whl and .gpu like the other scripts; SMOKE=1 DEVICE=cpu proves the
# plumbing on a CPU (in bf16/fp32 there, since a CPU has no fp16 training).
OUT="${OUT:-/tmp/gpu_precision_check}" TAIL=10
source "$(dirname "$0")/common.sh"
HALF=fp16 LIMIT=1 SMALL=(--preset gpt2-15m --micro-batch 64 --rounds 3 --steps 10)
RECIPE=(--recipe gpt2-25m-wikitext103) SPEEDRUN=(--recipe gpt2-124m-speedrun) FSDP=(--preset gpt2-124m --set run.micro_batch=16)
if [ "${SMOKE:-0}" = 1 ]; then
  HALF=bf16 LIMIT=4
  TINY=(--set model.n_layer=2 --set model.n_embd=64 --set model.n_head=2 --set model.block_size=64
        --set run.micro_batch=2 --set run.batch_tokens=256)
  RECIPE+=("${TINY[@]}") SPEEDRUN+=("${TINY[@]}" --set run.compile=off) FSDP=(--preset tiny "${TINY[@]}")
  SMALL=(--preset tiny --micro-batch 4 --rounds 2 --steps 2 --warmup 1)
fi
SHORT=(--data .gpu/data --device "$DEVICE" --set eval.batches=4 --set eval.hellaswag_every=none)
stage environment 20 bash -c 'nvidia-smi || true; python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"'
rm -rf /tmp/fp16 /tmp/bf16 /tmp/fp16_speedrun /tmp/fsdp_fp16
# 40 steps, paused at 20 (the scaler's state goes into the checkpoint) and resumed
stage fp16_recipe $((60 * LIMIT)) python3 -m gpt2lab train "${RECIPE[@]}" "${SHORT[@]}" --out /tmp/fp16 \
  --set run.precision="$HALF" --set schedule.max_steps=40 --set schedule.warmup_steps=10 --set eval.every=20 \
  --set checkpoint.every=20 --stop-at 20
stage fp16_recipe $((60 * LIMIT)) python3 -m gpt2lab train "${RECIPE[@]}" "${SHORT[@]}" --out /tmp/fp16 \
  --set run.precision="$HALF" --set schedule.max_steps=40 --set schedule.warmup_steps=10 --set eval.every=20 \
  --set checkpoint.every=20 --resume
stage bf16_twin $((70 * LIMIT)) python3 -m gpt2lab train "${RECIPE[@]}" "${SHORT[@]}" --out /tmp/bf16 \
  --set run.precision=bf16 --set schedule.max_steps=40 --set schedule.warmup_steps=10 --set eval.every=20 \
  --set checkpoint.every=none
# what fp16 did to the losses, and the steps its scaler skipped
python3 - /tmp/fp16/metrics.jsonl /tmp/bf16/metrics.jsonl <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
for path in sys.argv[1:]:
    try:
        rows = [json.loads(line) for line in open(path)]
    except OSError as e:
        print(f"{path}: {e}")
        continue
    steps = {r["step"]: r for r in rows if "loss" in r}
    vals = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    skips = [(r["step"], r.get("skip_reason")) for r in rows if r.get("skipped")]
    print(path, "loss@1,10,20,30,40:", [round(steps[s]["loss"], 4) for s in (1, 10, 20, 30, 40) if s in steps],
          "val:", vals, "skipped:", skips)
PY
stage fp16_speedrun $((130 * LIMIT)) python3 -m gpt2lab train "${SPEEDRUN[@]}" "${SHORT[@]}" --out /tmp/fp16_speedrun \
  --set run.precision="$HALF" --set schedule.max_steps=8 --set schedule.warmup_steps=2 --set eval.every=8 \
  --set checkpoint.every=none
stage fsdp_fp16 $((80 * LIMIT)) python3 -m torch.distributed.run --standalone --nproc_per_node=1 -m gpt2lab train \
  "${FSDP[@]}" "${SHORT[@]}" --out /tmp/fsdp_fp16 --set run.parallel=fsdp --set run.precision="$HALF" \
  --set run.compile=off --set schedule.max_steps=6 --set schedule.warmup_steps=2 --set eval.every=6 \
  --set checkpoint.every=6
stage bench_small $((100 * LIMIT)) python3 -m gpt2lab bench "${SMALL[@]}" --compile on --contender gpt2lab \
  --contender hf --device "$DEVICE" --save "$OUT"
finish
