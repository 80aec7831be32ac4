"""The Qwen3-ASR family: a public LLM-ASR model run by the same runtime (issue 20).

Its audio encoder differs from NIM4's (Whisper-style log-mel, a conv front end per 1 s chunk, attention
block-diagonal over 8 s windows, no phoneme head); its decoder is a plain Qwen3 text model, so the
GGUF converter and the decoder session are shared. This package holds what differs:

    features.py   the 128-bin log-mel front end, offline and streaming, in numpy (no torch)
    manifest.py   the bundle manifest of this family (encoder geometry, graphs, prompt)
    encoder.py    the windowed encoder on onnxruntime: completed 8 s windows final, the current one
                  recomputed as audio arrives
"""
