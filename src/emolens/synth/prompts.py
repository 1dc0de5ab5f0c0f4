"""Prompt templates per emotion, with diversity drawn from a seed.

Each prompt combines what the face shows (the emotion's cues) with who and how (age, gender,
ethnicity, lighting, pose), drawn with a seeded generator so that a run is reproducible and its
faces are not all the same person in the same light.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from emolens.core.errors import BadLabelError

CUES = {
    "angry": "an angry face, furrowed brows pulled down, glaring eyes, lips pressed together",
    "disgust": "a disgusted face, wrinkled nose, raised upper lip, squinting eyes",
    "fear": "a frightened face, wide open eyes, raised eyebrows drawn together, mouth stretched open",
    "happy": "a happy face, genuine smile, raised cheeks, crinkled eyes",
    "neutral": "a neutral face, relaxed expression, closed mouth, calm eyes",
    "sad": "a sad face, inner eyebrows raised, drooping eyelids, corners of the mouth turned down",
    "surprise": "a surprised face, raised eyebrows, wide open eyes, dropped jaw",
    "contempt": "a contemptuous face, one corner of the mouth raised in a smirk, eyes half closed",
}
AGES = ("a child", "a teenager", "a young adult", "a middle-aged adult", "an elderly person")
GENDERS = ("woman", "man", "person")
ETHNICITIES = ("African", "East Asian", "South Asian", "Southeast Asian", "Middle Eastern", "Hispanic", "European")
LIGHTING = ("soft daylight", "studio lighting", "dim indoor light", "harsh side light", "overcast light")
POSES = ("facing the camera", "head slightly turned", "three-quarter view", "looking slightly down")
TEMPLATE = "close-up photo of {who}, {cue}, {pose}, {light}, realistic, detailed skin"
NEGATIVE = (
    "cartoon, drawing, painting, 3d render, deformed, disfigured, extra limbs, several people, "
    "text, watermark, blurry, out of frame, cropped face"
)


@dataclass(frozen=True)
class Prompt:
    label: str
    text: str
    negative: str
    seed: int  # the generator seed of this image


def prompts_for(label: str, n: int, seed: int = 0) -> list[Prompt]:
    """``n`` prompts for ``label``, each with its own image seed, drawn reproducibly from ``seed``."""
    if label not in CUES:
        raise BadLabelError(f"no prompt template for {label!r}; templates exist for: {', '.join(CUES)}")
    # One stream per label, so adding a class does not change another class's prompts.
    rng = np.random.default_rng([seed, int.from_bytes(label.encode(), "little") % 2**32])
    out = []
    for _ in range(n):
        who = f"{rng.choice(AGES)}, {rng.choice(ETHNICITIES)} {rng.choice(GENDERS)}"
        text = TEMPLATE.format(who=who, cue=CUES[label], pose=rng.choice(POSES), light=rng.choice(LIGHTING))
        out.append(Prompt(label, text, NEGATIVE, int(rng.integers(0, 2**31 - 1))))
    return out


def prompts_hash(prompts: list[Prompt]) -> str:
    """SHA-256 of the prompts and seeds of a run: two runs with the same hash asked for the same images."""
    blob = json.dumps([asdict(p) for p in prompts], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()
