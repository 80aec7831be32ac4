"""nim4_edge.devices: device profiles (Jetson Orin, x86 CPU/CUDA), detection, provider choice."""
