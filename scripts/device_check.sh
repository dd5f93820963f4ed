#!/usr/bin/env bash
# The device check, one command on a GPU machine (within 8 minutes): install the wheels the machine lacks
# (from .whl/, made here by scripts/fetch_device_wheels.sh), run the device tests, time the main presets
# with bench_speed.py --device cuda, and train Manywell-32 tb-expl-ls for 2,000 iterations on cuda.
# Results go under one folder: $OUT when the device tool runs it, else device_results/.
#
#   scripts/device_check.sh            # on the GPU machine, from the repository root, .whl carried
#   scripts/device_check.sh --dry-run  # anywhere: print what it would do
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
RESULTS=${OUT:-device_results}
PY=${PYTHON:-python3}
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $RESULTS/NAME.log, keep going on failure
  local name=$1 seconds=$2
  shift 2
  echo "== $name (limit ${seconds}s): $*"
  [ $DRY = 1 ] && return 0
  timeout "$seconds" "$@" > "$RESULTS/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc; last lines:"
  tail -n 5 "$RESULTS/$name.log" | sed 's/^/   /'
  echo "$name $rc" >> "$RESULTS/status.txt"
}
[ $DRY = 1 ] || mkdir -p "$RESULTS"
if [ $DRY = 0 ] && [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
step environment 60 $PY -c "import torch, gymnasium, ot; print(torch.__version__, torch.cuda.get_device_name(0), gymnasium.__version__, ot.__version__)"
step device_tests 180 $PY -m pytest -q -p no:cacheprovider tests/test_device.py
step bench_speed 150 $PY scripts/bench_speed.py --device cuda --presets tb,fl-subtb,tb-expl-lp,pis \
  --targets 25gmm,manywell32,manywell512 --iterations 20 --json "$RESULTS/bench_speed_cuda.json" \
  --ls-targets manywell32 --grad-targets none
step mw32_tb_expl_ls 240 $PY scripts/train_agent.py --env DiffSampler-Manywell-v0 --dim 32 --preset tb-expl-ls \
  --iterations 2000 --device cuda --seed 0 --no-progress --run-dir "$RESULTS/mw32-tb-expl-ls-cuda"
[ $DRY = 1 ] || cp "$RESULTS/mw32-tb-expl-ls-cuda/metrics.json" "$RESULTS/mw32_tb_expl_ls_cuda_metrics.json" 2>/dev/null
[ $DRY = 1 ] || rm -rf "$RESULTS/mw32-tb-expl-ls-cuda"  # checkpoints and events stay behind: only small files return
echo "done: $RESULTS"
