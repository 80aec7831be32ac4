"""The errors nim4-edge raises on purpose. Library code raises them; only the CLI prints, as one line
with the exit code the error carries:

    Nim4Error          bad input (a file, a flag, an argument): the message names the problem and the fix  -> 2
      CheckpointError, BundleError, AudioError, HotwordError, ...
    Nim4RuntimeError   the input was fine but the run failed (decoder context full, llama_decode failed)  -> 1
"""

EXIT_RUNTIME_FAILURE = 1
EXIT_BAD_INPUT = 2


class Nim4Error(Exception):
    """A problem with the user's input that the message explains, including how to fix it."""

    exit_code = EXIT_BAD_INPUT


class Nim4RuntimeError(Nim4Error):
    """A failure while running on valid input (the model or a library failed); exit code 1."""

    exit_code = EXIT_RUNTIME_FAILURE


class CheckpointError(Nim4Error):
    """A checkpoint directory that is incomplete or inconsistent."""


class BundleError(Nim4Error):
    """A bundle that is missing, incomplete, tampered with, or does not match its manifest."""
