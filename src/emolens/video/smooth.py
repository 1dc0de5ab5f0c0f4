"""Smoothing each track's emotion probabilities over time, so labels do not flicker frame to frame.

Two rules, one interface (``update(track_id, probs) -> smoothed``, ``forget(track_id)``):

- ``EmaSmoother(alpha)``: exponential moving average; each new reading weighs ``alpha``, so the
  memory is about ``1 / alpha`` readings (alpha 1 = no smoothing).
- ``WindowSmoother(k)``: the plain mean of the last ``k`` readings; forgets sharply after k.

Smoothing runs per reading, not per second: at 30 FPS alpha 0.3 remembers ~0.1 s, at the
browser's ~5 frames a second ~0.6 s. Probabilities stay probabilities (both rules average
distributions, so they still sum to 1).
"""

from __future__ import annotations

from collections import deque

import numpy as np

DEFAULT_ALPHA = 0.3


class Smoother:
    """Per-track smoothing of probability vectors."""

    def update(self, track_id: int, probs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forget(self, track_id: int) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class EmaSmoother(Smoother):
    def __init__(self, alpha: float = DEFAULT_ALPHA):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"smoothing alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self._state: dict[int, np.ndarray] = {}

    def update(self, track_id: int, probs: np.ndarray) -> np.ndarray:
        p = np.asarray(probs, np.float64)
        prev = self._state.get(track_id)
        s = p if prev is None else self.alpha * p + (1.0 - self.alpha) * prev
        self._state[track_id] = s
        return s.copy()

    def forget(self, track_id: int) -> None:
        self._state.pop(track_id, None)

    def reset(self) -> None:
        self._state.clear()

    def describe(self) -> str:
        return "none" if self.alpha == 1.0 else f"EMA alpha={self.alpha:g}"


class WindowSmoother(Smoother):
    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"smoothing window must be at least 1, got {window}")
        self.window = int(window)
        self._state: dict[int, deque] = {}

    def update(self, track_id: int, probs: np.ndarray) -> np.ndarray:
        q = self._state.setdefault(track_id, deque(maxlen=self.window))
        q.append(np.asarray(probs, np.float64))
        return np.mean(q, axis=0)

    def forget(self, track_id: int) -> None:
        self._state.pop(track_id, None)

    def reset(self) -> None:
        self._state.clear()

    def describe(self) -> str:
        return "none" if self.window == 1 else f"mean of last {self.window}"


def make_smoother(
    alpha: float | None = None, window: int | None = None, *, default_alpha: float = DEFAULT_ALPHA
) -> Smoother:
    """``window`` (a mean of the last k readings) when given, else EMA with ``alpha`` (default:
    ``default_alpha``, which ``VideoAnalyzer`` takes from the ``video_smoothing`` setting)."""
    if alpha is not None and window:
        raise ValueError("give a smoothing alpha or a window, not both")
    if window:
        return WindowSmoother(window)
    return EmaSmoother(default_alpha if alpha is None else alpha)
