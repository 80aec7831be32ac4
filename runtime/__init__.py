"""nim4_edge.runtime: the on-device pipeline. Never imports torch or transformers."""

__version__ = "0.1.0"
