"""Errors the CLI turns into one line and exit code 2. Library code raises these; only the CLI prints."""


class Nim4Error(Exception):
    """A problem with the user's input that the message explains, including how to fix it."""


class CheckpointError(Nim4Error):
    """A checkpoint directory that is incomplete or inconsistent."""


class BundleError(Nim4Error):
    """A bundle that is missing, incomplete, tampered with, or does not match its manifest."""
