# Sourced by the GPU scripts here (first_run.sh, compile_check.sh, ranks_check.sh): the project root as the working
# folder, $OUT made, the carried wheels (.whl, bench/gpu/fetch_wheels.sh) installed, gpt2lab importable, and
# `stage NAME SECONDS COMMAND...`: run a command under its own time limit into $OUT/NAME.log (appended), show its
# tail, note its exit status in $OUT/summary.txt, and set status=1 when it fails (the next stage still runs).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-/tmp/gpu_run}"
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then  # pydantic and its needs: the device image lacks them and fetches nothing
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
DEVICE="${DEVICE:-auto}"
status=0
stage() {
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$OUT/summary.txt"
  timeout "$limit" "$@" >> "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n "${TAIL:-25}" "$OUT/$name.log"
  echo "=== $name: exit $rc" | tee -a "$OUT/summary.txt"
  [ $rc -eq 0 ] || status=1
}
finish() {
  echo "overall: $([ $status -eq 0 ] && echo PASS || echo FAIL)" | tee -a "$OUT/summary.txt"
  exit $status
}
