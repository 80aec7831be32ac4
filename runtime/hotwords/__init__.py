"""Hotwords: entity names (contacts, POIs, media) put into the decoder's prompt when the audio
sounds like them.

    lexicon.py    words -> phonemes of the bundle's inventory (pypinyin, CMUdict)
    strings.py    string table and range checks of loaded data, shared by the two below
    signatures.py the hashed index behind exact and tolerant retrieval (sets of key parts)
    database.py   entries grouped by pronunciation, their indexes, segments (base + changes), the file format
    updates.py    add and remove in place (`hotwords add/remove`), crash-safe
    retrieval.py  one stream's view (database + additions), one utterance's incremental lookup; the mode
    ctc.py        greedy CTC and the CTC forward score
    respell.py    spelling a span as the retrieved hint it sounds like
"""

from nim4_edge.runtime.hotwords.database import HotwordDatabase, HotwordEntry, HotwordError, parse_hotword_lines
from nim4_edge.runtime.hotwords.lexicon import Lexicon, LexiconError
from nim4_edge.runtime.hotwords.retrieval import (
                                                  HOTWORD_MODES,
                                                  Candidate,
                                                  HotwordRetriever,
                                                  LiveDatabase,
                                                  Match,
                                                  MatchSource,
                                                  Rejection,
                                                  RetrievalConfig,
                                                  RetrievalMode,
                                                  RetrievalSession,
)

__all__ = ["HOTWORD_MODES", "Candidate", "HotwordDatabase", "HotwordEntry", "HotwordError", "HotwordRetriever",
           "Lexicon", "LiveDatabase", "LexiconError", "Match", "MatchSource", "Rejection", "RetrievalConfig", "RetrievalMode",
           "RetrievalSession", "parse_hotword_lines"]
