"""The one crop policy of feedback: what a stored face crop is, whichever way it came in.

Fine-tuning reads every stored crop as a face already framed (``learn._crops``:
``to_crops(..., detect=False)``) and fits it to its model's square input with
``datasets.fit_crop`` (48 px for every shipped model). So a stored crop is that: a face framed
the way the models read it, at most ``CROP_SIZE`` (96) px a side, grey or RGB as given.

- A face of an analysis is aligned to the models' 5-point template at ``CROP_SIZE``, exactly as
  the analyzer aligns what it classifies (the analysis way in, unchanged).
- A crop given as it is (uploaded, or from Python) has no landmarks to align by: one larger than
  ``CROP_SIZE`` is fitted to ``CROP_SIZE`` x ``CROP_SIZE`` at store time with the same
  ``fit_crop`` fine-tuning applies anyway, so training sees the same face, and a 512 px upload
  no longer takes 28 times the disk of an aligned crop. Smaller crops are kept: enlarging adds
  nothing, and fine-tuning fits them all the same.
"""

from __future__ import annotations

import numpy as np

from emolens.core.errors import BadImageError
from emolens.store.feedback import CROP_SIZE

__all__ = ["CROP_SIZE", "analysis_crop", "crop_phash", "stored_crop"]


def stored_crop(crop: np.ndarray) -> np.ndarray:
    """``crop`` (uint8, grey or RGB, 8x8 px or more) as feedback stores it: see the module."""
    crop = np.asarray(crop)
    if crop.dtype != np.uint8 or crop.ndim not in (2, 3) or min(crop.shape[:2]) < 8:
        raise BadImageError(f"a face crop must be a uint8 image of 8x8 px or more, not {crop.dtype} {crop.shape}")
    if max(crop.shape[:2]) > CROP_SIZE:
        from emolens.data.datasets import fit_crop

        crop = fit_crop(crop, CROP_SIZE, 1 if crop.ndim == 2 else 3)
    return crop


def analysis_crop(image: np.ndarray, face) -> np.ndarray:
    """Face ``face`` (a ``FaceResult``) of an analysed RGB image, aligned as the models read it."""
    from emolens.image.align import align_face

    return align_face(image, face.box, face.landmarks, CROP_SIZE, channels=3)


def crop_phash(crop: np.ndarray) -> str:
    """The crop's 256-bit perceptual hash (``imagehash.phash``, 16 x 16 DCT coefficients) as 64
    hex digits; of the grey crop, so colour and grey copies match."""
    import cv2
    import imagehash
    from PIL import Image

    from emolens.feedback.split import HASH_SIZE

    grey = crop if crop.ndim == 2 else cv2.cvtColor(crop[..., :3], cv2.COLOR_RGB2GRAY)
    return str(imagehash.phash(Image.fromarray(np.ascontiguousarray(grey)), hash_size=HASH_SIZE))
