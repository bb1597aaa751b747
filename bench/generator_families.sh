#!/bin/bash
# Every non-diffusion generator family on a demo run's clade, at the demo's image budget: train-generator on
# RUN/data (675 steps of 32 images = demo.toml's 45 epochs of 15 batches), paint RUN/targets.fasta (8 portraits
# per target, as the demo), evaluate all four splits; then print the table beside the demo's own numbers.
#   bash bench/generator_families.sh RUN [STEPS]      RUN = a `phenogen demo --out RUN` directory
# Results: RUN/families/<name>/model (train_metrics.json: minutes, images/s, diversity), generated/ (timing.json),
# eval/ — the layout `phenogen report --run RUN` shows as its "Generator families" table.
#   FAMS="cvae gan"   which families (default cvae gan plugin)
#   NAME=gan-ttur SETS='--set generator.params={betas=[0.0,0.9],n_critic=5}'   a variant under its own name
set -euo pipefail
RUN=${1:?usage: generator_families.sh RUN [STEPS]}
STEPS=${2:-675}
cd "$(dirname "$0")/.."
for fam in ${FAMS:-cvae gan plugin}; do
  name=${NAME:-$fam}
  dir="$RUN/families/$name"
  mkdir -p "$dir"
  t0=$(date +%s)
  # shellcheck disable=SC2086  # SETS holds several words on purpose
  .venv/bin/phenogen train-generator --family "$fam" --data "$RUN/data" --out "$dir/model" --force --no-progress \
    --set generator.steps="$STEPS" --set generator.batch_size=32 ${SETS:-} > "$dir/train.log" 2>&1
  t1=$(date +%s)
  .venv/bin/phenogen generate --model "$dir/model" --fasta "$RUN/targets.fasta" --n 8 --out "$dir/generated" \
    --force > "$dir/generate.log" 2>&1
  .venv/bin/phenogen evaluate --data "$RUN/data" --generated "$dir/generated" --out "$dir/eval" --force \
    --set 'evaluate.splits=["train","heldout","extinct","ancestor"]' > "$dir/evaluate.log" 2>&1
  echo "$name train $((t1 - t0)) s, generate+evaluate $(($(date +%s) - t1)) s" | tee -a "$RUN/families/times.txt"
done
.venv/bin/python bench/generator_families_table.py "$RUN"
