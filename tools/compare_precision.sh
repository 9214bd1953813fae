#!/bin/bash
# bf16 autocast vs fp32: the same 200-step MoCo pretraining on brain-tumor-mri (same seed, data
# order and augmentations), each probed on frozen features (fp32 extraction).
# Usage: tools/compare_precision.sh [OUT_DIR]   (PYTHON=.venv/bin/python to pick the interpreter)
set -e
OUT=$(realpath -m "${1:-runs/precision}")
cd "$(dirname "$0")/.."
for p in fp32 bf16; do
  ${PYTHON:-python} -m mocomri pretrain --config configs/brain_tumor_cpu.yaml --out $OUT/$p \
      train.precision=$p train.max_steps=200 train.time_budget_min=0 log.progress=false
  ${PYTHON:-python} -m mocomri probe --encoder $OUT/$p --manifest data_manifests/brain_tumor_mri.csv \
      --label-fractions 0.1,1.0 --seeds 2 --no-raw-pixels --out $OUT/$p/probe
done
