"""nim4_edge.serve: the recognizer as a network service for programs in any language.

    server.py   `nim4-edge serve`: one process, one loaded model, many streams; token, TLS, limits
    riva.py     NVIDIA Riva's RivaSpeechRecognition gRPC service (messages from nvidia-riva-client)

Needs the `serve` extra (grpcio, nvidia-riva-client); never imports torch.
"""
