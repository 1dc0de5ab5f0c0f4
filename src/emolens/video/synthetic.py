"""Test clips made from real face photos: faces pasted onto a background, moving on known paths.

The tests and the benchmark need video whose truth is known (how many people, where each one is
in every frame) without shipping video files: ``compose_clip`` writes one from any face photos.

>>> truth = compose_clip("clip.mp4", [face_a, face_b], starts=[(40, 60), (400, 260)],
...                      ends=[(300, 80), (120, 240)], frames=60)
>>> truth.shape  # (frames, faces, 4): each pasted photo's x1, y1, x2, y2 in every frame
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

ASTRONAUT = Path(__file__).parents[1] / "assets" / "examples" / "astronaut.jpg"
ASTRONAUT_FACE = (125, 25, 325, 225)  # a square around the face in the 512x512 photo (x1, y1, x2, y2)


def face_patch(image: np.ndarray, square: tuple[int, int, int, int] | None, side: int) -> np.ndarray:
    """The ``square`` of an RGB photo (default: the central 60%) resized to ``side`` pixels."""
    h, w = image.shape[:2]
    if square is None:
        m = int(min(h, w) * 0.2)
        square = (m, m, w - m, h - m)
    x1, y1, x2, y2 = square
    return cv2.resize(image[y1:y2, x1:x2], (side, side), interpolation=cv2.INTER_AREA)


def astronaut_patch(side: int = 140, mirror: bool = False) -> np.ndarray:
    from emolens.image.io import load_image

    patch = face_patch(load_image(ASTRONAUT), ASTRONAUT_FACE, side)
    return patch[:, ::-1].copy() if mirror else patch


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A still, softly textured RGB background: gradients plus blurred noise, like a plain room."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([90 + 60 * xx / width, 110 + 40 * yy / height, 100 + 30 * (xx + yy) / (width + height)], -1)
    noise = cv2.GaussianBlur(rng.normal(0, 25, (height, width, 3)).astype(np.float32), (0, 0), 3)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def paths(starts, ends, frames: int, wobble: float = 0.0) -> np.ndarray:
    """Top-left corners (frames, faces, 2) moving linearly from ``starts`` to ``ends``, with an
    optional vertical sine ``wobble`` (pixels) so motion is not perfectly constant."""
    s, e = np.asarray(starts, np.float64), np.asarray(ends, np.float64)
    t = np.linspace(0.0, 1.0, frames)[:, None, None]
    pos = s[None] + t * (e - s)[None]
    if wobble:
        phase = np.arange(len(s))[None, :] * 1.3
        pos[..., 1] += wobble * np.sin(2 * np.pi * 2 * t[..., 0] + phase)
    return pos


def render(bg: np.ndarray, patches: list[np.ndarray], corners: np.ndarray) -> np.ndarray:
    """One RGB frame: each patch pasted at its top-left corner (clipped at the edges)."""
    frame = bg.copy()
    H, W = frame.shape[:2]
    for patch, (x, y) in zip(patches, corners, strict=True):
        x, y = int(round(x)), int(round(y))
        ph, pw = patch.shape[:2]
        fx1, fy1, fx2, fy2 = max(x, 0), max(y, 0), min(x + pw, W), min(y + ph, H)
        if fx2 > fx1 and fy2 > fy1:
            frame[fy1:fy2, fx1:fx2] = patch[fy1 - y : fy2 - y, fx1 - x : fx2 - x]
    return frame


def compose_clip(
    path: str | Path,
    patches: list[np.ndarray],
    starts,
    ends,
    frames: int = 60,
    size: tuple[int, int] = (640, 480),
    fps: float = 25.0,
    wobble: float = 0.0,
    fourcc: str = "mp4v",
    seed: int = 0,
) -> np.ndarray:
    """Write the clip; returns each patch's box (frames, faces, 4) as x1, y1, x2, y2."""
    w, h = size
    corners = paths(starts, ends, frames, wobble)
    bg = background(w, h, seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {fourcc} to {path}")
    try:
        for k in range(frames):
            writer.write(cv2.cvtColor(render(bg, patches, corners[k]), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    sides = np.array([[p.shape[1], p.shape[0]] for p in patches], np.float64)
    return np.concatenate([corners, corners + sides[None]], axis=-1)
