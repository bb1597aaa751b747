#!/usr/bin/env bash
# The README's real-data example end to end, on a small BIOSCAN-5M-format tree (examples/make_bioscan_like.py):
# BIOSCAN-5M layout -> dataset -> train-lm -> train-image -> generate -> evaluate (photo scores) -> report.
# Usage: bash examples/real_data.sh OUT [extra train-image --set ...]   (timed: BENCHMARKS.md)
set -euo pipefail
OUT=${1:?usage: bash examples/real_data.sh OUT}
shift
PG=${PHENOGEN:-phenogen}
mkdir -p "$OUT"
t0=$(date +%s)
step() { echo "[$(( $(date +%s) - t0 )) s] $*" >&2; }
step "BIOSCAN-5M-format tree";  python "$(dirname "$0")/make_bioscan_like.py" --out "$OUT/bioscan" --species 12 --per-species 8
step "import";     $PG import bioscan5m --root "$OUT/bioscan" --out "$OUT/data" --set 'import.bioscan_splits=["train","test"]'
step "train-lm";   $PG train-lm --data "$OUT/data" --out "$OUT/lm" --set lm.preset='"tiny"' --set lm.epochs=8 --no-progress
step "train-image"; $PG train-image --data "$OUT/data" --out "$OUT/image" --set image.encoder='"gpt2"' \
    --set image.lm_model="$OUT/lm/model" --set image.max_steps=400 --set image.vae_steps=600 --no-progress "$@"
awk '/^>/ {keep = / split=heldout/} keep' "$OUT/data/sequences.fasta" > "$OUT/heldout.fasta"
step "generate";   $PG generate --model "$OUT/image/pipeline" --fasta "$OUT/heldout.fasta" --out "$OUT/generated" --n 2
step "evaluate";   $PG evaluate --data "$OUT/data" --generated "$OUT/generated" --out "$OUT/eval" \
    --set 'evaluate.splits=["heldout"]' --set 'evaluate.photo_ranks=["genus","family","order"]'
step "report";     $PG report --run "$OUT"
step "done"
