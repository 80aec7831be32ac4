"""nim4_edge.export: PyTorch reference model, checkpoints, ONNX export. Needs the `export` extra."""
