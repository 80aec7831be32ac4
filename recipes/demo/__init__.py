"""The demo model: an in-car corpus (espeak-ng + FSDD), the staged training recipe, evaluation.

    python -m nim4_edge.recipes.demo.corpus --out work/demo/corpus     # transcripts, audio, features
    python -m nim4_edge.recipes.demo.train STAGE --work work/demo        # ctc, text, align, joint, context
See runtime/demo_bundle/MODEL_CARD.md for what was run and what it measured.
"""
