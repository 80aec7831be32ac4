"""Hotwords: entity names (contacts, POIs, media) put into the decoder's prompt when the audio
sounds like them.

    lexicon.py    words -> phonemes of the bundle's inventory (pypinyin, CMUdict)
    strings.py    string table and the automaton's safe (de)serializer, shared by the two below
    index.py      the piece index behind tolerant retrieval (keys cut in halves and thirds)
    database.py   entries grouped by pronunciation, the automaton over them, the file format
    retrieval.py  one stream's view (base + additions) and one utterance's incremental scan; the mode
    ctc.py        greedy CTC and the CTC forward score
    respell.py    spelling a span as the retrieved hint it sounds like
"""

from nim4_edge.runtime.hotwords.database import HotwordDatabase, HotwordEntry, HotwordError, parse_hotword_lines
from nim4_edge.runtime.hotwords.lexicon import Lexicon, LexiconError
from nim4_edge.runtime.hotwords.retrieval import (
                                                  HOTWORD_MODES,
                                                  Candidate,
                                                  HotwordRetriever,
                                                  Match,
                                                  MatchSource,
                                                  Rejection,
                                                  RetrievalConfig,
                                                  RetrievalMode,
                                                  RetrievalSession,
)

__all__ = ["HOTWORD_MODES", "Candidate", "HotwordDatabase", "HotwordEntry", "HotwordError", "HotwordRetriever",
           "Lexicon", "LexiconError", "Match", "MatchSource", "Rejection", "RetrievalConfig", "RetrievalMode",
           "RetrievalSession", "parse_hotword_lines"]
