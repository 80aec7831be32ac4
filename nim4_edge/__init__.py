"""nim4-edge: streaming LLM speech recognition (NIM4-ASR architecture) on Jetson Orin and CPUs.

    from nim4_edge import Recognizer, RecognizerConfig, demo_bundle

    with Recognizer(RecognizerConfig(bundle=demo_bundle())) as recognizer:
        print(recognizer.transcribe("examples/en_temperature.wav").text)

`recognizer_config(bundle, plan, overrides)` gives the configuration `nim4-edge listen` would run on
this machine (device profile, variants, threads); a RecognizerConfig built by hand runs exactly what
it says. docs/API.md has the whole surface.
"""

from nim4_edge.devices.config import Overrides, current_plan, recognizer_config
from nim4_edge.runtime import __version__
from nim4_edge.runtime.bundle import Bundle, resolve_bundle
from nim4_edge.runtime.decoder import DecoderError, DecoderSettings
from nim4_edge.runtime.endpoint import EndpointConfig
from nim4_edge.runtime.errors import BundleError, Nim4Error, Nim4RuntimeError
from nim4_edge.runtime.hotwords import HotwordEntry, HotwordError, LexiconError, RetrievalConfig, RetrievalMode
from nim4_edge.runtime.hotwords.updates import update_database
from nim4_edge.runtime.recognizer import Event, Recognizer, RecognizerConfig, Stream, Timings, Transcript
from nim4_edge.runtime.vad import VadConfig
from nim4_edge.runtime.words import Word


def demo_bundle():
    """The folder of the shipped demo model (or $NIM4_EDGE_BUNDLE when set)."""
    return resolve_bundle(None)


__all__ = ["Bundle", "BundleError", "DecoderError", "DecoderSettings", "EndpointConfig", "Event", "HotwordEntry",
           "HotwordError", "LexiconError", "Nim4Error", "Nim4RuntimeError", "Overrides", "Recognizer",
           "RecognizerConfig", "RetrievalConfig", "RetrievalMode", "Stream", "Timings", "Transcript", "VadConfig",
           "Word", "__version__", "current_plan", "demo_bundle", "recognizer_config", "resolve_bundle", "update_database"]
