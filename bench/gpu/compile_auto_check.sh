#!/usr/bin/env bash
# compile "auto" on CUDA (on for a long run where Triton is installed): the WikiText-103 recipe (gpt2-25m, fp16)
# and the RTX 4050 report's 15M model, each 300 steps eager and 300 steps with compile left to auto (the recipe's
# full schedule, so auto sees a long run), the compiled fp16 run resumed; and FSDP2 compiled on an NCCL group of
# one, which no GPU has run yet. SMOKE=1 DEVICE=cpu proves the plumbing on a CPU.
OUT="${OUT:-/tmp/gpu_compile_auto_check}" TAIL=8
source "$(dirname "$0")/common.sh"
N=300 M=400 LIMIT=1 HALF=fp16
WIKI=(--recipe gpt2-25m-wikitext103) SMALL=(--preset gpt2-15m --set run.micro_batch=64 --set schedule.max_steps=100000)
FSDP=(--preset gpt2-124m --set run.micro_batch=16)
if [ "${SMOKE:-0}" = 1 ]; then
  N=6 M=8 LIMIT=3 HALF=bf16
  TINY=(--set model.n_layer=2 --set model.n_embd=64 --set model.n_head=2 --set model.block_size=64 --set run.micro_batch=2)
  WIKI+=("${TINY[@]}") SMALL+=("${TINY[@]}") FSDP=(--preset tiny "${TINY[@]}")
fi
COMMON=(--data .gpu/data --device "$DEVICE" --set eval.batches=4 --set eval.hellaswag_every=none --set eval.every=none)
stage environment 20 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -c "import torch, importlib.util as u; print(torch.__version__, torch.version.cuda, u.find_spec(\"triton\") is not None)"'
rm -rf /tmp/wiki_eager /tmp/wiki_auto /tmp/small_eager /tmp/small_auto /tmp/fsdp_compiled
stage wikitext_eager $((60 * LIMIT)) python3 -m gpt2lab train "${WIKI[@]}" "${COMMON[@]}" --out /tmp/wiki_eager \
  --set run.precision="$HALF" --set run.compile=off --stop-at "$N"
stage wikitext_auto $((90 * LIMIT)) python3 -m gpt2lab train "${WIKI[@]}" "${COMMON[@]}" --out /tmp/wiki_auto \
  --set run.precision="$HALF" --stop-at "$N"
stage wikitext_auto $((60 * LIMIT)) python3 -m gpt2lab train "${WIKI[@]}" "${COMMON[@]}" --out /tmp/wiki_auto \
  --set run.precision="$HALF" --stop-at "$M" --resume
stage small_eager $((60 * LIMIT)) python3 -m gpt2lab train "${SMALL[@]}" "${COMMON[@]}" --out /tmp/small_eager \
  --set run.compile=off --stop-at "$N"
stage small_auto $((90 * LIMIT)) python3 -m gpt2lab train "${SMALL[@]}" "${COMMON[@]}" --out /tmp/small_auto --stop-at "$N"
stage fsdp_compiled $((120 * LIMIT)) python3 -m torch.distributed.run --standalone --nproc_per_node=1 -m gpt2lab train \
  "${FSDP[@]}" "${COMMON[@]}" --out /tmp/fsdp_compiled --set run.parallel=fsdp --set run.compile=on \
  --set schedule.max_steps=12 --set schedule.warmup_steps=2 --set checkpoint.every=6 --stop-at 6
stage fsdp_compiled $((90 * LIMIT)) python3 -m torch.distributed.run --standalone --nproc_per_node=1 -m gpt2lab train \
  "${FSDP[@]}" "${COMMON[@]}" --out /tmp/fsdp_compiled --set run.parallel=fsdp --set run.compile=on \
  --set schedule.max_steps=12 --set schedule.warmup_steps=2 --set checkpoint.every=6 --resume
# step times after the first 50 steps (compile and warm-up left out): median and the middle half's range
python3 - /tmp/wiki_eager /tmp/wiki_auto /tmp/small_eager /tmp/small_auto /tmp/fsdp_compiled <<'PY' | tee -a "$OUT/summary.txt"
import json, statistics, sys
for run in sys.argv[1:]:
    try:
        rows = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
    except OSError as e:
        print(run, e)
        continue
    times = sorted(r["step_time"] for r in rows if "step_time" in r and r["step"] > min(50, len(rows) // 2))
    q = len(times) // 4
    print(f"{run}: {len(rows)} records, step {statistics.median(times) * 1e3:.2f} ms (middle half "
          f"{times[q] * 1e3:.2f}-{times[-q - 1] * 1e3:.2f}), last loss {rows[-1].get('loss')}, "
          f"skipped {sum(1 for r in rows if r.get('skipped'))}")
PY
finish
