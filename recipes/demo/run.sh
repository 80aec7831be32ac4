#!/usr/bin/env bash
# The whole demo-model recipe, as run for the shipped bundle (see runtime/demo_bundle/MODEL_CARD.md).
# Every step is resumable: rerun this script after an interruption and finished stages are skipped.
# Needs the export extra (torch, transformers), espeak-ng, and ../shared/data/fsdd.
set -euo pipefail
WORK=${WORK:-work/demo}
export OMP_WAIT_POLICY=PASSIVE
[ -d "$WORK/corpus" ] || python -m nim4_edge.recipes.demo.corpus --out "$WORK/corpus" --en 4000 --zh 4000
stage() {  # stage NAME STEPS [more flags]
  [ -f "$WORK/$1/done.json" ] || python -m nim4_edge.recipes.demo.train "$1" --work "$WORK" --steps "$2" "${@:3}"
}
stage ctc 9000 --max-frames 3000
stage text 1000
stage align 600 --max-frames 4000
stage joint 1500 --max-frames 3000
stage context 800 --max-frames 4000
