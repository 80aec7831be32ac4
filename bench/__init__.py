"""nim4_edge.bench: every measurement (one room): `eval` (evaluate.py), `bench --testset` (quant.py:
accuracy against latency per quantization), and the component benchmarks runtime, encoder, decoder,
vad, hotwords; the Orin projection (projection.py) and the table/percentile helpers (report.py).
A benchmark prints figures (JSON + a table); it never changes the model it measures."""
