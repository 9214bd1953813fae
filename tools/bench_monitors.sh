#!/bin/bash
# What the training monitors cost: the brain-tumour recipe for STEPS steps (default 1000), run
# one after another on an otherwise idle machine, in three settings of the same code:
#   bare      no kNN monitor, no periodic checkpoint, no TensorBoard (the loop alone)
#   default   the shipped defaults: kNN every log.knn_every_steps=1000 steps and at the end on
#             1000 images a side, a checkpoint every 200 steps, TensorBoard
#   per_epoch the kNN monitor as it ran before: at every epoch's end (38 steps here), 2000 a side
# It prints each run's loop wall time (summary.json: from the first step to the last, the kNN at
# step 0 excluded), the process's wall time, and each loop's speed relative to the bare one.
# Usage: tools/bench_monitors.sh [OUT_DIR] [STEPS]   (PYTHON=.venv/bin/python by default)
OUT=$(realpath -m "${1:-runs/bench_monitors}")
STEPS=${2:-1000}
PY=${PYTHON:-.venv/bin/python}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
COMMON="train.max_steps=$STEPS train.time_budget_min=0 log.progress=false"
# The preprocessing caches are built once, before any timing.
$PY -m mocomri pretrain --config configs/brain_tumor_cpu.yaml --no-resume train.out_dir=$OUT/warmup \
  train.max_steps=1 log.progress=false > $OUT/warmup.log 2>&1 || { cat $OUT/warmup.log; exit 1; }
run() {  # name, overrides
  rm -rf "$OUT/$1"
  local t0=$(date +%s.%N)
  $PY -m mocomri pretrain --config configs/brain_tumor_cpu.yaml train.out_dir=$OUT/$1 $COMMON $2 > $OUT/$1.log 2>&1 \
    || { tail -5 $OUT/$1.log; exit 1; }
  local t1=$(date +%s.%N)
  echo "$1 $(python3 -c "import json; print(json.load(open('$OUT/$1/summary.json'))['wall_time_s'])") $(python3 -c "print($t1 - $t0)")"
}
{
  run bare "log.knn_monitor=false train.checkpoint_every_steps=1000000 log.tensorboard=false"
  run default ""
  run per_epoch "log.knn_every_steps=38 log.knn_max_items=2000"
} | tee $OUT/times.txt
python3 - "$OUT/times.txt" "$STEPS" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1])]
bare = float(rows[0][1])
print(f"\n| setting ({sys.argv[2]} steps) | loop wall (s) | process wall (s) | loop speed vs bare |")
print("|---|---|---|---|")
for name, loop, proc in rows:
    print(f"| {name} | {float(loop):.1f} | {float(proc):.1f} | {bare / float(loop):.2f}x |")
PY
