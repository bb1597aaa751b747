#!/bin/bash
# Every non-diffusion generator family on a demo run's clade: train-generator on RUN/data, paint RUN/targets.fasta
# (8 portraits per target), evaluate all four splits; then print the table beside the demo's own numbers.
#   bash bench/generator_families.sh RUN OUT [STEPS]      e.g. RUN = a `phenogen demo --out RUN` directory
# Results: OUT/<family>/ (train_metrics.json: minutes, images/s, diversity), OUT/<family>-gen, OUT/<family>-eval.
set -euo pipefail
RUN=${1:?usage: generator_families.sh RUN OUT [STEPS]}; OUT=${2:?usage: generator_families.sh RUN OUT [STEPS]}
STEPS=${3:-400}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
for fam in ${FAMS:-cvae gan plugin}; do
  t0=$(date +%s)
  .venv/bin/phenogen train-generator --family "$fam" --data "$RUN/data" --out "$OUT/$fam" --force --no-progress \
    --set generator.steps="$STEPS" --set generator.batch_size=32 > "$OUT/$fam.train.log" 2>&1
  t1=$(date +%s)
  .venv/bin/phenogen generate --model "$OUT/$fam" --fasta "$RUN/targets.fasta" --n 8 --out "$OUT/$fam-gen" --force \
    > "$OUT/$fam.gen.log" 2>&1
  .venv/bin/phenogen evaluate --data "$RUN/data" --generated "$OUT/$fam-gen" --out "$OUT/$fam-eval" --force \
    --set 'evaluate.splits=["train","heldout","extinct","ancestor"]' > "$OUT/$fam.eval.log" 2>&1
  echo "$fam train $((t1 - t0)) s, generate+evaluate $(($(date +%s) - t1)) s" | tee -a "$OUT/times.txt"
done
.venv/bin/python bench/generator_families_table.py "$OUT" "$RUN"
