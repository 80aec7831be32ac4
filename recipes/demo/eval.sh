#!/usr/bin/env bash
# The demo model's evaluation, as reported in runtime/demo_bundle/MODEL_CARD.md.
#   BUNDLE (default runtime/demo_bundle), WORK (default work/demo; needs WORK/corpus from run.sh)
set -euo pipefail
WORK=${WORK:-work/demo}
BUNDLE=${BUNDLE:-runtime/demo_bundle}
TEST=$WORK/corpus/test/test.jsonl
OUT=${OUT:-$WORK/eval}
mkdir -p "$OUT"
[ -f "$WORK/distractors-1m.txt" ] || python -c "
from nim4_edge.bench.hotwords import generate_entries
open('$WORK/distractors-1m.txt', 'w').write('\n'.join(generate_entries(1_000_000, seed=0)) + '\n')"
MODE=${MODE:-tolerant+text}  # hotword retrieval of the shipped configuration (README: Hotwords)
# 1. everything, streaming and offline, with the test set's hotwords (contacts and POIs) as the database
nim4-edge eval --bundle "$BUNDLE" --testset "$TEST" --manifest-hotwords --hotwords-mode "$MODE" \
  --out "$OUT/hotwords.json" > "$OUT/hotwords.stdout"
# 2. the entity utterances without any hotword database
nim4-edge eval --bundle "$BUNDLE" --testset "$TEST" --tags contact,poi --modes streaming --out "$OUT/no-hotwords.json" > "$OUT/no-hotwords.stdout"
# 3. the same with a million generated entries added to the database
nim4-edge eval --bundle "$BUNDLE" --testset "$TEST" --tags contact,poi --modes streaming --manifest-hotwords \
  --hotwords-mode "$MODE" --extra-hotwords "$WORK/distractors-1m.txt" --out "$OUT/hotwords-1m.json" > "$OUT/hotwords-1m.stdout"
# 4. what the decoder does by itself with the hints: respelling off
nim4-edge eval --bundle "$BUNDLE" --testset "$TEST" --tags contact,poi --modes streaming --manifest-hotwords \
  --hotwords-mode "$MODE" --no-respell --out "$OUT/hotwords-no-respell.json" > "$OUT/hotwords-no-respell.stdout"
