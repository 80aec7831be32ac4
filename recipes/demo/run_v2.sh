#!/usr/bin/env bash
# Demo model v2 (issue 16): the shipped model fine-tuned on more voices, in the same stages.
# Resumable like run.sh. Needs the export and voices extras, espeak-ng, festival + its voices,
# gcin-voice (apt-get install espeak-ng festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts gcin-voice)
# and ../shared/data/fsdd. The held-out voices (piper joe, gcin speaker 3) are never read here.
#   CTC_INIT      the encoder to fine-tune (default: the shipped model, imported)
#   DECODER_FROM  a checkpoint whose adaptor + decoder start the joint stage (default: CTC_INIT's)
# A second run continues a first: WORK=work/demo3 CTC_INIT=work/demo2/ctc/checkpoint
#   DECODER_FROM=work/demo2/context/checkpoint (recipes/demo/README.md "Second run": the command as run)
set -euo pipefail
WORK=${WORK:-work/demo2}
export OMP_WAIT_POLICY=PASSIVE
if [ -z "${CTC_INIT:-}" ]; then
  # the shipped model as the starting point (its training checkpoints were not kept): exact, checked
  [ -d "$WORK/v1/checkpoint" ] || nim4-edge import bundle runtime/demo_bundle -o "$WORK/v1/checkpoint"
  CTC_INIT=$WORK/v1/checkpoint
fi
# the same texts, test set and FSDD takes as v1's corpus; training clips also from gcin speaker 5,
# festival voices and more espeak variants, with voice-change / speed / reverberation / telephone-band augmentation
[ -d "$WORK/corpus" ] || python -m nim4_edge.recipes.demo.corpus --out "$WORK/corpus" --en 4000 --zh 4000 --voices-v2
stage() {  # stage NAME STEPS [more flags]
  [ -f "$WORK/$1/done.json" ] || python -m nim4_edge.recipes.demo.train "$1" --work "$WORK" --steps "$2" "${@:3}"
}
STEPS_CTC=${STEPS_CTC:-3000} STEPS_JOINT=${STEPS_JOINT:-800} STEPS_CONTEXT=${STEPS_CONTEXT:-600} STEPS_HEAD=${STEPS_HEAD:-3000}
stage ctc "$STEPS_CTC" --init "$CTC_INIT" --lr 5e-4 --warmup 200  # encoder + head on the new voices
stage joint "$STEPS_JOINT" --init "$WORK/ctc/checkpoint" ${DECODER_FROM:+--decoder-from "$DECODER_FROM"} \
  --lr 5e-4  # adaptor + decoder on the new encoder's outputs
stage context "$STEPS_CONTEXT" --lr 5e-4
stage head "$STEPS_HEAD"
nim4-edge export "$WORK/head/checkpoint" -o "$WORK/bundle" --decoder-type f16 --verify --overwrite
