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
# The stages' defaults (train.py DEFAULTS) are the settings used for the shipped bundle.
stage ctc 15000
stage text 1500
stage align 800      # builds WORK/encoded (the frozen encoder's outputs) first: ~3 min
stage joint 2400
stage context 2000
stage head 6000      # the phoneme head alone on the cached encoder outputs: ~5 min
nim4-edge export "$WORK/head/checkpoint" -o "$WORK/bundle" --decoder-type f16 --verify --overwrite
# the shipped bundle also holds: nim4-edge quantize "$WORK/bundle" --encoder int8-dynamic,int8-qdq \
#   --calibration <40 FSDD train takes> --decoder Q4_K_M   (runtime/demo_bundle/MODEL_CARD.md)
