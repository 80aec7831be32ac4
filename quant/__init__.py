"""nim4_edge.quant: encoder FP16/INT8, GGUF quant levels, accuracy-versus-latency benchmark."""
