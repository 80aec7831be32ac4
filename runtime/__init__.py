"""nim4_edge.runtime: the on-device pipeline (the bottom layer). Never imports torch or transformers.

The public API is re-exported by `nim4_edge` (nim4_edge/__init__.py).
"""

__version__ = "0.1.0"
