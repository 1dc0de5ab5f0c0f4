"""Results in the Ultralytics manner: per image, a list of faces; plot, save, JSON, table.

A face is one record (``FaceResult``) everywhere: the same fields, under the same names, in
``Results``, the command line's JSON and CSV, the REST API and ``emolens batch``'s Parquet. Its
JSON form is ``FaceRecord``, whose JSON Schema the documentation publishes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from emolens.classify.modelfile import UNCERTAIN, decide
from emolens.classify.rules import answer as rules_answer
from emolens.image.quality import MIN_QUALITY

# One colour per emotion (RGB), so a glance at an annotated image reads the mood of a room.
COLORS = {
    "angry": (220, 40, 40),
    "disgust": (120, 160, 30),
    "fear": (150, 60, 200),
    "happy": (250, 190, 0),
    "neutral": (160, 160, 160),
    "sad": (40, 110, 220),
    "surprise": (0, 200, 200),
    "contempt": (200, 100, 40),
}


# Why a face is "uncertain" when its quality is too low: the weakest factor of ``emolens.image.quality``, in words.
QUALITY_REASONS = {
    "size": "too small",
    "sharpness": "blurry",
    "noise": "noisy",
    "exposure": "too dark or too bright",
    "contrast": "low contrast",
}


class FaceRecord(BaseModel):
    """One face as JSON: ``FaceResult.to_dict()``, ``emolens analyze --json``, the REST API. Every
    field is always present (null when it does not apply), in this order."""

    index: int | None = Field(description="The face's number in its image, from 0; what --face and feedback take")
    box: list[float | None] = Field(description="x1, y1, x2, y2 in image pixels")
    score: float | None = Field(description="Detection score")
    landmarks: list[list[float | None]] | None = Field(description="Five points (x, y): eyes, nose, mouth corners")
    label: str | None = Field(
        description='The answer: an emotion, or "uncertain" (see reason); null when the face could not be classified'
    )
    top_label: str | None = Field(description="The most probable emotion, whatever the answer")
    confidence: float | None = Field(description="The top probability")
    uncertain: bool = Field(description='True when label is "uncertain"')
    reason: str | None = Field(
        description="Why the label is not a plain emotion: the face is blurry, too small, noisy, too dark or too "
        "bright, of low contrast, or below the model's threshold; or why it could not be classified"
    )
    rule: str | None = Field(description="The model's post-processing rule that gave the label, if one did")
    probs: dict[str, float] = Field(description="Every emotion of the model and its probability")
    quality: dict[str, float] | None = Field(
        description='How readable the face is: "score" in [0, 1], the least of its factors (size, sharpness, '
        'noise, exposure, contrast); below 0.1 the label is "uncertain"'
    )
    error: str | None = Field(description="Set when this face could not be classified; other faces are unaffected")
    track_id: int | None = Field(description="Video: the same person keeps the same id from frame to frame")
    raw_probs: dict[str, float] | None = Field(description="Video: this frame's reading, before smoothing")


@dataclass
class FaceResult:
    box: np.ndarray  # x1, y1, x2, y2 in image pixels
    score: float  # detection score
    landmarks: np.ndarray | None
    probs: dict[str, float] = field(default_factory=dict)  # emotion -> probability
    error: str | None = None  # set when this face could not be classified; others are unaffected
    track_id: int | None = None  # video: the same person keeps the same id from frame to frame
    raw_probs: dict[str, float] | None = None  # video: this frame's reading, before smoothing over time
    thresholds: dict[str, float] | None = field(default=None, repr=False)  # the model's per-class thresholds
    rules: list | None = field(default=None, repr=False)  # the model's post-processing rules
    quality: dict[str, float] | None = None  # how readable the face is (emolens.image.quality): "score" and its factors
    index: int | None = None  # its number in its image (Results numbers its faces from 0)

    @property
    def label(self) -> str | None:
        """The top emotion, or "uncertain" when the model has per-class thresholds and the top
        probability is below its class's threshold, or when the face's quality score is below
        ``emolens.image.quality.MIN_QUALITY`` (``probs`` and ``confidence`` stay as they are); a
        post-processing rule of the model may answer another label (see ``rule``)."""
        if self.probs and self.quality is not None and self.quality["score"] < MIN_QUALITY:
            return UNCERTAIN
        return decide(self.probs, self.thresholds, self.rules)

    @property
    def rule(self) -> str | None:
        """The post-processing rule that gave ``label``, in its text form, or None."""
        if not (self.rules and self.probs) or self.uncertain:
            return None
        fired = rules_answer(self.probs, self.rules)[1]
        return None if fired is None else str(fired)

    @property
    def top_label(self) -> str | None:
        """The most probable emotion, whatever the thresholds say."""
        return max(self.probs, key=self.probs.get) if self.probs else None

    @property
    def uncertain(self) -> bool:
        return self.label == UNCERTAIN

    @property
    def low_quality(self) -> bool:
        return bool(self.probs) and self.quality is not None and self.quality["score"] < MIN_QUALITY

    @property
    def reason(self) -> str | None:
        """Why ``label`` is not a plain emotion, in a few words: the weakest quality factor of a face
        too poor to read ("blurry", "too small"...), the model's threshold the face fell below, or
        the error that kept it from being classified; None for a confident answer."""
        if self.error:
            return self.error
        if not self.uncertain:
            return None
        if self.low_quality:
            factors = {k: v for k, v in self.quality.items() if k != "score"}
            weakest = min(factors, key=factors.get) if factors else ""
            return QUALITY_REASONS.get(weakest, "poor image quality")
        top = self.top_label
        threshold = (self.thresholds or {}).get(top)
        return f"below the model's threshold for {top}" + (f" ({threshold:.0%})" if threshold is not None else "")

    @property
    def caption(self) -> str | None:
        """The answer as shown: "happy 87%", or "uncertain: blurry (happy 81%)" with its reason."""
        if not self.probs:
            return None
        text = f"{self.top_label} {self.confidence:.0%}"
        return f"{UNCERTAIN}: {self.reason} ({text})" if self.uncertain else text

    @property
    def confidence(self) -> float | None:
        return max(self.probs.values()) if self.probs else None

    def __repr__(self) -> str:
        box = ", ".join("nan" if not np.isfinite(v) else f"{float(v):.0f}" for v in self.box)
        what = self.caption or (f"error: {self.error}" if self.error else "no emotion")
        track = "" if self.track_id is None else f"track {self.track_id}, "
        return f"FaceResult({track}box=[{box}], {what})"

    def to_dict(self) -> dict:
        """The face as a ``FaceRecord``: every field, always, in the schema's order."""
        return {
            "index": self.index,
            "box": [_num(v, 1) for v in self.box],
            "score": _num(self.score, 4),
            "landmarks": None if self.landmarks is None else [[_num(v, 1) for v in p] for p in self.landmarks],
            "label": self.label,
            "top_label": self.top_label,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "uncertain": self.uncertain,
            "reason": self.reason,
            "rule": self.rule,
            "probs": {k: round(v, 4) for k, v in self.probs.items()},
            "quality": self.quality,
            "error": self.error,
            "track_id": self.track_id,
            "raw_probs": {k: round(v, 4) for k, v in self.raw_probs.items()} if self.raw_probs else None,
        }

    def to_row(self) -> dict:
        """The face as one flat row (CSV, Parquet): the record's names, the box as x1..y2, the
        landmarks as ten numbers (x, y of each point), quality as its score, p_EMOTION per emotion."""
        d = self.to_dict()
        box, landmarks, probs, quality = d.pop("box"), d.pop("landmarks"), d.pop("probs"), d.pop("quality")
        del d["raw_probs"]  # a row holds one reading
        return {
            "index": d.pop("index"),
            "track_id": d.pop("track_id"),
            **dict(zip(("x1", "y1", "x2", "y2"), box, strict=True)),
            "score": d.pop("score"),
            "landmarks": None if landmarks is None else [v for point in landmarks for v in point],
            **d,
            "quality": None if quality is None else quality["score"],
            **{f"p_{k}": v for k, v in probs.items()},
        }


