#!/bin/bash
# End-to-end pretraining throughput on brain-tumor-mri (ResNet-18 width 32, 64 px, batch 128,
# fp32 + channels-last) by DataLoader workers, torch threads and OpenMP wait policy: 40 steps
# each; the images/s and data-wait fraction of steps 21-40 (metrics.jsonl) are printed.
# Usage: tools/bench_pretrain_loop.sh [OUT_DIR]   (PYTHON=.venv/bin/python to pick the interpreter)
OUT=$(realpath -m "${1:-runs/loop}")
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
run() {  # name, "ENV=..", "section.key=value ..."
  rm -rf $OUT/$1
  env $2 ${PYTHON:-python} -m mocomri pretrain --config configs/brain_tumor_cpu.yaml --out $OUT/$1 \
    train.max_steps=40 train.time_budget_min=0 log.progress=false log.knn_monitor=false \
    train.checkpoint_every_steps=1000 $3 > $OUT/$1.log 2>&1
  python3 -c "
import json
rows=[json.loads(l) for l in open('$OUT/$1/metrics.jsonl')]
rows=[r for r in rows if r.get('kind')=='train' and r['step']>20]
print('$1', [round(r['images_per_s'],1) for r in rows], [round(r['data_wait_frac'],2) for r in rows])"
}
run workers2 "X=1" ""
run workers0 "X=1" "data.num_workers=0"
run workers2_passive "OMP_WAIT_POLICY=PASSIVE" ""
run workers1_threads1 "OMP_NUM_THREADS=1" "data.num_workers=1"
