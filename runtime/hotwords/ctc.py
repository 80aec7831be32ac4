"""CTC on the phoneme head's output: greedy decoding as chunks arrive, and the forward score of a
label sequence (Graves et al. 2006) used to rescore respelling candidates."""

from __future__ import annotations

import numpy as np


class GreedyCtc:
    """Greedy CTC over chunks of one utterance: argmax per frame, repeats merged (also across chunk
    edges), blanks dropped."""

    def __init__(self, blank: int):
        self.blank = blank
        self.labels: list[int] = []  # all labels so far
        self._previous = blank

    def accept(self, log_probs: np.ndarray) -> list[int]:
        """log_probs (T, P) of one chunk; returns the labels it adds."""
        new = []
        for label in np.argmax(log_probs, axis=1).tolist():
            if label != self._previous and label != self.blank:
                new.append(label)
            self._previous = label
        self.labels += new
        return new

    def fork(self) -> "GreedyCtc":
        twin = GreedyCtc(self.blank)
        twin.labels, twin._previous = list(self.labels), self._previous
        return twin


def ctc_log_likelihood(log_probs: np.ndarray, labels: list[int], blank: int) -> float:
    """log P(labels | audio) under CTC: log_probs (T, P) per-frame log-softmax outputs of the phoneme
    head, labels without blanks. -inf when the labels cannot fit in T frames."""
    frames = len(log_probs)
    if not frames:
        return -np.inf
    extended = np.full(2 * len(labels) + 1, blank, dtype=np.int64)  # blank, l1, blank, l2, ..., blank
    extended[1::2] = labels
    emit = log_probs[:, extended].astype(np.float64)  # (T, S): one gather instead of one per frame
    # a skip from s-2 to s is allowed onto a label that differs from the label two places back
    skip_penalty = np.full(len(extended), -np.inf)
    skip_penalty[3::2] = np.where(extended[3::2] != extended[1:-2:2], 0.0, -np.inf)
    alpha = np.full(len(extended), -np.inf)
    alpha[:2] = emit[0, :2]
    for t in range(1, frames):
        new = alpha.copy()
        np.logaddexp(new[1:], alpha[:-1], out=new[1:])
        np.logaddexp(new[2:], alpha[:-2] + skip_penalty[2:], out=new[2:])
        new += emit[t]
        alpha = new
    return float(np.logaddexp.reduce(alpha[-2:])) if labels else float(alpha[-1])


def ctc_align(log_probs: np.ndarray, labels: list[int], blank: int) -> list[tuple[int, int, float]] | None:
    """The most likely CTC alignment (Viterbi over the same blank-extended states as the forward):
    per label, (first frame, last frame, its best frame's log-probability). None when the labels
    cannot fit in the frames."""
    frames, states = len(log_probs), 2 * len(labels) + 1
    if not labels or frames < len(labels):
        return None
    extended = np.full(states, blank, dtype=np.int64)
    extended[1::2] = labels
    emit = log_probs[:, extended].astype(np.float64)
    skip_penalty = np.full(states, -np.inf)
    skip_penalty[3::2] = np.where(extended[3::2] != extended[1:-2:2], 0.0, -np.inf)
    delta = np.full(states, -np.inf)
    delta[:2] = emit[0, :2]
    back = np.zeros((frames, states), dtype=np.int8)  # 0: stayed, 1: came from s-1, 2: skipped from s-2
    moves = np.full((3, states), -np.inf)
    columns = np.arange(states)
    for t in range(1, frames):
        moves[0] = delta
        moves[1, 1:] = delta[:-1]
        moves[2, 2:] = delta[:-2] + skip_penalty[2:]
        choice = np.argmax(moves, axis=0)
        back[t] = choice
        delta = moves[choice, columns] + emit[t]
    state = states - 1 if delta[-1] >= delta[-2] else states - 2
    if not np.isfinite(delta[state]):
        return None
    path = np.empty(frames, dtype=np.int64)
    for t in range(frames - 1, -1, -1):
        path[t] = state
        state -= back[t, state]
    spans = []
    for k in range(len(labels)):
        hit = np.flatnonzero(path == 2 * k + 1)
        spans.append((int(hit[0]), int(hit[-1]), float(emit[hit, 2 * k + 1].max())))
    return spans