def _num(v, digits: int) -> float | None:
    """A rounded float, or None for NaN/inf so JSON output stays strict."""
    v = float(v)
    return round(v, digits) if np.isfinite(v) else None


@dataclass
class Results:
    """The analysis of one image."""

    faces: list[FaceResult]
    image: np.ndarray | None = None  # RGB uint8, kept so .plot() needs no second decode
    source: str = ""
    model: str = ""
    detector: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)
    width: int | None = None  # taken from the image; kept when the image is dropped to save memory
    height: int | None = None
    frame_index: int | None = None  # video: the frame's position in its source
    timestamp: float | None = None  # video: seconds from the start of the source
    members: list[dict] | None = None  # an ensemble (or TTA): each member's name, version, hash and weight

    def __post_init__(self) -> None:
        if self.image is not None and self.width is None:
            self.height, self.width = self.image.shape[:2]
        for i, f in enumerate(self.faces):  # faces are numbered in their image, from 0
            f.index = i

    def __len__(self) -> int:
        return len(self.faces)

    def __iter__(self):
        return iter(self.faces)

    def __getitem__(self, i: int) -> FaceResult:
        return self.faces[i]

    @property
    def labels(self) -> list[str | None]:
        return [f.label for f in self.faces]

    def __repr__(self) -> str:
        # The image array would flood the terminal: say what the analysis found instead.
        size = f"{self.width}x{self.height}, " if self.width else ""
        n = len(self.faces)
        faces = ", ".join(f.caption or "error" for f in self.faces[:5]) + (", ..." if n > 5 else "")
        return f"Results({self.source or 'image'}: {size}{n} face{'s' if n != 1 else ''}{': ' + faces if n else ''})"

    def summary(self) -> str:
        """One line; faces are numbered as on the annotated image (the index ``--face`` takes)."""
        if not self.faces:
            return f"{self.source or 'image'}: no face found"
        parts = [f"[{i}] {f.caption or f'error ({f.error})'}" for i, f in enumerate(self.faces)]
        n = len(self.faces)
        return f"{self.source or 'image'}: {n} face{'s' if n != 1 else ''}: " + ", ".join(parts)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "width": self.width,
            "height": self.height,
            "model": self.model,
            "detector": self.detector,
            "faces": [f.to_dict() for f in self.faces],
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            **({"members": self.members} if self.members else {}),
            **({"frame_index": self.frame_index} if self.frame_index is not None else {}),
            **({"timestamp": round(self.timestamp, 4)} if self.timestamp is not None else {}),
        }

    def to_state(self) -> dict:
        """Everything but the pixels, exactly (no rounding), as JSON-able data: what a server keeps
        so that feedback on a face later crops the very same face (``from_state`` reads it back)."""

        def face(f: FaceResult) -> dict:
            return {
                "box": np.asarray(f.box, np.float64).tolist(),
                "score": float(f.score),
                "landmarks": None if f.landmarks is None else np.asarray(f.landmarks, np.float64).tolist(),
                "probs": {k: float(v) for k, v in f.probs.items()},
                "error": f.error,
                "track_id": f.track_id,
                "thresholds": f.thresholds,
                "rules": None if f.rules is None else [r.to_dict() for r in f.rules],
                "quality": f.quality,
                "index": f.index,
            }

        return {**{k: v for k, v in self.to_dict().items() if k != "faces"}, "faces": [face(f) for f in self.faces]}

    @classmethod
    def from_state(cls, d: dict) -> Results:
        """Results from ``to_state()``, without the image."""
        from emolens.classify.rules import parse_rule

        faces = [
            FaceResult(
                box=np.asarray(f["box"], np.float32),
                score=f["score"],
                landmarks=None if f.get("landmarks") is None else np.asarray(f["landmarks"], np.float32),
                probs=dict(f.get("probs") or {}),
                error=f.get("error"),
                track_id=f.get("track_id"),
                thresholds=f.get("thresholds"),
                rules=None if f.get("rules") is None else [parse_rule(r) for r in f["rules"]],
                quality=f.get("quality"),
            )
            for f in d.get("faces", [])
        ]
        keys = ("source", "model", "members", "detector", "timings_ms", "width", "height", "frame_index", "timestamp")
        return cls(faces=faces, **{k: d[k] for k in keys if k in d})

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_rows(self) -> list[dict]:
        """One flat row per face (``FaceResult.to_row`` after the image's ``source``, and ``frame``
        and ``time_s`` for video); an image without faces gives one row with ``index`` None."""
        image = {"source": self.source}
        if self.frame_index is not None:
            image["frame"] = self.frame_index
        if self.timestamp is not None:
            image["time_s"] = round(self.timestamp, 4)
        if not self.faces:
            return [{**image, "index": None}]
        return [{**image, **f.to_row()} for f in self.faces]

    def to_pandas(self):
        from emolens.core.errors import require

        return require("pandas", "pandas").DataFrame(self.to_rows())

    def plot(self, landmarks: bool = True) -> np.ndarray:
        """An annotated copy of the image (RGB uint8): boxes coloured by emotion, label and confidence.

        Each face is numbered (``0: happy 87%``) as in ``summary()`` and the web page, so a face can
        be named for feedback; video faces carry their track id instead (``#3 happy 87%``)."""
        from emolens.image.draw import draw_faces

        if self.image is None:
            raise ValueError("this result holds no image to draw on")
        texts = [
            f"{i}: {f.caption or '?'}" if f.track_id is None else f"#{f.track_id} {f.caption or '?'}"
            for i, f in enumerate(self.faces)
        ]
        return draw_faces(
            self.image.copy(),
            [f.box for f in self.faces],
            texts,
            [COLORS.get(f.label or "", (255, 255, 255)) for f in self.faces],
            [f.landmarks for f in self.faces] if landmarks else None,
        )

    def save(self, path: str | Path) -> Path:
        """Write the annotated image; the format follows the suffix (.jpg, .png, ...)."""
        from PIL import Image

        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(self.plot()).save(target)
        return target
